"""Flatbuffer sizes: LCE binary models vs their float TFLite conversions.

Models: the digits demo network and a stack of 4 binary 3x3 convs with 256 channels on a
32x32x256 input. Each is converted with `kbnn.converters.convert` (LCE) and, with every
quantizer removed (`kbnn_apps.bench.float_twin`), with the stock TFLite converter. Binary weights
are 1 bit instead of 32, so the weight ratio is at most 32x; the whole-file ratio is lower
because of float layers, per-channel multiplier/bias vectors and flatbuffer overhead.

    python benchmarks/bench_sizes.py
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import append_results, benchmark_models


def measure(label: str, model) -> list[str]:
    from kbnn.converters import convert, inspect
    from kbnn.summary import profile
    from kbnn_apps.bench import float_tflite, float_twin

    binary = convert(model, strict=True, return_report=True)
    float_fb = float_tflite(float_twin(model))
    binary_params = profile(model).binary_params
    float_weight_bytes = 4 * binary_params  # the same kernels stored as float32
    packed = binary.report.bitpacked_weight_bytes
    assert inspect(float_fb).n_binary_convs == 0
    return [label, f"{binary_params:,}", f"{len(float_fb):,}", f"{len(binary.flatbuffer):,}",
            f"{len(float_fb) / len(binary.flatbuffer):.2f}x", f"{float_weight_bytes:,}",
            f"{packed:,}", f"{float_weight_bytes / packed:.2f}x"]


def main() -> None:
    header = ["model", "binary weights", "float TFLite (B)", "LCE (B)", "file ratio",
              "binary weights as f32 (B)", "bitpacked (B)", "weight ratio (limit 32x)"]
    rows = [measure(label, model) for label, model in benchmark_models()]
    table = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                      + ["| " + " | ".join(r) + " |" for r in rows])
    print(table)
    append_results("Flatbuffer sizes: LCE binary vs float TFLite (bench_sizes.py)", table)


if __name__ == "__main__":
    main()
