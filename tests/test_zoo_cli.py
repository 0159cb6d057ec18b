"""`kbnn zoo list / convert / import` (apps/zoo_cli.py): the table, a narrow small-input
conversion, the import of the ReActNet-A fixture checkpoint (tests/zoo/fixtures), the output
rules of the other commands (no overwrite without --overwrite, atomic writes), one-line errors
with a non-zero exit, and help text for every argument."""

from __future__ import annotations

import gzip
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from kbnn_apps.cli import build_parser, main

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "zoo" / "fixtures"
NARROW = ["--input-size", "32", "--width-multiplier", "0.125", "--classes", "10"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _zoo_parsers():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["zoo"]
    zsub = next(a for a in sub._actions if a.dest == "zoo_command")
    return sub, zsub.choices


def test_every_zoo_argument_has_help():
    _, commands = _zoo_parsers()
    assert set(commands) == {"list", "convert", "import"}
    for name, parser in commands.items():
        for action in parser._actions:
            if action.dest != "help":
                assert action.help, (name, action.dest)


def test_help_does_not_import_tensorflow():
    code = ("import sys; from kbnn_apps.cli import main\n"
            "try:\n    main(['zoo', 'convert', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'tensorflow' not in sys.modules and 'kbnn' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "--input-size" in result.stdout


def test_list_names_every_model_with_figures_and_weights(capsys):
    from kbnn import zoo

    code, out, _ = run(capsys, "zoo", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["Model", "Params", "OPs"]
    for name in zoo.list_models():
        assert any(line.startswith(name + " ") for line in lines), name
    quicknet = next(line for line in lines if line.startswith("QuickNet "))
    assert "13,243,720" in quicknet and "63.3" in quicknet and "imagenet" in quicknet
    assert "72.4" in next(line for line in lines if line.startswith("BNextTiny "))


def test_convert_a_narrow_model(tmp_path, capsys):
    out = tmp_path / "bnext.tflite"
    code, text, err = run(capsys, "zoo", "convert", "bnext-tiny", "-o", str(out), *NARROW,
                          "--no-strict")
    assert code == 0, err
    data = out.read_bytes()
    assert data[4:8] == b"TFL3" and "Wrote" in text
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp.tflite")]
    # an existing output is kept unless --overwrite
    code, _, err = run(capsys, "zoo", "convert", "BiRealNet18", "-o", str(out), *NARROW)
    assert code == 1 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == data
    code, _, err = run(capsys, "zoo", "convert", "BiRealNet18", "-o", str(out), *NARROW,
                       "--overwrite")
    assert code == 0, err
    assert out.read_bytes() != data


def test_strict_convert_of_unannealed_bnext_fails_in_one_line(tmp_path, capsys):
    out = tmp_path / "bnext.tflite"
    code, _, err = run(capsys, "zoo", "convert", "BNextTiny", "-o", str(out), *NARROW)
    assert code == 1 and err.startswith("kbnn: error:") and "tau" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_unknown_model_is_a_one_line_error(tmp_path, capsys):
    code, _, err = run(capsys, "zoo", "convert", "ResNet50", "-o", str(tmp_path / "x.tflite"))
    assert code == 1 and "ResNet50" in err and "BNextTiny" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [
    ["zoo"], ["zoo", "convert", "QuickNet"], ["zoo", "convert", "QuickNet", "-o", "x.tflite",
                                              "--input-size", "0"],
    ["zoo", "convert", "QuickNet", "-o", "x.tflite", "--width-multiplier", "-1"],
])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2


@pytest.fixture(scope="module")
def reactnet_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "reactnet_a_w1_32.pth.tar"
    path.write_bytes(gzip.decompress((FIXTURES / "reactnet_a_w1_32.pth.tar.gz").read_bytes()))
    return path


def test_import_reactnet_checkpoint(reactnet_checkpoint, tmp_path, capsys):
    import keras

    out = tmp_path / "reactnet.keras"
    code, text, err = run(capsys, "zoo", "import", "reactnet_a", str(reactnet_checkpoint),
                          "-o", str(out), "--input-size", "32", "--width-multiplier", "0.03125",
                          "--classes", "10")
    assert code == 0, err
    assert "Wrote" in text
    model = keras.saving.load_model(out)
    with np.load(FIXTURES / "reactnet_a_w1_32.npz") as data:
        images, logits = data["input_nhwc"].astype(np.float32), data["logits"]
    probs = model.predict(images, verbose=0)
    assert (probs.argmax(-1) == logits.argmax(-1)).all()
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(probs, shifted / shifted.sum(-1, keepdims=True), atol=1e-4)


def test_import_errors_are_one_line(reactnet_checkpoint, tmp_path, capsys):
    out = tmp_path / "m.keras"
    # wrong width: the shape mismatch is named
    code, _, err = run(capsys, "zoo", "import", "ReActNetA", str(reactnet_checkpoint), "-o",
                       str(out), "--input-size", "32", "--width-multiplier", "0.0625",
                       "--classes", "10")
    assert code == 1 and "shape mismatch" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    # no registered mapping
    code, _, err = run(capsys, "zoo", "import", "QuickNet", str(reactnet_checkpoint), "-o",
                       str(out), *NARROW)
    assert code == 1 and "No PyTorch checkpoint mapping" in err
    # missing checkpoint, output not .keras, output is the input
    code, _, err = run(capsys, "zoo", "import", "ReActNetA", str(tmp_path / "none.pth"), "-o",
                       str(out))
    assert code == 1 and "file not found" in err
    code, _, err = run(capsys, "zoo", "import", "ReActNetA", str(reactnet_checkpoint), "-o",
                       str(tmp_path / "m.h5"))
    assert code == 1 and ".keras" in err


# ----------------------------------------------------------------- --option KEY=VALUE

ADABIN_NARROW = ["--input-size", "32", "--classes", "10", "--option", "width_multiplier=0.03125"]


@pytest.fixture(scope="module")
def adabin_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("adabin") / "adabin_resnet18_w1_32.pth.tar"
    path.write_bytes(gzip.decompress(
        (FIXTURES / "adabin_resnet18_w1_32.pth.tar.gz").read_bytes()))
    return path


def test_import_adabin_checkpoint_with_builder_options(adabin_checkpoint, tmp_path, capsys):
    """The official AdaBin checkpoint needs activation_form="code": passed with --option, as
    are the width (JSON number) and the logits head (JSON null)."""
    import keras

    out = tmp_path / "adabin.keras"
    code, text, err = run(capsys, "zoo", "import", "AdaBinResNet18", str(adabin_checkpoint),
                          "-o", str(out), *ADABIN_NARROW, "--option", "activation_form=code",
                          "--option", "classifier_activation=null")
    assert code == 0, err
    assert "Wrote" in text and "warning" not in text
    model = keras.saving.load_model(out)
    with np.load(FIXTURES / "adabin_resnet18_w1_32.npz") as data:
        images, logits = data["input_nhwc"].astype(np.float32), data["logits"]
    outputs = model.predict(images, verbose=0)
    assert np.abs(outputs - logits).max() / np.abs(logits).max() < 1e-4
    np.testing.assert_array_equal(outputs.argmax(-1), logits.argmax(-1))


def test_option_errors_name_the_problem_and_write_nothing(adabin_checkpoint, tmp_path,
                                                         capsys):
    out = tmp_path / "m.keras"

    def fails(*argv, status=1):
        code, _, err = run(capsys, "zoo", "import", "AdaBinResNet18", str(adabin_checkpoint),
                           "-o", str(out), *ADABIN_NARROW, *argv)
        assert code == status, err
        if status == 1:
            assert len(err.strip().splitlines()) == 1, err
        assert not out.exists() and not list(tmp_path.iterdir())
        return err.strip().splitlines()[-1]

    # the default (paper) form: the mapping says what to pass on the command line
    err = fails()
    assert "--option activation_form=code" in err
    # a key the builder does not take: named, with the model and the accepted options
    err = fails("--option", "activation_from=code")
    assert "'activation_from'" in err and "AdaBinResNet18" in err
    assert "accepted options:" in err and "activation_form" in err and "pad_values" in err
    # no '=': a usage error naming the item
    err = fails("--option", "activation_form", status=2)
    assert "'activation_form'" in err and "no '='" in err
    # refused, twice, or also set by its own flag
    assert "CHECKPOINT" in fails("--option", "activation_form=code", "--option", "weights=x")
    assert "given twice" in fails("--option", "activation_form=code",
                                  "--option", "activation_form=code")
    assert "--width-multiplier" in fails("--option", "activation_form=code",
                                         "--width-multiplier", "0.03125")
    # a value the builder refuses (checked when building, before writing)
    assert "activation_form" in fails("--option", "activation_form=cod")


def test_convert_passes_options_and_checks_them(tmp_path, capsys):
    out = tmp_path / "adabin.tflite"
    code, _, err = run(capsys, "zoo", "convert", "adabin-resnet18", "-o", str(out),
                       "--input-size", "32", "--classes", "10", "--option", "pad_value=1.0")
    assert code == 1 and "'pad_value'" in err and "accepted options:" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    code, _, err = run(capsys, "zoo", "convert", "adabin-resnet18", "-o", str(out),
                       "--input-size", "32", "--classes", "10", "--option", "input_tensor=1")
    assert code == 1 and "--input-size" in err and not out.exists()
    code, text, err = run(capsys, "zoo", "convert", "adabin-resnet18", "-o", str(out),
                          "--input-size", "32", "--classes", "10", "--option",
                          "width_multiplier=0.125", "--option", "pad_values=1.0",
                          "--option", "activation_form=code", "--option", "name=\"tiny\"")
    assert code == 0, err
    assert out.read_bytes()[4:8] == b"TFL3" and "Wrote" in text and "tiny" in text
