"""Latency: LCE interpreter on the binary flatbuffer vs stock TFLite on its float twin.

Batch 1, min and median wall time of set-input/invoke/read-output over R runs after warm-up,
with 1 and 2 interpreter threads, for the digits demo network and a stack of 4 binary 3x3 convs
with 256 channels on 32x32x256. The float twin is the same architecture with every quantizer
removed (`kbnn_apps.bench.float_twin`), converted with `tf.lite.TFLiteConverter` and run with the
stock interpreter (XNNPACK float kernels).

LCE ships optimised binary kernels only for aarch64/arm32; on x86 it runs portable C++ kernels,
so these x86 numbers do not show what a binary model gains on an ARM device (see docs/lce.md, "Speed on x86").

    python benchmarks/bench_latency.py [--runs R]
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import append_results, benchmark_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=None,
                        help="timed runs per engine (default: 200 demo, 20 conv stack)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    from kbnn.converters import convert
    from kbnn_apps.bench import X86_NOTE, bench, bench_table

    sections = []
    for (label, model), default_runs in zip(benchmark_models(), (200, 20)):
        runs = args.runs or default_runs
        rows = bench(convert(model), model, threads=tuple(args.threads), runs=runs,
                     warmup=max(2, runs // 10), name="binary (LCE)")
        print(f"{label} ({runs} runs)")
        print(bench_table(rows))
        sections.append(f"**{label}** ({runs} runs after warm-up)\n\n"
                        + bench_table(rows, markdown=True))
    print(X86_NOTE)
    body = "\n\n".join(sections) + (
        "\n\nThe last column is float median / LCE median (> 1: LCE is faster). " + X86_NOTE
        + " With 2 threads both engines share the 2 cores with everything else running (see the"
        " load average), so the 2-thread rows measure contention more than scaling.")
    append_results("Latency: LCE interpreter vs float TFLite (bench_latency.py)", body)


if __name__ == "__main__":
    main()
