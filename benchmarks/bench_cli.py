"""Start-up time of the `kbnn` command: help, version and usage errors, which must not load
TensorFlow.

Wall time of whole processes (start, run, exit), each command run `--runs` times in interleaved
rounds after one untimed warm-up round; median and min over the rounds. Peers measured in the
same rounds, since the machine is shared and noisy:

* ``python -c pass``: the interpreter's own start-up, the floor for any Python command;
* ``python -c "import kbnn"``: what every `kbnn` command cost while the command line lived in
  the library package (importing it imported kbnn, and with it TensorFlow, before parsing);
* ``python -c "import tensorflow"``: TensorFlow's import alone.

    python benchmarks/bench_cli.py [--runs 7] [--append]

``--append`` adds the table, with date and machine, to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _kbnn_script() -> str:
    """The `kbnn` console script of this interpreter's environment (else the one on PATH)."""
    beside = os.path.join(os.path.dirname(sys.executable), "kbnn")
    script = beside if os.path.exists(beside) else shutil.which("kbnn")
    if script is None:
        raise SystemExit("bench_cli: no `kbnn` command found; pip install -e . first")
    return script


def commands() -> list[tuple[str, list[str], int]]:
    """(label, argv, expected exit status) of every measured process."""
    kbnn, python = _kbnn_script(), sys.executable
    return [
        ("kbnn --help", [kbnn, "--help"], 0),
        ("kbnn --version", [kbnn, "--version"], 0),
        ("kbnn convert --help", [kbnn, "convert", "--help"], 0),
        ("kbnn convert (usage error)", [kbnn, "convert"], 2),
        ("python -c pass", [python, "-c", "pass"], 0),
        ('python -c "import kbnn"', [python, "-c", "import kbnn"], 0),
        ('python -c "import tensorflow"', [python, "-c", "import tensorflow"], 0),
    ]


def _time_once(argv: list[str], expected: int, env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                          check=False)
    elapsed = (time.perf_counter() - start) * 1e3
    if done.returncode != expected:
        raise SystemExit(f"bench_cli: {' '.join(argv)} exited with {done.returncode}, expected "
                         f"{expected}:\n{done.stderr.decode(errors='replace')}")
    return elapsed


def measure(runs: int) -> dict[str, list[float]]:
    """Wall times in ms of every command, `runs` interleaved rounds after a warm-up round."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # same log level for every process
    cmds = commands()
    for _, argv, expected in cmds:  # warm-up: file caches, .pyc files
        _time_once(argv, expected, env)
    times: dict[str, list[float]] = {label: [] for label, _, _ in cmds}
    for _ in range(runs):
        for label, argv, expected in cmds:
            times[label].append(_time_once(argv, expected, env))
    return times


def table(times: dict[str, list[float]], markdown: bool = False) -> str:
    """Median and min ms per command, and the median as a multiple of ``python -c pass`` and as
    a fraction of ``import tensorflow``."""
    floor = statistics.median(times["python -c pass"])
    tf = statistics.median(times['python -c "import tensorflow"'])
    header = ["command", "median ms", "min ms", "x python -c pass", "/ import tensorflow"]
    body = []
    for label, values in times.items():
        median = statistics.median(values)
        body.append([f"`{label}`" if markdown else label, f"{median:.0f}", f"{min(values):.0f}",
                     f"{median / floor:.2f}x", f"{median / tf:.3f}"])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])
    widths = [max(len(x) for x in col) for col in zip(header, *body)]

    def fmt(row):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in body])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--append", action="store_true",
                        help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    times = measure(args.runs)
    print(table(times))
    if args.append:
        from _common import append_results

        note = (f"Wall time of whole processes (start, run, exit), {args.runs} interleaved rounds "
                "after one warm-up round: median and min per command. `kbnn` is the installed "
                "console script (`kbnn_apps.cli:main`), which parses its arguments before it "
                "imports kbnn or TensorFlow, so help, version and usage errors never load them. "
                "Peers in the same rounds: `python -c pass` (interpreter start-up), "
                '`python -c "import kbnn"` (what every command cost when the command line '
                'lived in the library) and `python -c "import tensorflow"`.')
        append_results("Start-up of the `kbnn` command (bench_cli.py)",
                       f"{note}\n\n{table(times, markdown=True)}")


if __name__ == "__main__":
    main()
