"""Per-method cost of one converted binary conv: LCE latency, flatbuffer size, ops, agreement.

For two layer shapes (16x16x64 -> 64 and 32x32x128 -> 128 channels, 3x3, stride 1, SAME), one
binary conv + BatchNormalization per method:

* plain binary: ste_sign input and kernel, pad_values=1 (the reference of the ratio column);
* ReActNet: rsign input (per-channel thresholds), scaled_sign kernel;
* XNOR: ste_sign input, xnor_weight kernel;
* IR-Net: ede_sign input, libra_weight kernel;
* AdaBin: adabin_activation input, adabin_weight kernel, with pad_values=1 and pad_values=0.

Thresholds, AdaBin's alpha/beta and the BN statistics get non-trivial random values before
`kbnn.converters.convert(strict=True)`; each flatbuffer is checked against Keras with
`kbnn.converters.verify` (max relative diff). Latency: LCE interpreter, 1 thread, batch 1, with
`kbnn_apps.bench.measure_latency` in interleaved rounds (min of the mins, median of the medians).
The ratio columns are this min (median) / the plain binary conv's (> 1: slower).

LCE ships optimised binary kernels only for aarch64/arm32; on x86 it runs portable C++ kernels,
so these x86 numbers do not show absolute ARM latency (see docs/lce.md, "Speed on x86").

    python benchmarks/bench_methods.py [--rounds N] [--runs R]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from _common import append_results

SHAPES = ((16, 64, 64), (32, 128, 128))  # (H = W, C_in, C_out)
# label -> (input quantizer, kernel quantizer, pad_values)
METHODS = {
    "plain binary (ste_sign / ste_sign)": ("ste_sign", "ste_sign", 1.0),
    "ReActNet (rsign / scaled_sign)": ("rsign", "scaled_sign", 1.0),
    "XNOR (ste_sign / xnor_weight)": ("ste_sign", "xnor_weight", 1.0),
    "IR-Net (ede_sign / libra_weight)": ("ede_sign", "libra_weight", 1.0),
    "AdaBin, pad_values=1": ("adabin_activation", "adabin_weight", 1.0),
    "AdaBin, pad_values=0": ("adabin_activation", "adabin_weight", 0.0),
}
REFERENCE = "plain binary (ste_sign / ste_sign)"


def build(size: int, cin: int, cout: int, input_q: str, kernel_q: str, pad: float, seed: int):
    """QuantConv2D(3x3, SAME) + BN with non-trivial thresholds, alpha/beta and BN statistics."""
    import keras

    from kbnn.layers import QuantConv2D
    from kbnn.quantizers import AdaBinActivation, RSign

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, cin), name="features")
    conv = QuantConv2D(cout, 3, padding="same", pad_values=pad, use_bias=False,
                       input_quantizer=input_q, kernel_quantizer=kernel_q, name="bconv")
    bn = keras.layers.BatchNormalization(name="bn")
    model = keras.Model(inputs, bn(conv(inputs)), name=f"{input_q}_{kernel_q}_{size}x{cin}")
    rng = np.random.default_rng(seed)
    q = conv.input_quantizer
    if isinstance(q, RSign):
        q.threshold.assign(rng.uniform(-0.3, 0.3, q.threshold.shape).astype(np.float32))
    if isinstance(q, AdaBinActivation):
        q.alpha.assign(1.7)
        q.beta.assign(0.2)
    # Latent kernel with a non-zero per-channel mean, so AdaBin's beta_w and Libra's mean matter.
    kernel = rng.normal(0.0, 0.1, conv.kernel.shape) + rng.normal(0.0, 0.05, (cout,))
    conv.kernel.assign(kernel.astype(np.float32))
    gamma, beta, mean, var = (rng.uniform(0.5, 1.5, cout), rng.normal(0.0, 0.5, cout),
                              rng.normal(0.0, 2.0, cout), rng.uniform(0.5, 3.0, cout))
    bn.set_weights([w.astype(np.float32) for w in (gamma, beta, mean, var)])
    return model


def op_summary(report) -> str:
    """'1 LceBconv2d + ADD, 2 MUL, ...': the bconv count, then every other op (with its count
    when above 1), in alphabetical order."""
    others = sorted((op, n) for op, n in report.op_counts.items() if op != "LceBconv2d")
    rest = ", ".join(op if n == 1 else f"{n} {op}" for op, n in others) or "nothing else"
    return f"{report.n_binary_convs} LceBconv2d + {rest}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7,
                        help="interleaved timing rounds over all methods (default 7)")
    parser.add_argument("--runs", type=int, nargs=2, default=[300, 60], metavar=("SMALL", "LARGE"),
                        help="timed runs per round for each shape (default 300 60)")
    args = parser.parse_args()

    from kbnn.converters import convert, verify
    from kbnn_apps.bench import X86_NOTE, measure_latency

    header = ["layer", "method", "ops", "size (B)", "min ms", "median ms", "min vs plain",
              "median vs plain", "max rel diff"]
    rows = []
    for (size, cin, cout), runs in zip(SHAPES, args.runs):
        layer = f"{size}x{size}x{cin} -> {cout}"
        built = {}
        for i, (label, (input_q, kernel_q, pad)) in enumerate(METHODS.items()):
            model = build(size, cin, cout, input_q, kernel_q, pad, seed=i)
            result = convert(model, strict=True, return_report=True)
            x = np.random.default_rng(100 + i).normal(0.0, 1.0, (4, size, size, cin))
            check = verify(model, result.flatbuffer, x.astype(np.float32))
            built[label] = (result, check, [])
            print(f"{layer} {label}: {op_summary(result.report)}, max rel diff "
                  f"{check.max_rel_diff:.2e}", flush=True)
        for _ in range(args.rounds):  # interleave so that load changes hit every method alike
            for label, (result, _, timings) in built.items():
                timings.append(measure_latency(result.flatbuffer, engine="lce", threads=1,
                                               runs=runs, warmup=max(2, runs // 10)))
        mins = {label: min(t.min_ms for t in timings) for label, (_, _, timings) in built.items()}
        medians = {label: statistics.median(t.median_ms for t in timings)
                   for label, (_, _, timings) in built.items()}
        for label, (result, check, _) in built.items():
            rows.append([layer, label, op_summary(result.report), f"{len(result.flatbuffer):,}",
                         f"{mins[label]:.3f}", f"{medians[label]:.3f}",
                         f"{mins[label] / mins[REFERENCE]:.2f}x",
                         f"{medians[label] / medians[REFERENCE]:.2f}x",
                         f"{check.max_rel_diff:.1e}"])
    table = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                      + ["| " + " | ".join(r) + " |" for r in rows])
    print(table)
    print(X86_NOTE)
    timing = (f"LCE interpreter, 1 thread, batch 1; {args.rounds} interleaved rounds of "
              f"{args.runs[0]} (small layer) / {args.runs[1]} (large layer) timed runs after "
              "warm-up: min of the mins, median of the medians")
    body = (f"{timing}. Each layer is QuantConv2D 3x3 stride 1 SAME (no bias) + BN, converted with "
            "`convert(strict=True)` after random non-trivial thresholds, AdaBin alpha/beta and BN "
            "statistics. Ops: all ops of the flatbuffer (LceQuantize bitpacks the conv input; SUB is a "
            "non-zero input threshold; LceDequantize feeds the bitpacked signs to AdaBin's "
            "one-channel window-sum correction SUM -> PADV2 -> AVERAGE_POOL_2D -> MUL, joined by "
            "ADD, or by ADD_N with the pad_values=0 border map, a float constant of the output's "
            "size, hence the larger file; the BatchNormalization folds into the bconv and the "
            "correction coefficients for every method, so it adds no op). "
            "\"vs plain\": this layer's min (median) over the plain binary conv's min (median) "
            "for the same shape (> 1: slower); the min is the steadier figure on this shared "
            "machine. "
            "\"max rel diff\" is `verify` (4 random inputs) max |tflite - keras| / max |keras|.\n\n"
            + table + "\n\n" + X86_NOTE)
    append_results("Binary conv per method: LCE latency, size, ops (bench_methods.py)", body)


if __name__ == "__main__":
    main()
