"""`kbnn train` at scale, on CPUs: MirroredStrategy over two logical CPU devices trains a kbnn
model (Bop + Adam in a CaseOptimizer, distilled from a teacher) exactly like one device, and
MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1 finishes on both workers
with the same model. Each runs in subprocesses: logical devices and the multi-worker runtime
must be set up before TensorFlow initialises."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from training_helpers import student

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _env() -> dict:
    """The test's environment for the children: quiet TensorFlow, kbnn importable, and no
    proxy for gRPC's connections between the workers on 127.0.0.1."""
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "grpc_proxy", "all_proxy")}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
                "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])})
    env.pop("TF_CONFIG", None)
    return env


def test_private_keras_api_of_the_multi_worker_fixes_is_there():
    """`kbnn._keras_compat.multi_worker_fit_fixes` patches two private Keras functions; a Keras
    release that moves them fails here, loudly, instead of in a multi-host run."""
    from keras.src.backend.tensorflow import trainer

    from kbnn._keras_compat import multi_worker_fit_fixes

    assert callable(trainer.reduce_per_replica)
    assert callable(trainer._collective_all_reduce_multi_worker)
    assert callable(trainer.TensorFlowTrainer._maybe_symbolic_build)
    assert callable(trainer.TensorFlowTrainer._symbolic_build)
    before = (trainer.reduce_per_replica, trainer.TensorFlowTrainer._maybe_symbolic_build)
    with multi_worker_fit_fixes():
        assert trainer.reduce_per_replica is not before[0]
    assert (trainer.reduce_per_replica, trainer.TensorFlowTrainer._maybe_symbolic_build) == before


def test_mirrored_over_two_cpus_trains_like_one_device(tmp_path):
    done = subprocess.run([sys.executable, str(HERE / "train_strategy_check.py"), str(tmp_path)],
                          cwd=HERE, env=_env(), capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    one, two = results["one"], results["mirrored"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    for key in ("loss", "distillation_loss", "val_loss"):
        np.testing.assert_allclose(two["history"][key], one["history"][key], rtol=1e-4)
    assert len(one["history"]["loss"]) == 2
    assert min(one["flipped"]) > 0  # Bop flipped binary weights
    for a, b in zip(one["binary"], two["binary"]):
        assert np.mean(np.asarray(a) == np.asarray(b)) > 0.999
    for a, b in zip(one["float"], two["float"]):
        np.testing.assert_allclose(b, a, atol=1e-4)


def _free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_two_workers_on_localhost_finish_and_agree(tmp_path):
    student().save(tmp_path / "student.keras")
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = []
    try:
        for index in range(2):
            env = _env()
            env["TF_CONFIG"] = json.dumps({"cluster": cluster,
                                           "task": {"type": "worker", "index": index}})
            log = open(tmp_path / f"worker{index}.log", "w")  # noqa: SIM115
            workers.append((subprocess.Popen(
                [sys.executable, str(HERE / "multiworker_worker.py"), str(tmp_path)], cwd=HERE,
                env=env, stdout=log, stderr=subprocess.STDOUT, text=True), log))
        deadline = time.monotonic() + 420
        for process, _ in workers:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for process, log in workers:
            if process.poll() is None:  # a worker still running (timeout or failure): stop it
                process.kill()
                process.wait(timeout=30)
            log.close()
    outputs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    for (process, _), output in zip(workers, outputs):
        assert process.returncode == 0, output[-4000:]
    # The JSON line; TensorFlow may log after it (e.g. the coordination service's goodbye).
    results = [json.loads([line for line in output.splitlines() if line.startswith("{")][-1])
               for output in outputs]
    assert [r["task"]["index"] for r in results] == [0, 1]
    assert [r["chief"] for r in results] == [True, False]
    assert [r["replicas"] for r in results] == [2, 2]
    # Both workers ran the same synchronous steps: same losses, same model.
    chief, worker = results
    assert len(chief["history"]["loss"]) == 2
    np.testing.assert_allclose(worker["history"]["loss"], chief["history"]["loss"], rtol=1e-6)
    np.testing.assert_allclose(worker["trainable"], chief["trainable"], rtol=1e-5, atol=1e-5)
    # The chief wrote the results; the other worker's backup folder is gone.
    out = tmp_path / "out"
    for name in ("model.keras", "training.png", "history.csv", "run.json"):
        assert (out / name).is_file(), name
    assert not (out / ".workers").exists() and not (out / "backup").exists()
    rows = (out / "history.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1"]
