"""Shared pieces of the benchmarks: the models they measure and the RESULTS.md log."""

from __future__ import annotations

import datetime
import os

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
_HEADER = """# kbnn benchmark results

Each section is appended by a script in `benchmarks/` (date, machine, table). Ratios compare with
a peer measured in the same run (float TFLite conversion of the same architecture), since these
machines are shared and noisy.
"""


def binary_conv_stack(layers: int = 4, channels: int = 256, size: int = 32):
    """`layers` binary 3x3 convs (`channels` in and out, SAME with +1 padding), each followed by
    BN, on a size x size x channels input: the reference stack for size and latency."""
    import keras

    from kbnn.layers import QuantConv2D

    inputs = keras.Input((size, size, channels), name="features")
    x = inputs
    for i in range(layers):
        x = QuantConv2D(channels, 3, padding="same", pad_values=1.0, use_bias=False,
                        input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                        name=f"bconv{i + 1}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i + 1}")(x)
    return keras.Model(inputs, x, name=f"binary_stack_{layers}x{channels}")


def benchmark_models():
    """(label, model) pairs measured by both benchmarks."""
    from kbnn_apps.demo import build_demo_model

    return [
        ("digits demo (8x8x1)", build_demo_model()),
        ("4 x binary conv 3x3, 256 ch, 32x32x256 input", binary_conv_stack()),
    ]


def append_results(title: str, body: str) -> None:
    """Append a dated section with machine info to benchmarks/RESULTS.md (created if missing)."""
    from kbnn_apps.bench import machine_info

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    new = not os.path.exists(RESULTS)
    with open(RESULTS, "a") as f:
        if new:
            f.write(_HEADER)
        f.write(f"\n## {title}\n\n{stamp}; {machine_info()}; load average {load} (1/5/15 min)"
                f"\n\n{body.rstrip()}\n")
    print(f"Appended to {RESULTS}")
