"""The `kbnn` command with bad or unusual arguments (issue 11): data safety of the commands that
write (never over an input, no silent overwrite, atomic writes, every argument checked before
writing), clear one-line errors for broken files, a bench model that must match its
flatbuffer, and help text for every argument."""

import argparse
import os
import zipfile

import keras
import pytest
from cli_helpers import one_error_line

from kbnn.layers import QuantConv2D
from kbnn_apps import cli
from kbnn_apps.cli import main

BINARY = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign", "use_bias": False}


def _tiny_model(shape=(6, 6, 3), seed=0, classes=4) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(32, 3, padding="same", name="stem")(inputs)
    x = QuantConv2D(32, 3, padding="same", pad_values=1.0, name="bconv", **BINARY)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes, name="head")(x))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reliability_cli")
    _tiny_model().save(folder / "model.keras")
    assert main(["convert", str(folder / "model.keras"), "-o", str(folder / "model.tflite")]) == 0
    return folder


def _leftovers(folder) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


# ------------------------------------------------------------------ never over an input


def test_convert_onto_its_own_input_leaves_it_byte_identical(files, tmp_path, capsys):
    model = tmp_path / "m.keras"
    model.write_bytes((files / "model.keras").read_bytes())
    before = model.read_bytes()
    for extra in ([], ["--overwrite"], ["--force"]):
        assert main(["convert", str(model), "-o", str(model), *extra]) == 1
        line = one_error_line(capsys)
        assert "--output" in line and "is the input" in line and "never writes over" in line
        assert model.read_bytes() == before
    # the same file under another name (a relative path) is refused too
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["convert", "m.keras", "-o", str(model), "--force"]) == 1
    finally:
        os.chdir(cwd)
    assert "is the input" in one_error_line(capsys)
    assert model.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_existing_output_is_kept_unless_overwrite(files, tmp_path, capsys):
    out = tmp_path / "out.tflite"
    out.write_bytes(b"keep me")
    assert main(["convert", str(files / "model.keras"), "-o", str(out)]) == 1
    line = one_error_line(capsys)
    assert "--output" in line and "exists" in line and "--overwrite" in line
    assert out.read_bytes() == b"keep me"
    for flag in ("--overwrite", "--force"):
        out.write_bytes(b"keep me")
        assert main(["convert", str(files / "model.keras"), "-o", str(out), flag]) == 0
        assert out.read_bytes() == (files / "model.tflite").read_bytes()
    capsys.readouterr()
    assert _leftovers(tmp_path) == []


def test_output_that_is_a_folder_or_inside_a_file_is_refused(files, tmp_path, capsys):
    assert main(["convert", str(files / "model.keras"), "-o", str(tmp_path)]) == 1
    assert "is a directory" in one_error_line(capsys)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["convert", str(files / "model.keras"), "-o", str(blocker / "m.tflite")]) == 1
    assert "is a file, not a folder" in one_error_line(capsys)


def test_written_file_gets_the_usual_permissions(files, tmp_path, capsys):
    out = tmp_path / "new.tflite"
    assert main(["convert", str(files / "model.keras"), "-o", str(out)]) == 0
    capsys.readouterr()
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~umask


# ------------------------------------------------------------------ atomic writes


def test_an_interrupted_write_leaves_no_file(tmp_path):
    target = tmp_path / "out.bin"

    def half_then_interrupt(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cli.write_atomically(str(target), half_then_interrupt)
    assert not target.exists() and os.listdir(tmp_path) == []
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        cli.write_atomically(str(target), half_then_interrupt)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]
    cli.write_bytes_atomically(str(target), b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["out.bin"]


def test_convert_interrupted_during_the_write_leaves_nothing(files, tmp_path, monkeypatch,
                                                             capsys):
    out = tmp_path / "out.tflite"
    real_replace = os.replace

    def interrupted_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.os, "replace", interrupted_replace)
    assert main(["convert", str(files / "model.keras"), "-o", str(out)]) == 130
    monkeypatch.setattr(cli.os, "replace", real_replace)
    assert "interrupted" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ arguments first


def test_bad_seed_is_a_usage_error_naming_seed_before_anything_is_written(files, tmp_path,
                                                                         capsys):
    out = tmp_path / "out.tflite"
    for seed in ("-5", "x", str(2 ** 32)):
        assert main(["convert", str(files / "model.keras"), "-o", str(out), "--verify", "4",
                     "--seed", seed]) == 2
        err = capsys.readouterr().err
        assert "--seed" in err and f"got '{seed}'" in err
        assert not out.exists()
    assert main(["verify", str(files / "model.keras"), str(files / "model.tflite"),
                 "--seed", "-1"]) == 2
    assert "--seed" in capsys.readouterr().err
    assert main(["demo", "--seed", "-5", "--out", str(tmp_path / "demo")]) == 2
    assert "--seed" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_verify_preconditions_are_checked_before_the_flatbuffer_is_written(tmp_path, capsys):
    a, b = keras.Input((4,)), keras.Input((4,))
    two = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Concatenate()([a, b])))
    two.save(tmp_path / "two.keras")
    out = tmp_path / "two.tflite"
    assert main(["convert", str(tmp_path / "two.keras"), "-o", str(out), "--verify", "3"]) == 1
    assert "2 inputs" in one_error_line(capsys)
    assert not out.exists()


# ------------------------------------------------------------------ demo


def test_demo_refuses_a_folder_that_holds_results(tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "report.md").write_text("earlier run")
    (out / "notes.txt").write_text("unrelated")
    called = []
    monkeypatch.setattr("kbnn_apps.demo.run_demo", lambda **kw: called.append(kw))
    assert main(["demo", "--out", str(out), "--epochs", "1"]) == 1
    line = one_error_line(capsys)
    assert "--out" in line and "report.md" in line and "--overwrite" in line
    assert called == [] and (out / "report.md").read_text() == "earlier run"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["demo", "--out", str(blocker)]) == 1
    assert "is a file, not a folder" in one_error_line(capsys)
    assert called == []


def test_demo_passes_overwrite_and_plain_progress_to_run_demo(tmp_path, monkeypatch):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "model.keras").write_text("earlier run")
    seen = {}

    def fake_run_demo(**kwargs):
        seen.update(kwargs)
        return {"keras_accuracy": 1.0, "tflite_accuracy": 1.0, "top1_agreement": 1.0,
                "size_ratio": 2.0, "paths": {"report.md": str(out / "report.md")}}

    monkeypatch.setattr("kbnn_apps.demo.run_demo", fake_run_demo)
    assert main(["demo", "--out", str(out), "--force", "--epochs", "1"]) == 0
    assert seen["overwrite"] is True and seen["verbose"] == "auto" and seen["epochs"] == 1


def test_run_demo_checks_its_arguments_and_folder_before_running(tmp_path):
    from kbnn_apps.demo import run_demo

    (tmp_path / "model.tflite").write_bytes(b"earlier")
    with pytest.raises(FileExistsError) as info:
        run_demo(out_dir=str(tmp_path), log=None)
    assert "argument `out_dir` of run_demo" in str(info.value)
    assert "model.tflite" in str(info.value) and "overwrite=True" in str(info.value)
    for name, value in (("seed", -5), ("epochs", 0), ("epochs", 1.5), ("bench_runs", 0),
                        ("learning_rate", float("nan")), ("verbose", 3), ("threads", ())):
        with pytest.raises(ValueError, match=f"argument `{name}` of run_demo"):
            run_demo(**{name: value}, out_dir=str(tmp_path / "new"), log=None)
    assert not (tmp_path / "new").exists()
    assert (tmp_path / "model.tflite").read_bytes() == b"earlier"


def test_demo_progress_is_plain_when_stdout_is_not_a_terminal(monkeypatch):
    from kbnn_apps import demo

    monkeypatch.setattr(demo, "_stdout_is_terminal", lambda: False)
    assert demo._resolve_verbose("auto") == 2  # one line per epoch, no ANSI escape codes
    monkeypatch.setattr(demo, "_stdout_is_terminal", lambda: True)
    assert demo._resolve_verbose("auto") == 1  # the progress bar on a terminal
    assert demo._resolve_verbose(0) == 0
    assert demo._plural(1, "epoch") == "1 epoch" and demo._plural(2, "epoch") == "2 epochs"


def test_demo_report_says_1_epoch_not_1_epochs():
    from kbnn_apps.demo import _report_markdown

    r = {"date": "d", "epochs": 1, "seed": 0, "train_seconds": 1.0, "total_seconds": 2.0,
         "machine": "m", "n_train": 1, "n_val": 1, "n_test": 1, "keras_accuracy": 1.0,
         "tflite_accuracy": 1.0, "top1_agreement": 1.0, "max_abs_diff": 0.0,
         "mean_abs_diff": 0.0, "float_tflite_bytes": 2, "binary_tflite_bytes": 1,
         "size_ratio": 2.0, "bitpacked_weight_bytes": 1, "float_weight_bytes": 1,
         "n_binary_convs": 1, "bench_runs": 1}
    text = _report_markdown(r, {"LceBconv2d": 1}, "", [])
    assert "1 epoch," in text and "1 epochs" not in text
    assert "1 run after warm-up" in text and "1 runs" not in text


# ------------------------------------------------------------------ broken files


def _keras_variants(source, folder):
    data = source.read_bytes()
    variants = {"empty.keras": b"", "truncated.keras": data[: len(data) // 2],
                "text.keras": b"not a model at all"}
    for name, content in variants.items():
        (folder / name).write_bytes(content)
    crc = bytearray(data)
    with zipfile.ZipFile(source) as archive:
        info = archive.getinfo("model.weights.h5")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 8
    crc[start] ^= 0xFF  # one byte of the stored (uncompressed) weights file
    (folder / "crc.keras").write_bytes(bytes(crc))
    with zipfile.ZipFile(folder / "noconfig.keras", "w") as archive:
        archive.writestr("hello.txt", "hi")
    (folder / "model.zip").write_bytes(data)


@pytest.mark.parametrize("name, words", [
    ("empty.keras", ["is empty (0 bytes)"]),
    ("truncated.keras", ["not a Keras model", "truncated or corrupt"]),
    ("text.keras", ["not a Keras model", "not a zip archive"]),
    ("crc.keras", ["is corrupt", "model.weights.h5", "CRC"]),
    ("noconfig.keras", ["without config.json"]),
    ("model.zip", ["ending in .keras"]),
])
def test_a_broken_keras_file_says_what_is_wrong(files, tmp_path, capsys, name, words):
    _keras_variants(files / "model.keras", tmp_path)
    assert main(["summary", str(tmp_path / name)]) == 1
    line = one_error_line(capsys)
    assert str(tmp_path / name) in line and "file not found" not in line.lower()
    for word in words:
        assert word in line


def test_a_flatbuffer_given_as_the_model_is_named(files, capsys):
    assert main(["summary", str(files / "model.tflite")]) == 1
    assert "is a TFLite flatbuffer, not a Keras model" in one_error_line(capsys)


def test_verify_with_swapped_arguments_says_so(files, capsys):
    assert main(["verify", str(files / "model.tflite"), str(files / "model.keras")]) == 1
    line = one_error_line(capsys)
    assert "swapped" in line and f"kbnn verify {files / 'model.keras'}" in line


def test_inspect_of_a_truncated_zero_padded_file_fails(files, tmp_path, capsys):
    data = (files / "model.tflite").read_bytes()
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(data[: len(data) // 2] + bytes(len(data) - len(data) // 2))
    assert main(["inspect", str(broken)]) == 1
    line = one_error_line(capsys)
    assert str(broken) in line and "not a valid TFLite flatbuffer" in line
    assert "broken structure" in line


# ------------------------------------------------------------------ bench model check


def test_bench_refuses_a_model_that_is_not_the_flatbuffers(files, tmp_path, capsys):
    _tiny_model(shape=(8, 8, 1)).save(tmp_path / "other_input.keras")
    _tiny_model(classes=7).save(tmp_path / "other_output.keras")
    inputs = keras.Input((6, 6, 3))
    float_only = keras.Model(inputs, keras.layers.Dense(4)(
        keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(32, 3)(inputs))))
    float_only.save(tmp_path / "no_binary.keras")
    tflite = str(files / "model.tflite")
    for name, words in (("other_input.keras", ["inputs (8, 8, 1)", "(6, 6, 3)"]),
                        ("other_output.keras", ["outputs (7,)", "(4,)"]),
                        ("no_binary.keras", ["0 LceBconv2d", "flatbuffer has 1"])):
        assert main(["bench", tflite, "--model", str(tmp_path / name), "--runs", "1"]) == 1
        line = one_error_line(capsys)
        assert "--model" in line and "is not the model of" in line, line
        for word in words:
            assert word in line, line


def test_bench_accepts_the_same_architecture(files, tmp_path, capsys):
    _tiny_model(seed=5).save(tmp_path / "retrained.keras")
    assert main(["bench", str(files / "model.tflite"), "--model",
                 str(tmp_path / "retrained.keras"), "--runs", "1", "--warmup", "0"]) == 0
    assert "float twin" in capsys.readouterr().out


def test_bench_with_an_unrelated_model_beside_shows_lce_only(files, tmp_path, capsys):
    (tmp_path / "x.tflite").write_bytes((files / "model.tflite").read_bytes())
    _tiny_model(shape=(8, 8, 1)).save(tmp_path / "x.keras")
    assert main(["bench", str(tmp_path / "x.tflite"), "--runs", "1", "--warmup", "0"]) == 0
    captured = capsys.readouterr()
    assert "float twin" not in captured.out
    assert "is not its model" in captured.err and "x.keras" in captured.err


# ------------------------------------------------------------------ help


def _actions(parser):
    for action in parser._actions:  # argparse has no public list of a parser's arguments
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((f"{name} {a}", act) for a, act in _actions(sub))
        else:
            yield " ".join(action.option_strings) or action.dest, action


def test_every_argument_and_option_has_help():
    parser = cli.build_parser()
    missing = [name for name, action in _actions(parser)
               if not action.help or action.help == argparse.SUPPRESS]
    assert missing == []


def test_input_flatbuffers_are_named_for_what_they_are(capsys):
    for command in ("inspect", "verify", "bench"):
        assert main([command, "--help"]) == 0
        text = capsys.readouterr().out
        assert "FLATBUFFER.tflite" in text and "OUT.tflite" not in text, command
    assert main(["convert", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--overwrite, --force" in text and "OUT.tflite" in text
    assert main(["summary", "--help"]) == 0
    assert "--wide" in capsys.readouterr().out


def test_summary_wide_option(files, capsys):
    assert main(["summary", str(files / "model.keras")]) == 0
    narrow = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in narrow) <= 100
    assert main(["summary", str(files / "model.keras"), "--wide"]) == 0
    wide = capsys.readouterr().out
    assert "Memory (B)" in wide and "Memory (B)" not in "\n".join(narrow)


def test_readme_claim_import_kbnn_before_load_model(files):
    # In a fresh interpreter: without `import kbnn` Keras cannot find kbnn's classes.
    import subprocess
    import sys

    code = ("import sys, keras\n"
            "try:\n    keras.models.load_model(sys.argv[1])\n"
            "except Exception as err:\n    print('without kbnn:', err)\n"
            "import kbnn\n"
            "print('with kbnn:', type(keras.models.load_model(sys.argv[1])).__name__)\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, "-c", code, str(files / "model.keras")],
                         capture_output=True, text=True, env=env, timeout=300, check=True)
    assert "Could not locate class 'QuantConv2D'" in run.stdout
    assert "with kbnn: Functional" in run.stdout
    readme = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + "/README.md")
    with open(readme) as f:
        assert "Could not locate class 'QuantConv2D'" in f.read()
