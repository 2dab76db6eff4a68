import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from kerasface.recipe import OptimizerConfig, Recipe, apply_overrides, load_recipe
from kerasface.training import build_lr_schedule

TINY_BACKBONE = "{'width_multiplier': 0.25, 'neck_channels': 32, 'stages': ((2, 64, 1, 2), (4, 128, 1, 2), (2, 128, 1, 2))}"


def test_overrides_parse_and_type_check():
    recipe = apply_overrides(Recipe(), ["optimizer.lr=0.2", "train.epochs=3", "head.margin=0.3",
                                        "optimizer.decay_epochs=[2, 4]", "data.root=/x", "optimizer.weight_decay=0"])
    assert recipe.optimizer.lr == 0.2 and recipe.train.epochs == 3 and recipe.head.margin == 0.3
    assert recipe.optimizer.decay_epochs == (2, 4) and recipe.data.root == "/x"
    assert recipe.optimizer.weight_decay == 0.0 and isinstance(recipe.optimizer.weight_decay, float)
    with pytest.raises(ValueError, match="OptimizerConfig has no field 'lrr'"):
        apply_overrides(Recipe(), ["optimizer.lrr=0.2"])
    with pytest.raises(ValueError, match="expected int, got str 'many'"):
        apply_overrides(Recipe(), ["train.epochs=many"])
    with pytest.raises(ValueError, match="must look like section.field=value, got 'lr'"):
        apply_overrides(Recipe(), ["lr"])
    with pytest.raises(ValueError, match="'optimizer' is a section"):
        apply_overrides(Recipe(), ["optimizer=1"])


def test_head_kwargs_and_default_scale_reach_the_head():
    from kerasface.training import build_face_recognizer

    recipe = apply_overrides(Recipe(), ["head.name='cosface'", "head.scale=None", "head.kwargs={'margin': 0.2}",
                                        f"model.backbone_kwargs={TINY_BACKBONE}", "model.embedding_size=16"])
    head = build_face_recognizer(recipe, num_classes=7).head
    assert head.margin == 0.2 and head.scale == 64.0 and head.num_classes == 7  # CosFace's paper scale
    with pytest.raises(ValueError, match="bogus"):
        build_face_recognizer(apply_overrides(recipe, ["head.kwargs={'bogus': 1}"]), num_classes=7)


def test_recipe_files_load():
    recipe = load_recipe("arcface")
    assert recipe.head.name == "arcface" and recipe.head.margin == 0.5
    with pytest.raises(FileNotFoundError, match="recipe 'nope'"):
        load_recipe("nope")


def test_lr_schedules():
    cosine = build_lr_schedule(OptimizerConfig(lr=0.1, schedule="cosine", warmup_epochs=1), steps_per_epoch=10, epochs=5)
    values = np.array([float(cosine(step)) for step in range(50)])
    assert values[0] == pytest.approx(0.0, abs=1e-7)
    assert values[10] == pytest.approx(0.1, rel=1e-5)
    assert np.all(np.diff(values[:10]) > 0) and np.all(np.diff(values[10:]) < 0)
    # Cosine from lr to 0 over the 40 post-warm-up steps.
    assert values[30] == pytest.approx(0.1 * 0.5 * (1 + np.cos(np.pi * 20 / 40)), rel=1e-4)
    piecewise = build_lr_schedule(
        OptimizerConfig(lr=0.1, schedule="piecewise", decay_epochs=(2, 4), decay_factor=0.1), steps_per_epoch=10, epochs=5
    )
    assert [float(piecewise(s)) for s in (0, 20, 21, 40, 41)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
    with pytest.raises(ValueError, match="`schedule` must be 'cosine' or 'piecewise', got 'step'"):
        build_lr_schedule(OptimizerConfig(schedule="step"), 10, 5)


@pytest.fixture(scope="module")
def tiny_faces(tmp_path_factory):
    from kerasface.data.synthetic_faces import write_synthetic_faces

    root = tmp_path_factory.mktemp("faces")
    write_synthetic_faces(root, num_identities=6, images_per_identity=8, seed=0)
    return root


def _train_command(data, out, epochs):
    return [
        sys.executable, "-m", "kerasface.cli.main", "train", "--data", str(data), "--out", str(out), "--quiet",
        "--epochs", str(epochs), "--batch-size", "8", "--set", "model.embedding_size=16",
        "--set", f"model.backbone_kwargs={TINY_BACKBONE}",
        # Plain SGD traces its training step ~3x faster; resuming momentum slots is covered in-process.
        "--set", "optimizer.momentum=0", "--set", "optimizer.weight_decay=0",
    ]


def test_train_writes_a_resumable_run(tiny_faces, tmp_path):
    from kerasface.training import train

    recipe = apply_overrides(Recipe(), [
        f"data.root={tiny_faces}", "data.batch_size=8", "train.epochs=2", "model.embedding_size=16",
        f"model.backbone_kwargs={TINY_BACKBONE}",
    ])
    result = train(recipe, tmp_path / "run", verbose=0, print_fn=lambda *_: None)
    run = tmp_path / "run"
    for name in ("model.keras", "embedding.keras", "label_map.json", "recipe.json", "summary.json",
                 "checkpoints/epoch_001.keras", "checkpoints/epoch_002.keras", "backup/training_metadata.json"):
        assert (run / name).exists(), name
    assert json.loads((run / "label_map.json").read_text()) == {f"id_{i:04d}": i for i in range(6)}
    assert result.model.optimizer.iterations.numpy() == 2 * (48 // 8)
    assert len(result.history["loss"]) == 2
    assert any((run / "logs").rglob("*tfevents*"))
    # Running the finished run again trains nothing more: the backup says all epochs are done.
    again = train(recipe, run, verbose=0, print_fn=lambda *_: None)
    assert again.initial_epoch == 2 and again.model.optimizer.iterations.numpy() == 12


# Two training processes, 45-60 s on 2 cores: run with -m slow. The default suite checks resume
# from the same backup in-process (test_train_writes_a_resumable_run).
@pytest.mark.slow
def test_resume_after_kill_mid_run(tiny_faces, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(_train_command(tiny_faces, out, 40), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)
    metadata = out / "backup" / "training_metadata.json"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if metadata.exists() and json.loads(metadata.read_text() or "{}").get("epoch", 0) >= 2:
            break
        time.sleep(0.2)
    assert process.poll() is None, process.stderr.read().decode()[-2000:]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done = json.loads(metadata.read_text())["epoch"]
    assert 2 <= done < 40

    # Same command, fewer epochs so the test stays short: it must continue after `done`.
    command = _train_command(tiny_faces, out, done + 1)
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["initial_epoch"] == done
    assert len(summary["history"]["loss"]) == 1
