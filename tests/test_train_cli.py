"""`kbnn train`: argument checks before anything is written, the whole run on digits (every
artifact, the flatbuffer verified), image folders, CIFAR (mocked), distillation, two-step
training and recipes, and resuming a run that was killed after its first checkpoint. The runs
that read through tensorflow-datasets (the optional extra ``kbnn[data]``) are skipped without
it."""

import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from cli_helpers import light_runs_in_a_fresh_interpreter

from kbnn_apps.cli import main
from kbnn_apps.demo import build_demo_model

ROOT = Path(__file__).resolve().parents[1]
needs_tfds = pytest.mark.skipif(importlib.util.find_spec("tensorflow_datasets") is None,
                                reason="tensorflow-datasets (pip install 'kbnn[data]')")
ARTIFACTS = ("model.keras", "model.tflite", "report.md", "training.png", "history.csv",
             "run.json")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Small models saved as .keras files: binary students (8x8x1 and 16x16x3) and float
    teachers."""
    folder = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(0)
    paths = {"student": folder / "student.keras", "rgb": folder / "rgb.keras",
             "teacher": folder / "teacher.keras", "rgb_teacher": folder / "rgb_teacher.keras"}
    build_demo_model((8, 8, 1), 10, stem_filters=16, binary_filters=(32, 32)).save(
        paths["student"])
    build_demo_model((16, 16, 3), 3, stem_filters=16, binary_filters=(32,)).save(paths["rgb"])
    for key, shape, classes in (("teacher", (8, 8, 1), 10), ("rgb_teacher", (16, 16, 3), 3)):
        keras.Sequential([keras.Input(shape), keras.layers.Flatten(),
                          keras.layers.Dense(32, activation="relu"),
                          keras.layers.Dense(classes)]).save(paths[key])
    return {k: str(v) for k, v in paths.items()}


def _csv_epochs(path) -> list[int]:
    with open(path, newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1] if err else ""


# ---------------------------------------------------------------- arguments, nothing written


def test_help_usage_and_argument_errors_do_not_import_tensorflow(tmp_path):
    runs = [(["train", "--help"], 0), (["train", "m.keras"], 2),
            (["train", "m.keras", "--dataset", "digits", "--epochs", "x", "--out", "o"], 2),
            (["train", "m.keras", "--dataset", "mnist", "--epochs", "1", "--out", "o"], 1),
            (["train", "m.keras", "--dataset", "digits", "--epochs", "1", "--out", "o"], 1)]
    result = light_runs_in_a_fresh_interpreter(
        runs, heavy=("tensorflow", "keras", "kbnn", "numpy"), cwd=tmp_path)
    assert result == {"statuses": [status for _, status in runs], "heavy": []}
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra, message", [
    (["--dataset", "mnist"], "--dataset: expected one of digits"),
    (["--dataset", "folder:/no/such/folder"], "is not a folder"),
    (["--optimizer", "bop", "--recipe", "reactnet_a"], "both choose the optimizer"),
    (["--bop-gamma", "0.01"], "need --optimizer bop"),
    (["--learning-rate", "-1"], "--learning-rate: expected a number > 0"),
    (["--width", "0.5"], "--width and --input-size apply to kbnn.zoo models"),
    (["--tpu", "node-1"], "--tpu needs --strategy tpu"),
    (["--strategy", "multi_worker"], "needs the TF_CONFIG environment variable"),
])
def test_bad_arguments_fail_before_anything_is_written(models, tmp_path, capsys, monkeypatch,
                                                       extra, message):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    out = tmp_path / "out"
    argv = ["train", models["student"], "--dataset", "digits", "--epochs", "1", "--out",
            str(out)]
    assert main(argv + extra) == 1
    error = _error(capsys)
    assert error.startswith("kbnn: error:") and message in error
    assert not out.exists()


def test_missing_files_and_folders(models, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["train", "missing.keras", "--dataset", "digits", "--epochs", "1",
                 "--out", out]) == 1
    assert "MODEL missing.keras: file not found" in _error(capsys)
    assert main(["train", models["student"], "--teacher", str(tmp_path / "t.keras"),
                 "--dataset", "digits", "--epochs", "1", "--out", out]) == 1
    assert "--teacher" in _error(capsys)
    (tmp_path / "images" / "train" / "a").mkdir(parents=True)
    assert main(["train", models["rgb"], "--dataset", f"folder:{tmp_path / 'images'}",
                 "--epochs", "1", "--out", out]) == 1
    assert "no held-out folder" in _error(capsys)
    assert not os.path.exists(out)


def test_datasets_without_tensorflow_datasets_name_the_extra(models, tmp_path, capsys,
                                                             monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith(
        "tensorflow_datasets") else find_spec(name, *a))
    out = tmp_path / "out"
    assert main(["train", models["student"], "--dataset", "cifar10", "--epochs", "1", "--out",
                 str(out)]) == 1
    assert "pip install 'kbnn[data]'" in _error(capsys)
    assert not out.exists()


def test_bad_tf_config(models, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "out")
    argv = ["train", models["student"], "--dataset", "digits", "--epochs", "1", "--out", out,
            "--strategy", "multi_worker"]
    monkeypatch.setenv("TF_CONFIG", "{not json")
    assert main(argv) == 1 and "TF_CONFIG is not a valid cluster description" in _error(capsys)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]},
                                                "task": {"type": "worker", "index": 3}}))
    assert main(argv) == 1 and "task index 3 is out of range" in _error(capsys)
    assert not os.path.exists(out)


def test_usage_errors(models, tmp_path, capsys):
    base = ["train", models["student"], "--dataset", "digits", "--out", str(tmp_path / "o")]
    assert main(base + ["--epochs", "0"]) == 2
    assert main(base + ["--epochs", "1", "--overwrite", "--resume"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["train", models["student"], "--epochs", "1", "--out", "x"]) == 2  # --dataset


def test_output_folder_rules(models, tmp_path, capsys):
    argv = ["train", models["student"], "--dataset", "digits", "--epochs", "1"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(argv + ["--out", str(afile / "sub")]) == 1
    assert "is a file, not a folder" in _error(capsys)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert main(argv + ["--out", str(busy)]) == 1
    assert "is not empty (notes.txt); pass --resume" in _error(capsys)
    assert main(argv + ["--out", str(busy), "--resume"]) == 1
    assert "holds no run.json" in _error(capsys)
    run = {"config": {"model": models["student"], "dataset": "digits", "epochs": 3,
                      "batch_size": 64, "learning_rate": 0.001, "optimizer": "adam",
                      "bop_threshold": None, "bop_gamma": None, "teacher": None,
                      "two_step": False, "recipe": None, "width": None, "input_size": None,
                      "steps_per_epoch": None, "augment": True, "seed": 0}}
    (busy / "run.json").write_text(json.dumps(run))
    assert main(argv + ["--out", str(busy), "--resume"]) == 1
    assert "--epochs was 3, now 1" in _error(capsys)
    (busy / "report.md").write_text("done")
    assert main(argv + ["--out", str(busy), "--resume"]) == 1
    assert "has finished (report.md)" in _error(capsys)
    assert sorted(os.listdir(busy)) == ["notes.txt", "report.md", "run.json"]


def test_unknown_zoo_model_and_tpu_fail_before_writing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", "NoSuchNet", "--dataset", "digits", "--epochs", "1", "--out",
                 str(out)]) == 1
    assert "MODEL 'NoSuchNet': not a kbnn.zoo model" in _error(capsys)
    assert main(["train", "XnorResNet18", "--dataset", "digits", "--epochs", "1", "--out",
                 str(out), "--strategy", "tpu"]) == 1
    assert "--strategy tpu: cannot connect to a TPU" in _error(capsys)
    assert not out.exists()


def test_model_that_does_not_fit_the_data(models, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", models["rgb"], "--dataset", "digits", "--epochs", "1", "--out",
                 str(out)]) == 1
    assert "3 outputs, the data set has 10 classes" in _error(capsys)
    assert main(["train", models["student"], "--teacher", models["rgb_teacher"], "--dataset",
                 "digits", "--epochs", "1", "--out", str(out)]) == 1
    error = _error(capsys)
    assert "--teacher" in error and "input shape (16, 16, 3) is not the data's" in error
    assert not out.exists()


# ------------------------------------------------------------------------------ full runs


def test_train_on_digits_writes_every_artifact(models, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("kept")  # not kbnn's: --overwrite leaves it
    (out / "report.md").write_text("stale")
    assert main(["train", models["student"], "--dataset", "digits", "--epochs", "2", "--out",
                 str(out), "--optimizer", "bop", "--bop-threshold", "1e-6", "--bop-gamma",
                 "1e-3", "--learning-rate", "0.01", "--overwrite"]) == 0
    stdout = capsys.readouterr().out
    for name in ARTIFACTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "notes.txt").read_text() == "kept"
    assert (out / "logs" / "train").is_dir() and (out / "logs" / "validation").is_dir()
    assert not (out / "backup").exists()
    for stage in range(1, 6):
        assert f"[{stage}/5]" in stdout
    assert "Epoch 2/2" in stdout and "\x1b[" not in stdout and "\r" not in stdout
    assert _csv_epochs(out / "history.csv") == [0, 1]
    report = (out / "report.md").read_text()
    assert "top-1 agreement" in report.lower() and "PASSED" in report
    assert "CaseOptimizer (Adam, Bop)" in report and "LceBconv2d" in report
    config = json.loads((out / "run.json").read_text())["config"]
    assert config["optimizer"] == "bop" and config["epochs"] == 2
    # The flatbuffer and the saved model agree on the held-out digits, computed here.
    from kbnn.converters import run_flatbuffer
    from kbnn.data import load_digits_split

    model = keras.models.load_model(out / "model.keras", compile=False)
    x = load_digits_split(test_size=0.2, val_size=0.1, seed=0).x_test
    keras_top1 = np.argmax(model.predict(x, verbose=0), -1)
    tflite_top1 = np.argmax(run_flatbuffer((out / "model.tflite").read_bytes(), x), -1)
    assert np.mean(keras_top1 == tflite_top1) >= 0.99


@pytest.mark.slow
def test_train_a_zoo_model_on_digits(tmp_path, capsys):
    out = tmp_path / "zoo"
    assert main(["train", "XnorResNet18", "--dataset", "digits", "--epochs", "1", "--width",
                 "0.125", "--input-size", "16", "--out", str(out)]) == 0
    for name in ARTIFACTS:
        assert (out / name).is_file(), name
    model = keras.models.load_model(out / "model.keras", compile=False)
    assert model.name == "xnor_resnet18" and tuple(model.inputs[0].shape[1:]) == (16, 16, 1)
    assert "XnorResNet18" in (out / "report.md").read_text()


@needs_tfds
def test_image_folder_with_teacher_two_steps_and_recipe(models, tmp_path, capsys):
    rng = np.random.default_rng(0)
    import tensorflow as tf

    for split in ("train", "val"):
        for label in ("a", "b", "c"):
            folder = tmp_path / "images" / split / label
            folder.mkdir(parents=True)
            for i in range(6):
                image = rng.integers(0, 256, (20 + i, 18, 3), dtype=np.uint8)
                tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png(image))
    out = tmp_path / "run"
    assert main(["train", models["rgb"], "--dataset", f"folder:{tmp_path / 'images'}",
                 "--epochs", "1", "--batch-size", "6", "--teacher", models["rgb_teacher"],
                 "--recipe", "reactnet_a", "--out", str(out), "--verify-samples", "9"]) == 0
    stdout = capsys.readouterr().out
    assert "Training step 1 for 1 epoch with the teacher" in stdout
    assert "Training step 2 for 1 epoch with the teacher" in stdout
    for name in ("history-step1.csv", "history-step2.csv", "step1.keras", "model.keras",
                 "model.tflite", "report.md", "training.png"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "recipe: reactnet_a" in report and "teacher: " + models["rgb_teacher"] in report
    assert "random resized crop 16" in report and "PCA lighting 0.1" in report
    assert "9 held-out images (val)" in report
    assert _csv_epochs(out / "history-step2.csv") == [0]


@needs_tfds
def test_cifar_with_bnext_recipe_mocked(models, tmp_path, capsys):
    import tensorflow_datasets as tfds

    keras.utils.set_random_seed(1)
    student = tmp_path / "cifar.keras"
    build_demo_model((32, 32, 3), 10, stem_filters=16, binary_filters=(32,)).save(student)
    out = tmp_path / "run"
    with tfds.testing.mock_data(num_examples=16):
        assert main(["train", str(student), "--dataset", "cifar10", "--epochs", "1",
                     "--batch-size", "8", "--recipe", "bnext_t", "--out", str(out),
                     "--verify-samples", "16"]) == 0
    report = (out / "report.md").read_text()
    assert "RandAugment rand-m7-mstd0.5-inc1" in report and "recipe: bnext_t" in report
    assert "CaseOptimizer (AdamW)" in report  # BNext's two weight-decay groups
    assert _csv_epochs(out / "history.csv") == [0]


def test_resume_after_being_killed_continues_from_the_checkpoint(models, tmp_path):
    out = tmp_path / "run"
    epochs = 6
    argv = [sys.executable, "-m", "kbnn_apps", "train", models["student"], "--dataset",
            "digits", "--epochs", str(epochs), "--batch-size", "16", "--out", str(out)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    metadata = out / "backup" / "training_metadata.json"
    first = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        saved = 0
        while time.monotonic() < deadline and first.poll() is None and saved < 1:
            time.sleep(0.05)
            try:
                saved = json.loads(metadata.read_text())["epoch"]
            except (OSError, ValueError, KeyError):
                saved = 0
        assert first.poll() is None, "the run ended before it could be killed: " + (
            first.stderr.read()[-2000:])
        first.kill()  # SIGKILL: no clean-up at all
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=60)
    saved = json.loads(metadata.read_text())["epoch"]
    assert 1 <= saved < epochs and not (out / "report.md").exists()

    resumed = subprocess.run(argv + ["--resume"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming after epoch {saved} of {epochs}" in resumed.stdout
    assert f"Epoch {saved + 1}/{epochs}" in resumed.stdout and "Epoch 1/" not in resumed.stdout
    # Each epoch once in the log, and the optimizer went on from the saved step count.
    assert _csv_epochs(out / "history.csv") == list(range(epochs))
    model = keras.models.load_model(out / "model.keras")
    steps = 1257 // 16
    assert int(model.optimizer.iterations.numpy()) == epochs * steps
    assert f"resumed: from epoch {saved + 1} of {epochs}" in (out / "report.md").read_text()
    assert not (out / "backup").exists()
