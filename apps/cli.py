"""The `kbnn` command line: convert, inspect, summary, verify, bench, the digits demo, train,
zoo.

    kbnn convert MODEL.keras -o OUT.tflite [--int8] [--no-strict] [--verify N] [--overwrite]
    kbnn inspect FLATBUFFER.tflite
    kbnn summary MODEL.keras [--input-shape H,W,C ...] [--wide]
    kbnn verify MODEL.keras FLATBUFFER.tflite [--samples N]
    kbnn bench FLATBUFFER.tflite [--model MODEL.keras] [--threads T ...] [--runs R]
    kbnn demo [--epochs E] [--out DIR] [--overwrite]
    kbnn train MODEL --dataset DATA --epochs N --out DIR [--overwrite | --resume] ...
    kbnn zoo list | convert NAME -o OUT.tflite | import NAME CHECKPOINT.pth -o OUT.keras

Errors are one line on stderr (``kbnn: error: ...``) with exit code 1 (2 for usage errors);
``--debug`` shows the traceback and the native (C++) log of TensorFlow/LCE instead.

Commands that write never write over one of their inputs, refuse an existing output unless
``--overwrite`` (alias ``--force``) is given, check every argument before writing, and write
each file to a temporary file in the same folder that is renamed into place
(`os.replace`), so an interrupted run leaves no half-written file.

Only the standard library is imported at module level: the parser is built and the arguments
parsed first, and only the chosen command's handler imports kbnn (and with it TensorFlow). So
``kbnn --help``, ``kbnn --version``, ``kbnn COMMAND --help`` and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import sys
from collections.abc import Sequence

# Only what parsing needs is imported here; the modules the commands use (tempfile, zipfile,
# warnings, kbnn, ...) are imported where they are used, so that --help answers at once.

__all__ = ["CLIError", "build_parser", "main"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# TensorFlow's C++ log level while a command runs, unless the user set one: quietens the INFO
# and WARNING lines (CUDA probing, CPU features) so that stderr carries kbnn's own messages.
_TF_CPP_MIN_LOG_LEVEL = "2"
# Modules whose import registers kbnn's Keras-serialisable classes (layers, quantizers, ...).
_REGISTERING_MODULES = ("kbnn.quantizers", "kbnn.layers", "kbnn.constraints", "kbnn.blocks",
                        "kbnn.training", "kbnn.zoo")
_TFLITE_IDENTIFIER = b"TFL3"


class CLIError(Exception):
    """A user-facing failure, printed as one line without a traceback."""


# ------------------------------------------------------------------------------ helpers


def _one_line(text: str, limit: int = 400) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


_MESSAGES = None  # where kbnn's own stderr lines go while fd 2 is silenced (None: sys.stderr)


def _warn(message: str) -> None:
    """A kbnn message for stderr that stays visible while native logs are silenced."""
    print(message, file=_MESSAGES or sys.stderr, flush=True)


@contextlib.contextmanager
def _native_stderr_silenced(enabled: bool = True):
    """Send file descriptor 2 (where TensorFlow's and LCE's C++ code log) to a temporary file
    while the block runs, so a command's stderr only carries kbnn's own messages (`_warn`)."""
    global _MESSAGES
    if not enabled:
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr descriptor
        yield
        return
    try:
        on_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # replaced sys.stderr (e.g. pytest capsys)
        on_fd2 = False
    import tempfile

    previous = _MESSAGES
    with tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        os.dup2(sink.fileno(), 2)
        if on_fd2:
            _MESSAGES = open(os.dup(saved), "w", buffering=1)  # noqa: SIM115
        try:
            yield
        finally:
            sys.stderr.flush()
            if on_fd2:
                _MESSAGES.close()
            _MESSAGES = previous
            os.dup2(saved, 2)
            os.close(saved)


def _existing_file(path: str) -> str:
    if not os.path.exists(path):
        if os.path.islink(path):
            raise CLIError(f"{path} is a broken symbolic link (its target does not exist)")
        raise CLIError(f"file not found: {path}")
    if os.path.isdir(path):
        raise CLIError(f"{path} is a directory, expected a file")
    if not os.access(path, os.R_OK):
        raise CLIError(f"cannot read {path}: permission denied")
    return path


# ------------------------------------------------------------------------ safe writing


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def check_output_path(path: str, option: str, inputs: Sequence[str] = (),
                      overwrite: bool = False) -> None:
    """Refuse, before anything is computed or written, an output `path` that is one of the
    `inputs`, a folder, inside a file, or (without `overwrite`) an existing file."""
    for source in inputs:
        if os.path.exists(path) and _same_file(path, source):
            raise CLIError(f"{option} {path} is the input {source}: kbnn never writes over an "
                           "input; choose another output path")
    if os.path.isdir(path):
        raise CLIError(f"{option} {path} is a directory, expected a file path")
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent) if os.path.dirname(parent) != parent else ""
    if parent and not os.path.isdir(parent):
        raise CLIError(f"{option} {path}: {parent} is a file, not a folder")
    if os.path.exists(path) and not overwrite:
        raise CLIError(f"{option} {path} exists; pass --overwrite (or --force) to replace it")


def write_atomically(path: str, write) -> None:
    """Call ``write(tmp)`` with a temporary path in `path`'s folder (same extension), then
    rename it to `path` with `os.replace`; an error or an interruption removes the temporary
    file and leaves `path` as it was. The file gets the usual permissions (0666 & ~umask)."""
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp" + os.path.splitext(name)[1],
                               dir=folder)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes_atomically(path: str, data: bytes) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    write_atomically(path, write)


def _import_kbnn_objects() -> None:
    for name in _REGISTERING_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # a dependency of the module is missing: a real problem
                raise


def _check_keras_archive(path: str) -> None:
    """Say what is wrong with a file that should be a `.keras` archive (a zip written by
    `model.save` holding config.json), before Keras reads it."""
    import zipfile

    if os.path.getsize(path) == 0:
        raise CLIError(f"{path} is empty (0 bytes), not a Keras model (expected a .keras file "
                       "written by model.save)")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] == _TFLITE_IDENTIFIER:
        raise CLIError(f"{path} is a TFLite flatbuffer, not a Keras model (expected a .keras "
                       "file written by model.save)")
    if not zipfile.is_zipfile(path):
        what = ("starts like a zip archive but is truncated or corrupt"
                if head[:2] == b"PK" else "is not a zip archive")
        raise CLIError(f"{path} is not a Keras model: it {what} (a .keras file is the zip "
                       "archive written by model.save)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise CLIError(f"{path} is a corrupt zip archive ({type(err).__name__}: "
                       f"{_one_line(err, 200)}), not a readable Keras model") from err
    if "config.json" not in names:
        raise CLIError(f"{path} is a zip archive without config.json, not a Keras model "
                       "(expected a .keras file written by model.save)")
    if broken is not None:
        raise CLIError(f"{path} is corrupt: its member {broken!r} fails the zip CRC check "
                       "(re-save the model)")
    if not path.endswith(".keras"):
        raise CLIError(f"{path} is a Keras archive, but Keras loads it only under a name "
                       "ending in .keras: rename it")


def load_keras_model(path: str):
    """Load a `.keras` file (kbnn classes registered) or raise a one-line `CLIError` that
    says what is wrong with the file."""
    _existing_file(path)
    if not path.endswith((".h5", ".hdf5")):
        _check_keras_archive(path)
    _import_kbnn_objects()
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as err:
        missing = re.search(r"Could not locate (?:class|function) '([^']+)'", str(err))
        if missing:
            raise CLIError(
                f"{path}: unknown layer or object '{missing.group(1)}' (neither Keras nor kbnn "
                "defines it; import the module that registers it with "
                "@keras.saving.register_keras_serializable)"
            ) from err
        raise CLIError(f"cannot load {path} as a Keras model: "
                       f"{type(err).__name__}: {_one_line(err, 200)}") from err


def load_flatbuffer(path: str, option: str = "") -> bytes:
    """Read a `.tflite` file, checking the TFLite file identifier."""
    with open(_existing_file(path), "rb") as f:
        data = f.read()
    if data[4:8] != _TFLITE_IDENTIFIER:
        looks_keras = data[:2] == b"PK" or path.endswith(".keras")
        hint = (" (it looks like a Keras model: is the argument order right? "
                f"{option})" if looks_keras and option else "")
        raise CLIError(f"{path} is not a TFLite flatbuffer (no 'TFL3' file identifier){hint}")
    return data


def _random_inputs(model, samples: int, seed: int):
    import numpy as np

    if len(model.inputs) != 1:
        raise CLIError(f"model {model.name!r} has {len(model.inputs)} inputs; verification "
                       "with random inputs needs a single-input model")
    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise CLIError(f"model {model.name!r} has input shape {shape} with unknown dimensions; "
                       "random inputs need a static shape")
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, size=(samples,) + shape).astype(np.float32)


def _verify_and_print(model, flatbuffer: bytes, inputs, min_agreement: float) -> int:
    from kbnn.converters import verify

    report = verify(model, flatbuffer, inputs)
    samples = len(inputs)
    print(f"Verification on {samples} random input{'s' if samples != 1 else ''} "
          "(uniform in [-1, 1]):")
    print(report.table())
    agreement = report.top1_agreement
    score, what = ((agreement, "top-1 agreement") if agreement is not None
                   else (report.within_tolerance, "fraction of outputs within tolerance"))
    if score < min_agreement:
        _warn(f"kbnn: error: {what} {100 * score:.2f} % is below {100 * min_agreement:.2f} %")
        return EXIT_FAILURE
    return EXIT_OK


def convert_to_file(model, output: str, describe, **options):
    """`kbnn.converters.convert(model, **options)` (its notes held back), the flatbuffer written
    atomically to `output`, then "Wrote OUTPUT: <describe(report)>" and each note as a warning
    printed. Returns the conversion result (flatbuffer, report, warnings)."""
    import warnings

    from kbnn.converters import convert

    with warnings.catch_warnings():  # the notes are printed below, once
        warnings.filterwarnings("ignore", message="kbnn.converters:")
        result = convert(model, return_report=True, **options)
    write_bytes_atomically(output, result.flatbuffer)
    print(f"Wrote {output}: {describe(result.report)}")
    for note in result.warnings:
        print(f"warning: {note}")
    return result


def _sibling_keras(tflite_path: str) -> str:
    return os.path.splitext(tflite_path)[0] + ".keras"


# ----------------------------------------------------------------------------- commands


def _cmd_convert(args) -> int:
    # Every check before anything is written: the output path, the model, the inputs of
    # --verify. The flatbuffer is then written atomically (a temporary file, renamed).
    _existing_file(args.model)
    check_output_path(args.output, "--output", inputs=[args.model], overwrite=args.overwrite)
    model = load_keras_model(args.model)
    inputs = _random_inputs(model, args.verify, args.seed) if args.verify else None

    result = convert_to_file(
        model, args.output,
        lambda report: f"{report.size_bytes:,} bytes, {report.n_binary_convs} LceBconv2d, "
                       f"{report.bitpacked_weight_bytes:,} bytes of bitpacked weights",
        target=args.target, int8=args.int8, strict=args.strict)
    if inputs is not None:
        return _verify_and_print(model, result.flatbuffer, inputs, args.min_agreement)
    return EXIT_OK


def _read_report(flatbuffer: bytes, path: str):
    """`inspect` of a file's bytes, a broken flatbuffer as a one-line error naming the file."""
    from kbnn.converters import inspect

    try:
        return inspect(flatbuffer)
    except ValueError as err:
        raise CLIError(f"{path}: {err}") from err


def _cmd_inspect(args) -> int:
    print(_read_report(load_flatbuffer(args.tflite), args.tflite).table())
    return EXIT_OK


def _summary_input_shape(model, shapes: list[tuple[int, ...]] | None):
    """The `input_shape` argument of `kbnn.summary` from the --input-shape options, or a
    one-line error when the model's own input shape has unknown dimensions."""
    inputs = list(getattr(model, "inputs", None) or [])
    if shapes is None:
        for tensor in inputs:
            shape = tuple(tensor.shape[1:])
            if any(d is None for d in shape):
                raise CLIError(
                    f"model {model.name!r} has input shape {shape} with unknown dimensions; "
                    "pass --input-shape H,W,C (one sample, no batch axis; once per input) to "
                    "count its MACs"
                )
        return None
    if inputs and len(shapes) != len(inputs):
        raise CLIError(f"model {model.name!r} has {len(inputs)} input(s) but --input-shape was "
                       f"given {len(shapes)} time(s)")
    for tensor, shape in zip(inputs, shapes):
        expected = tuple(tensor.shape[1:])
        if len(shape) != len(expected) or any(
                d is not None and d != g for d, g in zip(expected, shape)):
            raise CLIError(f"--input-shape {','.join(map(str, shape))} does not fit the input "
                           f"shape {expected} of model {model.name!r} (one sample, no batch "
                           "axis)")
    return shapes[0] if len(shapes) == 1 else shapes


def _cmd_summary(args) -> int:
    from kbnn.summary import summary

    model = load_keras_model(args.model)
    summary(model, input_shape=_summary_input_shape(model, args.input_shape), wide=args.wide)
    return EXIT_OK


def _is_flatbuffer_file(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8)[4:8] == _TFLITE_IDENTIFIER
    except OSError:
        return False


def _cmd_verify(args) -> int:
    _existing_file(args.model)
    _existing_file(args.tflite)
    if _is_flatbuffer_file(args.model) and not _is_flatbuffer_file(args.tflite):
        raise CLIError(f"the arguments are swapped: {args.model} is the flatbuffer and "
                       f"{args.tflite} the model; run kbnn verify {args.tflite} {args.model}")
    flatbuffer = load_flatbuffer(args.tflite)
    _read_report(flatbuffer, args.tflite)
    model = load_keras_model(args.model)
    inputs = _random_inputs(model, args.samples, args.seed)
    return _verify_and_print(model, flatbuffer, inputs, args.min_agreement)


def _cmd_bench(args) -> int:
    from kbnn_apps.bench import (
        X86_NOTE,
        bench,
        bench_table,
        check_model_matches,
        float_tflite,
        float_twin,
    )

    flatbuffer = load_flatbuffer(args.tflite, "kbnn bench FLATBUFFER.tflite --model MODEL.keras")
    _read_report(flatbuffer, args.tflite)
    model_path = args.model or _sibling_keras(args.tflite)
    float_flatbuffer = None
    if args.model or os.path.exists(model_path):
        model = load_keras_model(model_path)
        try:
            check_model_matches(model, flatbuffer)
        except ValueError as err:
            if args.model:
                raise CLIError(f"--model {model_path} is not the model of {args.tflite}: {err}; "
                               "the float twin would be an unrelated model") from err
            _warn(f"kbnn: note: {model_path} beside {args.tflite} is not its model ({err}); "
                  "showing the LCE latency only (pass --model MODEL.keras)")
            model = None
        if model is not None:
            float_flatbuffer = float_tflite(float_twin(model))
    else:
        _warn(f"kbnn: note: no Keras model at {model_path} (pass --model MODEL.keras); "
              "showing the LCE latency only")
    rows = bench(flatbuffer, threads=tuple(args.threads), runs=args.runs, warmup=args.warmup,
                 name=os.path.basename(args.tflite), float_flatbuffer=float_flatbuffer)
    print(bench_table(rows))
    print(X86_NOTE)
    return EXIT_OK


def _cmd_demo(args) -> int:
    from kbnn_apps.demo import RESULT_FILES, run_demo

    folder = os.path.abspath(args.out)
    while folder and not os.path.exists(folder):
        folder = "" if os.path.dirname(folder) == folder else os.path.dirname(folder)
    if folder and not os.path.isdir(folder):
        raise CLIError(f"--out {args.out}: {folder} is a file, not a folder")
    held = [name for name in RESULT_FILES if os.path.lexists(os.path.join(args.out, name))]
    if held and not args.overwrite:
        raise CLIError(f"--out {args.out} already holds {', '.join(held)} from an earlier run; "
                       "pass --overwrite (or --force) to replace them, or choose another "
                       "--out folder")
    results = run_demo(epochs=args.epochs, out_dir=args.out, seed=args.seed,
                       bench_runs=args.bench_runs, overwrite=args.overwrite,
                       verbose="auto")
    print(f"Test accuracy: Keras {100 * results['keras_accuracy']:.2f} %, TFLite "
          f"{100 * results['tflite_accuracy']:.2f} %; top-1 agreement "
          f"{100 * results['top1_agreement']:.2f} %; flatbuffer {results['size_ratio']:.1f}x "
          f"smaller than float. Report: {results['paths']['report.md']}")
    return EXIT_OK


def _cmd_train(args) -> int:
    from kbnn_apps.train import command

    return command(args)


# ------------------------------------------------------------------------------- parser


def _int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= `minimum` (usage error, exit 2, otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "positive")
_non_negative_int = _int_at_least(0, "non-negative")
_SEED_MAX = 2 ** 32 - 1  # numpy's legacy seeding (keras.utils.set_random_seed) takes < 2**32


def _seed(text: str) -> int:
    """An argparse type: a seed, an integer in [0, 2**32 - 1]."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= _SEED_MAX:
        raise argparse.ArgumentTypeError(
            f"expected an integer in [0, {_SEED_MAX}], got {text!r}")
    return value


def _shape(text: str) -> tuple[int, ...]:
    """A shape written H,W,C (also "(H, W, C)" or HxWxC) as a tuple of positive ints."""
    parts = [p for p in re.split(r"[,x\s]+", text.strip().strip("()[]").strip()) if p]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(
            f"expected a shape of positive integers such as 32,32,3, got {text!r}")
    return shape


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _version() -> str:
    """The installed distribution's version, read from its metadata (importing kbnn would load
    TensorFlow)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kbnn")
    except PackageNotFoundError:  # run from a source tree, not installed
        return "unknown (not installed)"


class _VersionAction(argparse.Action):
    """``--version``: print ``kbnn VERSION`` on stdout and exit 0. The version is read only
    when the option is given, so --help and the commands do not pay for the metadata lookup."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="show the version number and exit"):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"kbnn {_version()}", flush=True)
        parser.exit()


def _overwrite_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--overwrite", "--force", dest="overwrite", action="store_true",
                   help=f"replace {what} if it exists (never an input file)")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the `kbnn` command (imports only the standard library)."""
    from kbnn_apps.demo import DEFAULT_EPOCHS, DEFAULT_OUT_DIR
    from kbnn_apps.train import add_arguments as train_arguments
    from kbnn_apps.zoo_cli import add_parser as zoo_arguments

    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks and TensorFlow/LCE native logs")
    parser = argparse.ArgumentParser(
        prog="kbnn", parents=[debug],
        description="Binary neural networks for Keras 3: convert to LCE, inspect, verify, "
                    "benchmark, and the digits demo.")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("convert", parents=[debug],
                       help="convert a .keras model to a TFLite flatbuffer with LCE binary ops",
                       description="Convert a .keras model to a TFLite flatbuffer whose binary "
                                   "layers are LCE bitpacked ops. The output is written to a "
                                   "temporary file and renamed into place; an existing output "
                                   "is kept unless --overwrite is given, an input never "
                                   "replaced.")
    p.add_argument("model", metavar="MODEL.keras",
                   help="the Keras model to convert (a .keras file written by model.save)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.tflite",
                   help="the flatbuffer file to write (not the input model)")
    p.add_argument("--int8", action="store_true",
                   help="int8 ops for FakeQuant-trained float layers (QAT)")
    p.add_argument("--no-strict", dest="strict", action="store_false",
                   help="convert binary layers LCE cannot lower as float ops (warned) instead "
                        "of failing")
    p.add_argument("--target", choices=("arm", "xcore"), default="arm",
                   help="LCE target: arm (default; also runs on x86) or xcore")
    p.add_argument("--verify", type=_positive_int, default=0, metavar="N",
                   help="compare with Keras on N random inputs and print the table")
    _verify_options(p)
    _overwrite_option(p, "OUT.tflite")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("inspect", parents=[debug],
                       help="operators, binary convolutions and sizes of a flatbuffer")
    p.add_argument("tflite", metavar="FLATBUFFER.tflite",
                   help="the TFLite flatbuffer to inspect (written by kbnn convert)")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("summary", parents=[debug],
                       help="per-layer precisions, parameters, memory and binary/float MACs")
    p.add_argument("model", metavar="MODEL.keras",
                   help="the Keras model to profile (a .keras file written by model.save)")
    p.add_argument("--input-shape", type=_shape, action="append", metavar="H,W,C",
                   help="shape of one sample (no batch axis), for models whose input has "
                        "unknown dimensions; repeat it for each input of a multi-input model")
    p.add_argument("--wide", action="store_true",
                   help="the full table (input and kernel bits apart, memory per layer) "
                        "instead of one that fits 100 columns")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("verify", parents=[debug],
                       help="compare a flatbuffer (LCE interpreter) with its Keras model")
    p.add_argument("model", metavar="MODEL.keras",
                   help="the Keras model the flatbuffer was converted from")
    p.add_argument("tflite", metavar="FLATBUFFER.tflite",
                   help="the TFLite flatbuffer to check (written by kbnn convert)")
    p.add_argument("--samples", type=_positive_int, default=100, metavar="N",
                   help="random inputs to compare (default 100)")
    _verify_options(p)
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("bench", parents=[debug],
                       help="LCE latency next to the float twin converted with stock TFLite")
    p.add_argument("tflite", metavar="FLATBUFFER.tflite",
                   help="the TFLite flatbuffer to time (written by kbnn convert)")
    p.add_argument("--model", metavar="MODEL.keras",
                   help="Keras model of the flatbuffer, for the float twin; it must match "
                        "the flatbuffer's inputs, outputs and binary convolutions (default: "
                        "FLATBUFFER.keras beside FLATBUFFER.tflite)")
    p.add_argument("--threads", type=_positive_int, nargs="+", default=[1], metavar="T",
                   help="interpreter threads (one or more values; default 1)")
    p.add_argument("--runs", type=_positive_int, default=50, metavar="R",
                   help="timed runs per engine (default 50)")
    p.add_argument("--warmup", type=_non_negative_int, default=5, metavar="W",
                   help="untimed warm-up runs (default 5)")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("demo", parents=[debug],
                       help="train, convert, verify and benchmark a binary net on the digits")
    p.add_argument("--epochs", type=_positive_int, default=DEFAULT_EPOCHS, metavar="E",
                   help=f"training epochs (default {DEFAULT_EPOCHS})")
    p.add_argument("--out", default=DEFAULT_OUT_DIR, metavar="DIR",
                   help=f"output folder for model.keras, model.tflite, report.md and "
                        f"training.png (default {DEFAULT_OUT_DIR}); results already there are "
                        "kept unless --overwrite is given")
    p.add_argument("--seed", type=_seed, default=0, metavar="S",
                   help=f"seed of the data split and training, in [0, {_SEED_MAX}] (default 0)")
    p.add_argument("--bench-runs", type=_positive_int, default=50, metavar="R",
                   help="timed runs per engine in the latency benchmark (default 50)")
    _overwrite_option(p, "the results in DIR")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("train", parents=[debug],
                       help="train a binary network on digits, CIFAR, ImageNet or a folder, "
                            "then convert, verify and report",
                       description="Train a kbnn.zoo architecture or a .keras model (one "
                                   "device, mirrored GPUs, several workers or a TPU), with "
                                   "checkpoints every epoch (--resume continues an interrupted "
                                   "run), CSV and TensorBoard logs; then convert it to LCE, "
                                   "verify the flatbuffer on held-out images and write "
                                   "report.md.")
    train_arguments(p, _positive_int, _seed, _fraction)
    p.set_defaults(func=_cmd_train)

    zoo_arguments(sub, debug, _positive_int, _overwrite_option)
    return parser


def _verify_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=_seed, default=0, metavar="S",
                   help=f"seed of the random inputs, in [0, {_SEED_MAX}] (default 0)")
    p.add_argument("--min-agreement", type=_fraction, default=0.99, metavar="F",
                   help="exit with status 1 when top-1 agreement is below F (default 0.99)")


# --------------------------------------------------------------------------------- main


def _fail(message: str) -> int:
    print(f"kbnn: error: {_one_line(message)}", file=sys.stderr)
    return EXIT_FAILURE


def _conversion_error_type():
    try:
        from kbnn.converters import ConversionError
    except ImportError:  # reported as the error it is
        return ()
    return ConversionError


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `kbnn` command with `argv` (default: sys.argv[1:]); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # usage error (2), --help or --version (0)
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else EXIT_USAGE
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", _TF_CPP_MIN_LOG_LEVEL)  # before TF loads
    try:
        with _native_stderr_silenced(not debug):
            return args.func(args)
    except KeyboardInterrupt:
        print("kbnn: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        if debug:
            raise
        if isinstance(err, CLIError):
            return _fail(str(err))
        if isinstance(err, _conversion_error_type()):
            return _fail(f"conversion failed: {err}")
        if isinstance(err, (OSError, ValueError)):
            return _fail(f"{type(err).__name__}: {err}")
        return _fail(f"{type(err).__name__}: {err} (run with --debug for the traceback)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
