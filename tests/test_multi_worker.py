"""MultiWorkerMirroredStrategy: TF_CONFIG parsing, and two worker processes on loopback."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from kerasface.training.strategy import STRATEGIES, make_strategy, worker_cluster

TINY_BACKBONE = "{'width_multiplier': 0.25, 'neck_channels': 32, 'stages': ((2, 64, 1, 2), (4, 128, 1, 2), (2, 128, 1, 2))}"


def _tf_config(kind, index, cluster):
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})}


def test_worker_cluster_reads_tf_config():
    workers = {"worker": ["localhost:1", "localhost:2", "localhost:3"]}
    assert worker_cluster({}) == {"index": 0, "num_workers": 1, "is_chief": True}
    assert worker_cluster(_tf_config("worker", 0, workers)) == {"index": 0, "num_workers": 3, "is_chief": True}
    assert worker_cluster(_tf_config("worker", 2, workers)) == {"index": 2, "num_workers": 3, "is_chief": False}
    with_chief = {"chief": ["localhost:0"], **workers}
    assert worker_cluster(_tf_config("chief", 0, with_chief)) == {"index": 0, "num_workers": 4, "is_chief": True}
    assert worker_cluster(_tf_config("worker", 0, with_chief)) == {"index": 1, "num_workers": 4, "is_chief": False}


@pytest.mark.parametrize("text, message", [
    ("{not json", "must be JSON"),
    ('{"cluster": {"worker": ["a:1"]}}', "must be JSON"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "worker:3 is not in its cluster"),
])
def test_worker_cluster_rejects_bad_tf_config(text, message):
    with pytest.raises(ValueError, match=message):
        worker_cluster({"TF_CONFIG": text})


def test_unknown_strategy_is_named():
    assert "multiworker" in STRATEGIES
    with pytest.raises(ValueError, match="'ring'"):
        make_strategy("ring")


def test_global_batch_must_split_over_the_replicas(tmp_path):
    from kerasface.recipe import Recipe, apply_overrides
    from kerasface.training import train

    if len(__import__("tensorflow").config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs 2 logical CPUs (tests/conftest.py splits the CPU)")
    recipe = apply_overrides(Recipe(), ["data.batch_size=5", "train.strategy=mirrored"])
    with pytest.raises(ValueError, match="batch_size` 5 is the global batch and must split evenly over 2 replicas"):
        train(recipe, tmp_path / "run", verbose=0, print_fn=lambda *_: None)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_workers(data, out, epochs, ports):
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    processes = []
    for index in range(len(ports)):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **_tf_config("worker", index, cluster)}
        command = [
            sys.executable, "-m", "kerasface.cli.main", "train", "--data", str(data), "--out", str(out), "--quiet",
            "--strategy", "multiworker", "--epochs", str(epochs), "--batch-size", "8",
            "--set", "model.embedding_size=16", "--set", f"model.backbone_kwargs={TINY_BACKBONE}",
            "--set", "optimizer.momentum=0", "--set", "optimizer.weight_decay=0",
        ]
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                          text=True, start_new_session=True))
    return processes


def _wait(processes, timeout):
    errors = []
    for process in processes:
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            _, stderr = process.communicate()
        if process.returncode != 0:
            errors.append(stderr[-3000:])
    return errors


# Two worker processes on loopback, about a minute on 2 cores: run with -m slow.
@pytest.mark.slow
def test_two_workers_train_write_once_and_resume_after_a_worker_is_killed(tmp_path):
    from kerasface.data.synthetic_faces import write_synthetic_faces

    data = tmp_path / "faces"
    write_synthetic_faces(data, num_identities=6, images_per_identity=8, seed=0)
    out = tmp_path / "run"
    processes = _start_workers(data, out, 30, _free_ports(2))
    metadata = out / "backup" / "training_metadata.json"
    deadline = time.time() + 300
    while time.time() < deadline and all(p.poll() is None for p in processes):
        if metadata.exists() and json.loads(metadata.read_text() or "{}").get("epoch", 0) >= 2:
            break
        time.sleep(0.2)
    assert all(p.poll() is None for p in processes), [p.stderr.read()[-2000:] for p in processes if p.poll()]
    # Worker 1 dies; the chief then waits on its collectives and is stopped too, as a
    # cluster manager would restart the whole job.
    os.killpg(processes[1].pid, signal.SIGKILL)
    time.sleep(1.0)
    os.killpg(processes[0].pid, signal.SIGKILL)
    for process in processes:
        process.communicate()
    done = json.loads(metadata.read_text())["epoch"]
    assert 2 <= done < 30
    # Only the chief writes the backup and the checkpoints.
    assert not (out / "workers" / "1" / "backup").exists()
    assert not (out / "workers" / "1" / "checkpoints").exists() or not any((out / "workers" / "1" / "checkpoints").iterdir())

    errors = _wait(_start_workers(data, out, done + 1, _free_ports(2)), timeout=300)
    assert not errors, errors
    summary = json.loads((out / "summary.json").read_text())
    assert summary["initial_epoch"] == done and len(summary["history"]["loss"]) == 1
    assert summary["workers"] == 2 and summary["replicas"] == 2
    # The two workers end with the same weights (every step is all-reduced).
    chief = keras.saving.load_model(out / "model.keras")
    worker = keras.saving.load_model(out / "workers" / "1" / "model.keras")
    for a, b in zip(chief.weights, worker.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
