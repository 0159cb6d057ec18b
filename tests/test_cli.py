"""The `kbnn` command line: every subcommand on a tiny model, error handling, console script."""

import json
import os
import subprocess
import sys
import zipfile

import keras
import pytest
from cli_helpers import light_runs_in_a_fresh_interpreter, one_error_line

from kbnn.layers import QuantConv2D
from kbnn_apps.cli import CLIError, main

BINARY = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign", "use_bias": False}


def _tiny_model(groups: int = 1, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(32, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = QuantConv2D(32, 3, padding="same", pad_values=1.0, groups=groups, name="bconv",
                    **BINARY)(x)
    x = keras.layers.BatchNormalization(name="bconv_bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(4, name="head")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """model.keras + model.tflite (converted by the CLI) in one folder, plus a second model."""
    folder = tmp_path_factory.mktemp("cli")
    model = _tiny_model()
    model.save(folder / "model.keras")
    _tiny_model(seed=1).save(folder / "other.keras")
    assert main(["convert", str(folder / "model.keras"), "-o", str(folder / "model.tflite")]) == 0
    return folder


def test_convert_writes_a_flatbuffer_with_one_bconv_and_verifies(files, tmp_path, capsys):
    out = tmp_path / "sub" / "out.tflite"
    rc = main(["convert", str(files / "model.keras"), "-o", str(out), "--verify", "16"])
    stdout = capsys.readouterr().out
    assert rc == 0
    data = out.read_bytes()
    assert data[4:8] == b"TFL3"  # TFLite file identifier
    assert b"LceBconv2d" in data  # the custom op code is stored by name
    assert "1 LceBconv2d" in stdout
    assert "Verification on 16 random inputs" in stdout
    assert "top-1 agreement                 100.00 %" in stdout


def test_inspect_prints_ops_and_file_size(files, capsys):
    assert main(["inspect", str(files / "model.tflite")]) == 0
    stdout = capsys.readouterr().out
    size = os.path.getsize(files / "model.tflite")
    assert f"{size:,} bytes" in stdout
    assert "LceBconv2d" in stdout and "LceQuantize" in stdout


def test_summary_prints_parameter_totals(files, capsys):
    model = keras.models.load_model(files / "model.keras")
    assert main(["summary", str(files / "model.keras")]) == 0
    stdout = capsys.readouterr().out
    # Binary kernel of bconv: 3*3*32*32 = 9216 one-bit parameters.
    assert f"{model.count_params():,}" in stdout
    assert "9,216" in stdout


def test_summary_of_a_model_with_unknown_input_dimensions(tmp_path, capsys):
    inputs = keras.Input((None, None, 32))
    outputs = QuantConv2D(32, 3, padding="same", pad_values=1.0, name="bconv", **BINARY)(inputs)
    path = tmp_path / "dynamic.keras"
    keras.Model(inputs, outputs).save(path)
    assert main(["summary", str(path)]) == 1
    line = one_error_line(capsys)
    assert "(None, None, 32) with unknown dimensions" in line and "--input-shape H,W,C" in line
    assert main(["summary", str(path), "--input-shape", "6,6,32"]) == 0
    # 3*3*32*32 binary MACs per output pixel, 6*6 pixels: 331,776 BOPs.
    assert "331,776" in capsys.readouterr().out
    for bad in (["--input-shape", "6,6,16"], ["--input-shape", "6,6"],
                ["--input-shape", "6,6,32", "--input-shape", "6,6,32"]):
        assert main(["summary", str(path), *bad]) == 1
        assert "--input-shape" in one_error_line(capsys)


def test_verify_passes_for_the_right_model_and_fails_for_another(files, capsys):
    tflite = str(files / "model.tflite")
    assert main(["verify", str(files / "model.keras"), tflite, "--samples", "20"]) == 0
    assert "top-1 agreement                 100.00 %" in capsys.readouterr().out
    # A model with other weights disagrees: exit status 1 and one error line.
    assert main(["verify", str(files / "other.keras"), tflite, "--samples", "40"]) == 1
    assert "below 99.00 %" in one_error_line(capsys)


def test_bench_compares_with_the_float_twin_found_beside(files, capsys):
    tflite = files / "model.tflite"
    assert main(["bench", str(tflite), "--runs", "3", "--threads", "1", "2"]) == 0
    stdout = capsys.readouterr().out
    rows = [line for line in stdout.splitlines() if line.startswith(("float twin", "model.tflite"))]
    assert len(rows) == 4  # float twin and binary, for 1 and 2 threads
    binary_size = os.path.getsize(tflite)
    assert all(f"{binary_size:,}" in r for r in rows if r.startswith("model.tflite"))
    float_sizes = {int(r.split()[5].replace(",", "")) for r in rows if r.startswith("float")}
    assert len(float_sizes) == 1
    float_size = float_sizes.pop()
    # The float twin stores bconv's 3*3*32*32 = 9216 weights as float32 (36,864 bytes); the
    # binary flatbuffer stores them as 1,152 bitpacked bytes.
    assert float_size >= 9216 * 4 and binary_size < float_size / 4
    assert "x86" in stdout


def test_bench_without_a_keras_model_shows_lce_only(files, tmp_path, capsys):
    lonely = tmp_path / "lonely.tflite"
    lonely.write_bytes((files / "model.tflite").read_bytes())
    assert main(["bench", str(lonely), "--runs", "2"]) == 0
    captured = capsys.readouterr()
    assert "float twin" not in captured.out and "lonely.tflite" in captured.out
    assert "no Keras model" in captured.err


def test_missing_file_is_one_error_line(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "nope.tflite")]) == 1
    assert "file not found" in one_error_line(capsys)
    assert main(["summary", str(tmp_path / "nope.keras")]) == 1
    assert "file not found" in one_error_line(capsys)


def test_non_keras_and_non_tflite_files_are_refused(tmp_path, capsys):
    text = tmp_path / "model.keras"
    text.write_text("not a model")
    assert main(["summary", str(text)]) == 1
    assert "is not a Keras model" in one_error_line(capsys)
    assert main(["inspect", str(text)]) == 1
    assert "is not a TFLite flatbuffer" in one_error_line(capsys)


def test_unknown_layer_is_named(files, tmp_path, capsys):
    # Rewrite the saved config so that the Dense head claims an unregistered class.
    source, target = files / "model.keras", tmp_path / "unknown.keras"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item == "config.json":
                config = json.loads(data)
                for layer in config["config"]["layers"]:
                    if layer["class_name"] == "Dense":
                        layer.update(class_name="NoSuchLayer", module="nowhere",
                                     registered_name="nowhere>NoSuchLayer")
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    assert main(["summary", str(target)]) == 1
    assert "unknown layer or object 'NoSuchLayer'" in one_error_line(capsys)


def test_conversion_error_in_strict_mode_and_warning_without(tmp_path, capsys):
    # Two groups of 16 input channels: LCE needs multiples of 32 per group.
    path = tmp_path / "grouped.keras"
    _tiny_model(groups=2).save(path)
    out = tmp_path / "grouped.tflite"
    assert main(["convert", str(path), "-o", str(out)]) == 1
    line = one_error_line(capsys)
    assert "conversion failed" in line and "'bconv'" in line
    assert not out.exists()
    assert main(["convert", str(path), "-o", str(out), "--no-strict"]) == 0
    assert "warning: bconv" in capsys.readouterr().out
    assert b"LceBconv2d" not in out.read_bytes()


def test_usage_errors_exit_2_and_version(capsys):
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["convert", "model.keras"]) == 2  # -o is required
    assert main(["bench", "x.tflite", "--runs", "0"]) == 2
    assert main(["bench", "x.tflite", "--warmup", "-3"]) == 2
    assert "--warmup: expected a non-negative integer, got '-3'" in capsys.readouterr().err
    assert main(["summary", "m.keras", "--input-shape", "0,3"]) == 2
    assert main(["summary", "m.keras", "--input-shape", "a,b"]) == 2
    assert "--input-shape: expected a shape of positive integers" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "kbnn 0.1.0"


# Each run: argv for main() and its exit status. None of them may import kbnn or TensorFlow.
_LIGHT_RUNS = [(["--help"], 0), (["--version"], 0), ([], 2), (["frobnicate"], 2),
               (["convert"], 2), (["convert", "m.keras"], 2),
               (["bench", "x.tflite", "--runs", "0"], 2),
               (["summary", "m.keras", "--input-shape", "a,b"], 2)]
_LIGHT_RUNS += [([command, "--help"], 0)
                for command in ("convert", "inspect", "summary", "verify", "bench", "demo")]


def test_help_version_and_usage_errors_do_not_import_tensorflow():
    # In a fresh interpreter: main() of every run, then the heavy modules it must not have
    # loaded (pytest itself has imported them in this process).
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = light_runs_in_a_fresh_interpreter(_LIGHT_RUNS, env=env)
    assert result["statuses"] == [status for _, status in _LIGHT_RUNS]
    assert result["heavy"] == []


def test_console_script_help_and_version_do_not_import_tensorflow():
    # `python -X importtime` lists every module the installed entry point imports.
    script = os.path.join(os.path.dirname(sys.executable), "kbnn")
    for argv, status in ((["--help"], 0), (["--version"], 0), (["convert", "--help"], 0),
                         (["convert"], 2)):
        run = subprocess.run([sys.executable, "-X", "importtime", script, *argv],
                             capture_output=True, text=True, timeout=120, check=False)
        assert run.returncode == status, run.stderr
        imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines()
                    if line.startswith("import time:")}
        assert "kbnn_apps.cli" in imported
        assert not {m for m in imported if m.split(".")[0] in ("tensorflow", "keras", "kbnn")}


def test_python_dash_m_runs_the_command():
    run = subprocess.run([sys.executable, "-m", "kbnn_apps", "--version"], capture_output=True,
                         text=True, timeout=120, check=False)
    assert run.returncode == 0 and run.stdout.strip() == "kbnn 0.1.0"


def test_debug_lets_the_exception_through(tmp_path):
    with pytest.raises(CLIError, match="file not found"):
        main(["--debug", "inspect", str(tmp_path / "nope.tflite")])
    with pytest.raises(CLIError, match="file not found"):
        main(["inspect", str(tmp_path / "nope.tflite"), "--debug"])


def test_console_script_error_is_one_line(files, tmp_path):
    # The installed `kbnn` script, with TensorFlow's C++ log level left to kbnn's default.
    script = os.path.join(os.path.dirname(sys.executable), "kbnn")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    bad = subprocess.run([script, "verify", str(tmp_path / "missing.keras"),
                          str(files / "model.tflite")], capture_output=True, text=True, env=env,
                         timeout=300, check=False)
    assert bad.returncode == 1
    assert bad.stdout == ""
    assert bad.stderr.strip() == f"kbnn: error: file not found: {tmp_path / 'missing.keras'}"


def test_native_logs_are_silenced_but_kbnn_messages_are_not(capfd):
    from kbnn_apps import cli

    with cli._native_stderr_silenced():
        os.write(2, b"native C++ log line\n")  # what TensorFlow/LCE write directly to fd 2
        cli._warn("kbnn: note: visible")
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "native C++ log line" not in err
    assert "kbnn: note: visible" in err and "after" in err
