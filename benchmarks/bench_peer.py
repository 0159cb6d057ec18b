"""kbnn next to its peers, measured side by side: larq 0.14 (Keras 2, tf_keras) and float Keras 3.

The same networks are built in kbnn, in larq (in a subprocess with ``TF_USE_LEGACY_KERAS=1``;
QuickNet from larq-zoo when it imports, otherwise larq-zoo's architecture is skipped) and, for
training, as the same architecture in float Keras 3. Every measurement runs in a fresh worker
process (``--worker``), and the frameworks alternate run by run (interleaved), since this machine
is shared and noisy: the table reports medians and the ratios kbnn / peer.

Measured:
* training step of a small CIFAR-size net (batch 64): CPU time per step and wall median over
  steps 3..N, the first step (tracing), with and without ``jit_compile=True``; next to kbnn,
  two kbnn variants that locate its cost (Keras' own BatchNormalization instead of kbnn's
  fused one; kbnn's layers without binarization, i.e. what the binarization ops cost); and the
  first step of every framework with the optimizer built before it (one trace in Keras 3);
* conversion of the small net and of QuickNet (224x224): flatbuffer bytes, operator histogram,
  float ops, LCE latency (x86, 1 thread), conversion time, extra peak RSS while converting (the
  peak is reset just before the conversion through /proc/self/clear_refs);
* digits test accuracy of a digits-size net over several seeds, same recipe for both.

    python benchmarks/bench_peer.py                # full run (~30 min on 2 cores)
    python benchmarks/bench_peer.py --quick        # CI-sized: tiny sizes, kbnn and float only
    python benchmarks/bench_peer.py --append       # also append the table to RESULTS.md

larq is optional (`pip install -e .[bench]`); without it only kbnn and float Keras 3 run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FRAMEWORKS = ("kbnn", "larq", "float", "kbnn-keras-bn", "kbnn-no-binarization")
#: kbnn variants measured next to kbnn (training only), with the label of their table rows.
VARIANTS = (("kbnn-keras-bn", "kbnn with Keras' BN"),
            ("kbnn-no-binarization",
             "kbnn without binarization ops"))


# ------------------------------------------------------------------------------ the networks


def _api(framework: str):
    """(keras module, quantized conv class, quantized dense class, quantizer kwargs)."""
    if framework == "larq":
        import larq as lq
        import tensorflow as tf

        return tf.keras, lq.layers.QuantConv2D, lq.layers.QuantDense, {
            "input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign",
            "kernel_constraint": "weight_clip"}
    import keras

    if framework == "float":
        return keras, keras.layers.Conv2D, keras.layers.Dense, {}
    # "kbnn", "kbnn-keras-bn" and "kbnn-no-binarization"
    import kbnn

    if framework == "kbnn-no-binarization":
        return keras, kbnn.layers.QuantConv2D, kbnn.layers.QuantDense, {}
    return keras, kbnn.layers.QuantConv2D, kbnn.layers.QuantDense, {
        "input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign",
        "kernel_constraint": "weight_clip"}


def _batch_norm(framework: str, keras):
    """kbnn models use kbnn's fused-kernel BatchNormalization (as the kbnn blocks and zoo do);
    "kbnn-keras-bn" is the same kbnn model with Keras 3's own BatchNormalization."""
    if framework in ("kbnn", "kbnn-no-binarization"):
        import kbnn

        return kbnn.layers.FusedBatchNormalization
    return keras.layers.BatchNormalization


def small_net(framework: str, size: int = 32, channels: int = 3, width: int = 64,
              classes: int = 10):
    """A CIFAR-size BNN with a binary Dense head (the larq user guide's layout):
    float conv -> BN, 3 binary convs (max-pools, BNs), flatten, binary Dense -> BN,
    binary Dense -> BN -> softmax."""
    keras, conv, dense, q = _api(framework)
    pad = {} if framework in ("float", "kbnn-no-binarization") else {"pad_values": 1.0}
    layers = keras.layers
    bn = _batch_norm(framework, keras)
    inputs = keras.Input((size, size, channels))
    x = layers.Conv2D(width // 2, 3, padding="same", use_bias=False)(inputs)
    x = bn(momentum=0.9, scale=False)(x)
    x = conv(width // 2, 3, padding="same", use_bias=False, **pad, **q)(x)
    x = layers.MaxPooling2D(2)(x)
    x = bn(momentum=0.9, scale=False)(x)
    x = conv(width, 3, padding="same", use_bias=False, **pad, **q)(x)
    x = bn(momentum=0.9, scale=False)(x)
    x = conv(width, 3, padding="same", use_bias=False, **pad, **q)(x)
    x = layers.MaxPooling2D(2)(x)
    x = bn(momentum=0.9, scale=False)(x)
    x = layers.Flatten()(x)
    x = dense(2 * width, use_bias=False, **q)(x)
    x = bn(momentum=0.9, scale=False)(x)
    x = dense(classes, use_bias=False, **q)(x)
    x = bn(momentum=0.9, scale=False)(x)
    return keras.Model(inputs, layers.Activation("softmax")(x))


def quicknet(framework: str, size: int = 224):
    if framework == "larq":
        import larq_zoo

        return larq_zoo.sota.QuickNet(input_shape=(size, size, 3), weights=None)
    import kbnn

    return kbnn.zoo.QuickNet(input_shape=(size, size, 3), weights=None)


# --------------------------------------------------------------------------------- workers


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker_train(framework: str, steps: int, jit: bool, size: int, width: int,
                 prebuild: bool = False) -> dict:
    """Training-step times; with `prebuild`, the optimizer is built before the first step
    (`optimizer.build(model.trainable_variables)`, what kbnn.training.build_optimizer does),
    timed as part of the first step."""
    import numpy as np

    keras = _api(framework)[0]
    keras.utils.set_random_seed(0)
    model = small_net(framework, size=size, width=width)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  jit_compile=jit)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, size, size, 3)).astype("float32")
    y = rng.integers(0, 10, size=(64,))
    start = time.perf_counter()
    if prebuild:
        model.optimizer.build(model.trainable_variables)
    model.train_on_batch(x, y)
    first = time.perf_counter() - start
    walls, cpus = [], []
    for _ in range(steps):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        model.train_on_batch(x, y)
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.process_time() - cpu0)
    keep = slice(2, None) if steps > 4 else slice(None)
    return {"first_s": first, "wall_ms": 1e3 * statistics.median(walls[keep]),
            "cpu_ms": 1e3 * statistics.mean(cpus[keep])}


def _convert(framework: str, model) -> bytes:
    if framework == "larq":
        import larq_compute_engine as lce

        return lce.convert_keras_model(model)
    import kbnn

    return kbnn.converters.convert(model)


def worker_convert(framework: str, model_name: str, size: int, out: str) -> dict:
    import warnings

    keras = _api(framework)[0]
    keras.utils.set_random_seed(0)
    model = quicknet(framework, size) if model_name == "quicknet" else small_net(framework,
                                                                                 size=size)
    params = int(model.count_params())
    before = _rss_mib()
    resettable = _reset_peak()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flatbuffer = _convert(framework, model)
    seconds = time.perf_counter() - start
    peak = _peak_mib()
    with open(out, "wb") as f:
        f.write(flatbuffer)
    return {"params": params, "convert_s": seconds, "rss_before_mib": before,
            "extra_peak_mib": (peak - before) if resettable else float("nan"),
            "peak_mib": peak, "bytes": len(flatbuffer)}


def worker_accuracy(framework: str, seed: int, epochs: int) -> dict:
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    keras = _api(framework)[0]
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None].repeat(3, axis=-1)
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.25,
                                                        random_state=0, stratify=digits.target)
    keras.utils.set_random_seed(seed)
    model = small_net(framework, size=8, width=64)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0)
    predictions = np.argmax(model.predict(x_test, verbose=0), axis=-1)
    return {"accuracy": float(np.mean(predictions == y_test))}


def _worker(args) -> None:
    import warnings

    warnings.simplefilter("ignore")
    if args.worker == "train":
        result = worker_train(args.framework, args.steps, args.jit, args.size, args.width,
                              args.prebuild)
    elif args.worker == "convert":
        result = worker_convert(args.framework, args.model, args.size, args.out)
    else:
        result = worker_accuracy(args.framework, args.seed, args.epochs)
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------- driver


def _run(framework: str, *argv: str, timeout: int = 3600) -> dict | None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
    if framework == "larq":
        env["TF_USE_LEGACY_KERAS"] = "1"
    else:
        env.pop("TF_USE_LEGACY_KERAS", None)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", *argv,
           "--framework", framework]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    sys.stderr.write(f"[{framework} {' '.join(argv)}] failed:\n{proc.stderr[-2000:]}\n")
    return None


def larq_available() -> bool:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    probe = subprocess.run([sys.executable, "-c", "import larq, tf_keras"], env=env,
                           capture_output=True, check=False)
    return probe.returncode == 0


def larq_zoo_available() -> bool:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    probe = subprocess.run([sys.executable, "-c", "import larq_zoo"], env=env,
                           capture_output=True, check=False)
    return probe.returncode == 0


def _op_histogram(flatbuffer: bytes) -> dict[str, int]:
    from kbnn.converters import inspect

    return dict(inspect(flatbuffer).op_counts)


def _latency_ms(flatbuffer: bytes, runs: int) -> float:
    from kbnn_apps.bench import measure_latency

    return measure_latency(flatbuffer, engine="lce", threads=1, runs=runs).median_ms


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def _ratio(a, b) -> str:
    return "-" if not b or b != b or a != a else f"{a / b:.2f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="CI-sized run: small sizes, few steps, one seed, no QuickNet")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds per training measurement")
    parser.add_argument("--seeds", type=int, default=None, help="digits seeds per framework")
    parser.add_argument("--append", action="store_true", help="append the table to RESULTS.md")
    parser.add_argument("--no-larq", action="store_true", help="skip larq even if installed")
    parser.add_argument("--only", choices=("train", "convert", "accuracy"), action="append",
                        help="run only these parts (repeatable); default: all")
    parser.add_argument("--worker", choices=("train", "convert", "accuracy"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--framework", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--jit", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prebuild", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--model", default="small", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args)
        return 0

    quick = args.quick
    rounds = args.rounds or (1 if quick else 5)
    seeds = args.seeds or (1 if quick else 10)
    steps = "5" if quick else "25"
    size = "16" if quick else "32"
    width = "16" if quick else "64"
    peers = ["kbnn", "float", *(name for name, _ in VARIANTS)]
    has_larq = not args.no_larq and not quick and larq_available()
    if has_larq:
        peers.insert(1, "larq")
    rows: list[tuple[str, ...]] = []

    parts = set(args.only or ("train", "convert", "accuracy"))
    # Training steps, interleaved.
    for jit in (False, True) if "train" in parts else ():
        results: dict[str, list] = {f: [] for f in peers}
        for _ in range(rounds):
            for framework in peers:
                extra = ["--jit"] if jit else []
                results[framework].append(_run(framework, "train", "--steps", steps, "--size",
                                               size, "--width", width, *extra))
        label = "XLA" if jit else "no XLA"
        for key, name in (("cpu_ms", "CPU ms/step"), ("wall_ms", "wall ms/step (median)"),
                          ("first_s", "first step s (tracing)")):
            values = {f: _median([r[key] for r in results[f] if r]) for f in peers}
            row = [f"training, small net, batch 64, {label}: {name}"]
            row += [f"{values[f]:.3f}" if key == "first_s" else f"{values[f]:.1f}"
                    for f in ("kbnn", "larq", "float") if f in peers]
            row += [_ratio(values["kbnn"], values.get("larq")) if has_larq else "-",
                    _ratio(values["kbnn"], values["float"])]
            rows.append(tuple(row))
            for variant, variant_label in VARIANTS:
                value = values[variant]
                row = [f"training, small net, batch 64, {label}: {name}, {variant_label}",
                       f"{value:.3f}" if key == "first_s" else f"{value:.1f}"]
                row += ["-"] * (1 if has_larq else 0) + ["-"]
                row += [_ratio(value, values.get("larq")) if has_larq else "-",
                        _ratio(value, values["float"])]
                rows.append(tuple(row))

    # First step with the optimizer built before it (one trace of the train step in Keras 3),
    # every framework the same way.
    if "train" in parts:
        firsts: dict[str, list] = {f: [] for f in ("kbnn", "larq", "float") if f in peers}
        for _ in range(rounds):
            for framework in firsts:
                result = _run(framework, "train", "--steps", "1", "--size", size, "--width",
                              width, "--prebuild")
                firsts[framework].append(result["first_s"] if result else None)
        values = {f: _median([v for v in firsts[f] if v is not None]) for f in firsts}
        row = ["training, small net, batch 64, no XLA: first step s, optimizer built first"]
        row += [f"{values[f]:.3f}" for f in ("kbnn", "larq", "float") if f in values]
        row += [_ratio(values["kbnn"], values.get("larq")) if has_larq else "-",
                _ratio(values["kbnn"], values["float"])]
        rows.append(tuple(row))

    # Conversion.
    converters = ["kbnn"] + (["larq"] if has_larq else [])
    models = [("small", size)] if "convert" in parts else []
    if not quick and "convert" in parts:
        zoo_ok = True
        try:
            import kbnn.zoo

            zoo_ok = hasattr(kbnn.zoo, "QuickNet")
        except ImportError:
            zoo_ok = False
        if zoo_ok:
            models.append(("quicknet", "224"))
    with tempfile.TemporaryDirectory() as tmp:
        for model_name, model_size in models:
            outcome: dict[str, list] = {f: [] for f in converters}
            for i in range(1 if quick else 3):
                for framework in converters:
                    if framework == "larq" and model_name == "quicknet" and not larq_zoo_available():
                        continue
                    out = os.path.join(tmp, f"{model_name}_{framework}_{i}.tflite")
                    result = _run(framework, "convert", "--model", model_name, "--size",
                                  model_size, "--out", out)
                    if result:
                        result["flatbuffer"] = out
                        outcome[framework].append(result)
            stats = {}
            for framework, results in outcome.items():
                if not results:
                    continue
                with open(results[0]["flatbuffer"], "rb") as f:
                    flatbuffer = f.read()
                hist = _op_histogram(flatbuffer)
                stats[framework] = {
                    "bytes": results[0]["bytes"],
                    "params": results[0]["params"],
                    "bconvs": hist.get("LceBconv2d", 0),
                    "float_ops": sum(n for op, n in hist.items()
                                     if not op.startswith("Lce") and op not in
                                     ("RESHAPE", "PAD", "PADV2", "MAX_POOL_2D")),
                    "hist": hist,
                    "latency": _latency_ms(flatbuffer, 5 if quick or model_name == "small"
                                           else 10),
                    "convert_s": _median([r["convert_s"] for r in results]),
                    "extra_mib": _median([r["extra_peak_mib"] for r in results]),
                }
            k, lq = stats.get("kbnn"), stats.get("larq")
            name = "QuickNet 224x224" if model_name == "quicknet" else "small net"
            for key, label, fmt in (("bytes", "flatbuffer bytes", "{:,}"),
                                    ("params", "parameters", "{:,}"),
                                    ("bconvs", "LceBconv2d ops", "{}"),
                                    ("float_ops", "float compute ops", "{}"),
                                    ("latency", "LCE latency ms (x86, 1 thread)", "{:.2f}"),
                                    ("convert_s", "conversion s", "{:.2f}"),
                                    ("extra_mib", "extra peak RSS converting, MiB", "{:.0f}")):
                if k is None:
                    continue
                row = [f"conversion, {name}: {label}", fmt.format(k[key])]
                if has_larq:
                    row.append(fmt.format(lq[key]) if lq else "-")
                row.append("-")
                row += [_ratio(k[key], lq[key]) if lq else "-", "-"] if has_larq else ["-", "-"]
                rows.append(tuple(row))
            if k and lq and k["hist"] != lq["hist"]:
                diff = sorted(set(k["hist"].items()) ^ set(lq["hist"].items()))
                print(f"{name}: operator histograms differ: {diff}")
            elif k and lq:
                print(f"{name}: identical operator histograms: {k['hist']}")

    # Digits accuracy over seeds.
    acc = {f: [] for f in (["kbnn", "larq"] if has_larq else ["kbnn"])}
    for seed in range(seeds if "accuracy" in parts else 0):
        for framework in acc:
            result = _run(framework, "accuracy", "--seed", str(seed), "--epochs",
                          "3" if quick else "10")
            if result:
                acc[framework].append(result["accuracy"])
    for framework, values in acc.items():
        mean = statistics.mean(values) if values else float("nan")
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        acc[framework] = (mean, sd, values)
    if "accuracy" in parts:
        row = [f"digits test accuracy, {seeds} seed(s), same net and recipe",
               f"{100 * acc['kbnn'][0]:.1f} +- {100 * acc['kbnn'][1]:.1f} %"]
        if has_larq:
            row.append(f"{100 * acc['larq'][0]:.1f} +- {100 * acc['larq'][1]:.1f} %")
        rows.append(tuple(row))

    header = ["figure", "kbnn"] + (["larq"] if has_larq else []) + ["float Keras 3",
                                                                      "kbnn/larq", "kbnn/float"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = list(row) + ["-"] * (len(header) - len(row))
        lines.append("| " + " | ".join(cells[:len(header)]) + " |")
    table = "\n".join(lines)
    print(table)
    if args.append:
        sys.path.insert(0, HERE)
        from _common import append_results

        note = ("Peers: larq 0.14 under tf_keras (TF_USE_LEGACY_KERAS=1) and the same "
                "architecture in float Keras 3; every figure from fresh worker processes, "
                f"frameworks interleaved, {rounds} round(s) per training figure.")
        if not has_larq:
            note += " larq was not installed (or --no-larq): kbnn and float Keras 3 only."
        append_results("kbnn vs larq and float Keras 3 (bench_peer.py)", note + "\n\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
