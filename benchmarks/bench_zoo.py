"""The kbnn.zoo table: parameters, BOPs, FLOPs, OPs, flatbuffer size and LCE latency on x86.

For every zoo model at 224x224x3 with 1000 classes (random weights): `kbnn.profile` counts the
parameters, BOPs, FLOPs and OPs (Bi-Real Net convention, docs/methods.md "Counting costs");
`kbnn.converters.convert(model, strict=True)` gives the flatbuffer (its size and its LceBconv2d
count); LCE's Python interpreter times single-image inferences on this machine (batch 1, one
thread, median and min of R runs after warm-up). The top-1 accuracies are the published ones
(typed below with their sources), not measured here.

The table replaces the generated section of docs/zoo.md; rows of models not measured in this run
are kept from benchmarks/zoo_figures.json (one entry per model, with the date and machine of its
measurement), so a partial run updates only its own rows. The run is also appended to
benchmarks/RESULTS.md.

LCE ships optimised binary kernels only for aarch64/arm32; on x86 it runs portable C++ kernels,
so these latencies do not show what the models run at on an ARM device (docs/lce.md, "Speed on
x86").

    python benchmarks/bench_zoo.py [--models QuickNet BiRealNet18 ...] [--runs R]
    python benchmarks/bench_zoo.py --docs-only   # rewrite the docs table from the JSON
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import append_results

FIGURES_JSON = os.path.join(HERE, "zoo_figures.json")
DOCS = os.path.join(os.path.dirname(HERE), "docs", "zoo.md")
BEGIN = "<!-- bench_zoo.py: begin generated table -->"
END = "<!-- bench_zoo.py: end generated table -->"

# Published ImageNet top-1 (%) and where it is published.
TOP1 = {
    "QuickNetSmall": ("59.4", "larq-zoo v1.0 weights (docs.larq.dev/zoo)"),
    "QuickNet": ("63.3", "larq-zoo v1.0 weights (docs.larq.dev/zoo)"),
    "QuickNetLarge": ("66.9", "larq-zoo v1.0 weights (docs.larq.dev/zoo)"),
    "ReActNetA": ("69.4", "arXiv 2003.03488; 69.5 released model (liuzechun/ReActNet)"),
    "RepReActNetA": ("71.34", ("Rep_AdamBNN README (imfinethanks/Rep_AdamBNN), RepBNN "
                               "arXiv 2207.09049; AdamBNN training")),
    "ReActNetResNet18": ("65.9", "liuzechun/ReActNet README"),
    "BiRealNet18": ("56.4", "arXiv 1808.00278"),
    "BiRealNet34": ("62.2", "arXiv 1808.00278"),
    "XnorResNet18": ("51.2", "arXiv 1603.05279"),
    "AdaBinResNet18": ("63.1", ("AdaBin README (huawei-noah/Efficient-Computing); 66.4 with "
                               "ReActNet's two-step recipe")),
    "BNextTiny": ("72.4", "BNext README (hpi-xnor/BNext), arXiv 2211.12933"),
    "BNextSmall": ("76.1", "BNext README (hpi-xnor/BNext), arXiv 2211.12933"),
    "BNextMiddle": ("78.3", "BNext README (hpi-xnor/BNext), arXiv 2211.12933"),
    "BNextLarge": ("80.6", "BNext README (hpi-xnor/BNext); 80.57 in arXiv 2211.12933"),
}


def _anneal(model) -> None:
    """BNext's weights are binary only once their temperature tau is below 1e-7 (after about
    153 epochs of its schedule): set every BNextWeight's tau there, as a trained model has it."""
    from kbnn.quantizers import BNextWeight

    for layer in model._flatten_layers(include_self=False, recursive=True):
        quantizer = getattr(layer, "kernel_quantizer", None)
        if isinstance(quantizer, BNextWeight):
            quantizer.tau.assign(0.9 ** 200)


def measure(name: str, runs: int, warmup: int, threads: int) -> dict:
    import keras

    import kbnn
    from kbnn import zoo
    from kbnn.converters import convert
    from kbnn_apps.bench import measure_latency

    model = zoo.get(name)
    _anneal(model)
    profile = kbnn.profile(model)
    start = time.perf_counter()
    result = convert(model, strict=True, return_report=True)
    convert_s = time.perf_counter() - start
    flatbuffer = result.flatbuffer
    latency = measure_latency(flatbuffer, engine="lce", threads=threads, runs=runs,
                              warmup=warmup)
    row = {
        "params": profile.total_params,
        "binary_params": profile.binary_params,
        "bops": profile.bops,
        "flops": profile.flops,
        "ops": profile.ops,
        "flatbuffer_bytes": len(flatbuffer),
        "lce_bconv2d": result.report.n_binary_convs,
        "latency_median_ms": latency.median_ms,
        "latency_min_ms": latency.min_ms,
        "runs": runs,
        "threads": threads,
        "convert_s": convert_s,
    }
    del model, result, flatbuffer
    keras.backend.clear_session()
    gc.collect()
    return row


def _load() -> dict:
    if os.path.exists(FIGURES_JSON):
        with open(FIGURES_JSON) as f:
            return json.load(f)
    return {}


def table(figures: dict, order: list[str]) -> str:
    from kbnn_apps.zoo_cli import human

    header = ["Model", "Params", "Binary params", "BOPs", "FLOPs", "OPs", "Flatbuffer (MiB)",
              "LceBconv2d", "LCE x86 latency, median / min (ms)", "Top-1 (%)", "Source"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in order:
        top1, source = TOP1[name]
        row = figures.get(name)
        if row is None:
            cells = [f"`{name}`"] + ["not measured"] + [""] * 7 + [top1, source]
        else:
            cells = [f"`{name}`", f"{row['params']:,}", f"{row['binary_params']:,}",
                     human(row["bops"], 3), human(row["flops"], 3), human(row["ops"], 3),
                     f"{row['flatbuffer_bytes'] / 2 ** 20:.2f}", str(row["lce_bconv2d"]),
                     f"{row['latency_median_ms']:.0f} / {row['latency_min_ms']:.0f}", top1,
                     source]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def footnote(figures: dict, order: list[str]) -> str:
    measured = {(row["date"], row["machine"], row["runs"], row["threads"])
                for name, row in figures.items() if name in order}
    parts = [f"{date} on {machine} ({runs} runs, {threads} thread(s))"
             for date, machine, runs, threads in sorted(measured)]
    missing = [name for name in order if name not in figures]
    text = "Measured " + "; ".join(parts) + "." if parts else "Not measured yet."
    loads = [figures[name]["load_average"] for name in order if name in figures]
    if loads:
        text += (f" 1-minute load average {min(loads):g}-{max(loads):g} during the runs "
                 "(a shared machine: compare rows of one run, not absolute times).")
    if missing:
        text += " Not measured yet: " + ", ".join(missing) + "."
    return text


def write_docs(body: str) -> None:
    with open(DOCS) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOCS} lacks the markers {BEGIN!r} / {END!r}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(DOCS, "w") as f:
        f.write(f"{head}{BEGIN}\n{body}\n{END}{tail}")
    print(f"Updated {DOCS}")


def main() -> None:
    from kbnn import zoo
    from kbnn_apps.bench import X86_NOTE, machine_info

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=zoo.list_models(),
                        choices=zoo.list_models())
    parser.add_argument("--runs", type=int, default=20, help="timed inferences per model")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-docs", action="store_true",
                        help="print only; leave docs/zoo.md and zoo_figures.json alone")
    parser.add_argument("--docs-only", action="store_true",
                        help="measure nothing: rewrite docs/zoo.md from zoo_figures.json")
    args = parser.parse_args()

    figures = _load()
    order = zoo.list_models()
    if args.docs_only:
        write_docs(f"{table(figures, order)}\n\n{footnote(figures, order)} {X86_NOTE}")
        return
    machine = machine_info()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    measured = {}
    for name in args.models:
        load = os.getloadavg()[0]
        print(f"{name}: measuring (load average {load:.1f})", flush=True)
        row = measure(name, args.runs, args.warmup, args.threads)
        row.update(date=stamp, machine=machine, load_average=round(load, 1))
        measured[name] = row
        print(f"  {json.dumps(row)}", flush=True)
        if not args.no_docs:  # save as we go: a long run that stops keeps its rows
            figures[name] = row
            with open(FIGURES_JSON, "w") as f:
                json.dump(figures, f, indent=1, sort_keys=True)
                f.write("\n")

    body = table(figures if not args.no_docs else measured, order)
    note = footnote(figures if not args.no_docs else measured, order)
    print(body)
    print(note)
    if not args.no_docs:
        write_docs(f"{body}\n\n{note} {X86_NOTE}")
        append_results("Model zoo at 224x224 (bench_zoo.py)",
                       table(measured, [n for n in order if n in measured])
                       + f"\n\n{args.runs} runs after {args.warmup} warm-up, "
                         f"{args.threads} thread(s). " + X86_NOTE)


if __name__ == "__main__":
    main()
