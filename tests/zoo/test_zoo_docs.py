"""docs/zoo.md stays in step with kbnn.zoo: every builder has a row in the generated table
(benchmarks/bench_zoo.py) and in the figures table, and the benchmark knows its top-1 source."""

from __future__ import annotations

import importlib.util
import json
import pathlib

from kbnn import zoo

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = (ROOT / "docs" / "zoo.md").read_text()


def bench_zoo():
    spec = importlib.util.spec_from_file_location("bench_zoo", ROOT / "benchmarks" / "bench_zoo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_table_lists_every_model_measured():
    bench = bench_zoo()
    assert list(bench.TOP1) == zoo.list_models()
    _, rest = DOCS.split(bench.BEGIN)
    generated, _ = rest.split(bench.END)
    rows = [line for line in generated.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == zoo.list_models()
    assert not any("not measured" in row for row in rows)
    figures = json.loads((ROOT / "benchmarks" / "zoo_figures.json").read_text())
    assert sorted(figures) == sorted(zoo.list_models())
    assert generated.strip().startswith(bench.table(figures, zoo.list_models()))


def test_docs_name_every_builder_and_its_paper():
    for name in zoo.list_models():
        assert f"| {name} |" in DOCS, name  # the figures table
    for arxiv in ("2011.09398", "2003.03488", "1808.00278", "1603.05279", "2208.08084"):
        assert arxiv in DOCS


def test_table_formats_missing_rows():
    bench = bench_zoo()
    text = bench.table({}, ["QuickNet"])
    assert "not measured" in text and "63.3" in text
    assert "Not measured yet: QuickNet" in bench.footnote({}, ["QuickNet"])
