"""`kbnn zoo`: the kbnn.zoo architectures from the command line.

    kbnn zoo list [--compute]
    kbnn zoo convert NAME -o OUT.tflite [--weights W] [--input-size S] [--width-multiplier M]
                     [--classes K] [--option KEY=VALUE ...] [--int8] [--no-strict]
                     [--overwrite]
    kbnn zoo import NAME CHECKPOINT.pth -o OUT.keras [--input-size S] [--width-multiplier M]
                    [--classes K] [--option KEY=VALUE ...] [--key KEY] [--no-strict]
                    [--overwrite]

`list` prints every architecture with its parameters and OPs at 224x224 (from
benchmarks/zoo_figures.json, the table of docs/zoo.md; a model missing there is counted only
with --compute, which builds it), the published top-1 and the registered weights. `convert`
builds a model (random weights, or --weights: a registered name, a file or a URL) and writes its
LCE flatbuffer. `import` builds a model, loads an official PyTorch checkpoint into it through
the architecture's registered mapping (`kbnn.zoo.load_torch_checkpoint`, no PyTorch needed) and
saves it as .keras.

`--option KEY=VALUE` (repeatable) passes any other keyword argument of the architecture's
builder, the VALUE read as JSON when it parses (``1.0``, ``true``, ``null``, ``[32, 32, 3]``,
``"text"``) and as a plain string otherwise, e.g. the official AdaBin checkpoint needs
``kbnn zoo import AdaBinResNet18 model_best.pth.tar -o adabin.keras --option
activation_form=code``. An item without '=' is a usage error; a KEY that is not a parameter of
the builder is refused (naming the accepted ones) before anything is built or written.

Only the standard library is imported here: `add_parser` builds the arguments, and `command`
imports kbnn (and TensorFlow) once the arguments are parsed. Outputs are checked before
anything is computed and written atomically (`kbnn_apps.cli.write_atomically`).
"""

from __future__ import annotations

import argparse
import json
import os

__all__ = ["add_parser", "command", "human"]

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES_JSON = os.path.join(_ROOT, "benchmarks", "zoo_figures.json")
BENCH_ZOO = os.path.join(_ROOT, "benchmarks", "bench_zoo.py")


def _input_size(text: str) -> tuple[int, int]:
    """S or H,W (pixels, each >= 1)."""
    parts = text.replace("x", ",").split(",")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(
            f"expected a size S or H,W of positive integers, got {text!r}")
    return (sizes[0], sizes[-1])


def _multiplier(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _option(text: str) -> tuple[str, object]:
    """KEY=VALUE -> (KEY, VALUE), VALUE parsed as JSON when it parses, else the string."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE with KEY a builder argument name, got {text!r}"
            + ("" if sep else " (no '=')"))
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    return key, parsed


def _model_options(p: argparse.ArgumentParser, positive_int) -> None:
    p.add_argument("name", metavar="NAME",
                   help="the architecture (see `kbnn zoo list`; case, '-' and '_' ignored)")
    p.add_argument("--input-size", type=_input_size, default=None, metavar="S|H,W",
                   help="input height and width in pixels (default 224, the published size)")
    # None: not given (the builder's default, 1.0 / 1000, unless an --option sets it)
    p.add_argument("--width-multiplier", type=_multiplier, default=None, metavar="M",
                   help="scale every width by M (default 1.0, the published model)")
    p.add_argument("--classes", type=positive_int, default=None, metavar="K",
                   help="classifier outputs (default 1000, ImageNet)")
    p.add_argument("--option", dest="options", type=_option, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="another keyword argument of the builder (repeatable), VALUE read as "
                        "JSON if it parses, else as a string; e.g. --option "
                        "activation_form=code --option pad_values=1.0")


def _add_command(zsub, debug: argparse.ArgumentParser, name: str, positive_int=None,
                 **kwargs) -> argparse.ArgumentParser:
    """`kbnn zoo NAME` (`kwargs`: help, description), run by `command`; given `positive_int`,
    with the options of the model to build (`_model_options`)."""
    p = zsub.add_parser(name, parents=[debug], **kwargs)
    p.set_defaults(func=command)
    if positive_int is not None:
        _model_options(p, positive_int)
    return p


def add_parser(sub, debug: argparse.ArgumentParser, positive_int, overwrite_option) -> None:
    """Add `kbnn zoo` (list / convert / import) to the `kbnn` subparsers `sub`."""
    zoo = sub.add_parser("zoo", parents=[debug],
                         help="the kbnn.zoo architectures: list, convert, import PyTorch "
                              "checkpoints",
                         description="The kbnn.zoo architectures (docs/zoo.md): list them, "
                                     "convert one to an LCE flatbuffer, or import an official "
                                     "PyTorch checkpoint into one.")
    zsub = zoo.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND", required=True)

    p = _add_command(zsub, debug, "list",
                     help="architectures, parameters, OPs, published top-1, weights")
    p.add_argument("--compute", action="store_true",
                   help="build and count the models that benchmarks/zoo_figures.json lacks "
                        "(seconds to a minute per model) instead of leaving them blank")

    p = _add_command(zsub, debug, "convert", positive_int,
                     help="build a zoo model and write its LCE flatbuffer",
                     description="Build a kbnn.zoo model (random weights unless --weights) "
                                 "and convert it with kbnn.converters.convert. The "
                                 "flatbuffer is written to a temporary file and renamed "
                                 "into place.")
    p.add_argument("-o", "--output", required=True, metavar="OUT.tflite",
                   help="the flatbuffer file to write")
    p.add_argument("--weights", default=None, metavar="W",
                   help="weights to load: a registered name (e.g. imagenet, see `kbnn zoo "
                        "list`), a .keras/.weights.h5/.h5/PyTorch file, or a URL (default: "
                        "random weights)")
    p.add_argument("--int8", action="store_true",
                   help="int8 ops for FakeQuant-trained float layers (QAT)")
    p.add_argument("--no-strict", dest="strict", action="store_false",
                   help="convert binary layers LCE cannot lower as float ops (warned) instead "
                        "of failing")
    overwrite_option(p, "OUT.tflite")

    p = _add_command(zsub, debug, "import", positive_int,
                     help="load an official PyTorch checkpoint into a zoo model, save .keras",
                     description="Build a kbnn.zoo model and load a PyTorch checkpoint "
                                 "(torch.save file of the official code; read without "
                                 "PyTorch and without running pickled code) through the "
                                 "architecture's registered mapping, then save the model.")
    p.add_argument("checkpoint", metavar="CHECKPOINT.pth",
                   help="the PyTorch checkpoint (.pth, .pth.tar, .pt)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.keras",
                   help="the Keras model file to write (.keras)")
    p.add_argument("--key", default=None, metavar="KEY",
                   help="where the state dict is nested in the checkpoint (default: found "
                        "automatically)")
    p.add_argument("--no-strict", dest="strict", action="store_false",
                   help="load even if checkpoint tensors are left unused or model weights "
                        "unfilled (listed) instead of failing")
    overwrite_option(p, "OUT.keras")


# --------------------------------------------------------------------------------- commands

def command(args) -> int:
    """Run `kbnn zoo <list|convert|import>` (kbnn imported here)."""
    return {"list": _list, "convert": _convert, "import": _import}[args.zoo_command](args)


def _load_json(path: str) -> dict:
    import json

    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _published_top1() -> dict:
    """name -> published top-1 (str) from benchmarks/bench_zoo.py's TOP1, when present."""
    if not os.path.isfile(BENCH_ZOO):
        return {}
    import ast

    with open(BENCH_ZOO) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "TOP1"
                                                for t in node.targets):
            try:
                table = ast.literal_eval(node.value)
            except ValueError:
                return {}
            return {name: value[0] for name, value in table.items()}
    return {}


def human(n: float, decimals: int = 2) -> str:
    """`n` in G, M or K with `decimals` decimals ("4.82 G"), or as it is below 1000 (also
    benchmarks/bench_zoo.py's, for docs/zoo.md)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.{decimals}f} {unit}"
    return f"{n:g}"


def _list(args) -> int:
    from kbnn import zoo
    from kbnn.zoo import weights as zw

    figures = _load_json(FIGURES_JSON)
    top1 = _published_top1()
    rows = [("Model", "Params", "OPs", "Top-1 (%)", "Weights")]
    for name in zoo.list_models():
        row = figures.get(name)
        if row is None and args.compute:
            import kbnn

            profile = kbnn.profile(zoo.get(name))
            row = {"params": profile.total_params, "ops": profile.ops}
        entries = zw.list_weights(name)
        paper = top1.get(name) or next((f"{e.top1:g}" for e in entries if e.top1), "-")
        weights = ", ".join(f"{e.name} ({e.top1:g}%)" if e.top1 else e.name for e in entries)
        rows.append((name, f"{row['params']:,}" if row else "-",
                     human(row["ops"]) if row else "-", paper, weights or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if any(r[1] == "-" for r in rows[1:]):
        print("(-: not in benchmarks/zoo_figures.json; `kbnn zoo list --compute` counts them)")
    print("Params and OPs (BOPs/64 + FLOPs) at 224x224x3 with 1000 classes; docs/zoo.md.")
    return 0


# builder arguments with their own flag: --option may set them instead, not as well
_FLAGS = {"input_shape": "--input-size", "width_multiplier": "--width-multiplier",
          "classes": "--classes", "weights": "--weights"}


def _architecture(name: str) -> str:
    """The registered name of the architecture NAME (case, '-' and '_' ignored)."""
    from kbnn import zoo
    from kbnn_apps.cli import CLIError

    key = name.replace("-", "").replace("_", "").lower()
    for candidate in zoo.list_models():
        if candidate.lower() == key:
            return candidate
    raise CLIError(f"unknown model {name!r}; expected one of {', '.join(zoo.list_models())} "
                   "(see `kbnn zoo list`)")


def _builder_kwargs(args, architecture: str, refused: dict[str, str]) -> dict:
    """The builder's keyword arguments from the flags and the --option items, checked
    against the builder's signature (a one-line CLIError naming the key, the model and the
    accepted options). `refused`: keys no --option may set, with the reason."""
    import inspect

    from kbnn import zoo
    from kbnn_apps.cli import CLIError

    parameters = inspect.signature(getattr(zoo, architecture)).parameters
    accepted = [k for k in parameters if k not in refused]
    kwargs = {"input_shape": None if args.input_size is None else (*args.input_size, 3),
              "classes": 1000 if args.classes is None else args.classes,
              "width_multiplier": 1.0 if args.width_multiplier is None
              else args.width_multiplier}
    if "weights" not in refused:
        kwargs["weights"] = args.weights
    given = {"input_shape": args.input_size, "classes": args.classes,
             "width_multiplier": args.width_multiplier, "weights": getattr(args, "weights", None)}
    seen = set()
    for key, value in args.options:
        item = f"--option {key}={json.dumps(value) if not isinstance(value, str) else value}"
        if key in refused:
            raise CLIError(f"{item}: {refused[key]}")
        if key not in parameters:
            raise CLIError(f"{item}: {architecture} has no option {key!r}; accepted options: "
                           f"{', '.join(accepted)}")
        if key in seen:
            raise CLIError(f"{item}: {key} is given twice")
        if given.get(key) is not None:
            raise CLIError(f"{item}: {key} is also set by {_FLAGS[key]}; give one of them")
        seen.add(key)
        kwargs[key] = tuple(value) if key == "input_shape" and isinstance(value, list) else value
    return kwargs


def _model_kwargs(args, **refused: str) -> tuple[str, dict]:
    """(the architecture NAME, its builder's keyword arguments); no --option may set
    input_tensor nor the keys of `refused` (with the reason)."""
    architecture = _architecture(args.name)
    refused = {"input_tensor": "a tensor cannot be given on the command line; use "
                               "--input-size or --option input_shape=[H, W, C]", **refused}
    return architecture, _builder_kwargs(args, architecture, refused)


def _convert(args) -> int:
    from kbnn_apps.cli import check_output_path, convert_to_file

    architecture, kwargs = _model_kwargs(args)
    weights = kwargs.get("weights")
    inputs = [weights] if isinstance(weights, str) and os.path.exists(weights) else []
    check_output_path(args.output, "--output", inputs=inputs, overwrite=args.overwrite)

    from kbnn import zoo

    model = zoo.get(architecture, **kwargs)
    convert_to_file(model, args.output,
                    lambda report: f"{model.name}, {report.size_bytes:,} bytes, "
                                   f"{report.n_binary_convs} LceBconv2d",
                    int8=args.int8, strict=args.strict)
    return 0


def _import(args) -> int:
    from kbnn_apps.cli import CLIError, _existing_file, check_output_path, write_atomically

    _existing_file(args.checkpoint)
    if not args.output.endswith(".keras"):
        raise CLIError(f"--output {args.output}: Keras saves models only under a name ending "
                       "in .keras")
    architecture, kwargs = _model_kwargs(
        args, weights="the weights are CHECKPOINT's; `kbnn zoo import` takes no other")
    check_output_path(args.output, "--output", inputs=[args.checkpoint],
                      overwrite=args.overwrite)

    from kbnn import zoo
    from kbnn.zoo import torch_checkpoint as tc

    mapping = tc.get_torch_mapping(architecture)
    model = zoo.get(architecture, **kwargs)
    report = tc.load_torch_checkpoint(model, args.checkpoint, mapping, strict=args.strict,
                                      key=args.key)
    write_atomically(args.output, model.save)
    print(f"Wrote {args.output}: {model.name} with {len(report.loaded)} tensors of "
          f"{args.checkpoint}")
    for what in ("unused", "unfilled"):
        left = getattr(report, what)
        if left:
            print(f"warning: {len(left)} {what}: {', '.join(left[:10])}"
                  + (" ..." if len(left) > 10 else ""))
    return 0
