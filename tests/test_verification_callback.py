import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface.data.preprocessing import normalize_numpy
from kerasface.evaluation import evaluate_scores
from kerasface.evaluation.verification_set import VerificationSet
from kerasface.training import VerificationCallback

FARS = (0.1,)
EMBEDDING_SIZE = 8
NUM_CLASSES = 4


@pytest.fixture(scope="module")
def pairs_spec(tmp_path_factory):
    from kerasface.data.synthetic_faces import write_synthetic_faces, write_synthetic_pairs

    root = tmp_path_factory.mktemp("verification")
    write_synthetic_faces(root / "val", num_identities=6, images_per_identity=4, seed=3, workers=1)
    write_synthetic_pairs(root / "val", root / "val_pairs.txt", num_pairs=60, seed=3)
    return f"{root / 'val_pairs.txt'}:{root / 'val'}"


@pytest.fixture(scope="module")
def vset(pairs_spec):
    return VerificationSet.load(pairs_spec)


def _tiny_backbone(seed=0):
    keras.utils.set_random_seed(seed)
    images = keras.Input((112, 112, 3))
    x = keras.layers.AveragePooling2D(8)(images)
    x = keras.layers.Conv2D(4, 3, strides=2, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(images, keras.layers.Dense(EMBEDDING_SIZE, name="embedding")(x), name="tiny")


def _tiny_model(seed=0):
    """A classifier and its feature branch (sharing layers): ``(model, embedding model)``."""
    backbone = _tiny_backbone(seed)
    logits = keras.layers.Dense(NUM_CLASSES, name="logits")(backbone.output)
    return keras.Model(backbone.input, logits), backbone


def _compile(model, lr=0.05):
    model.compile(optimizer=keras.optimizers.SGD(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _train_data(num=32, seed=0):
    rng = np.random.default_rng(seed)
    images = normalize_numpy(rng.integers(0, 256, (num, 112, 112, 3), dtype=np.uint8))
    return images, rng.integers(0, NUM_CLASSES, num)


def _reference_metrics(embedding_model, vset, fars=FARS, flip=False):
    """What the callback must report, computed here without kerasface's embedding helpers."""
    pixels = vset.decoded().astype(np.float32)
    # float32 like the callback: float16 embeddings have many near-ties, which float64 arithmetic
    # here would order differently.
    embeddings = np.asarray(embedding_model(normalize_numpy(pixels), training=False), np.float32)
    if flip:
        embeddings = embeddings + np.asarray(
            embedding_model(normalize_numpy(pixels[:, :, ::-1]), training=False), np.float32)
    embeddings = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    scores = np.sum(embeddings[vset.pairs[:, 0]].astype(np.float64) * embeddings[vset.pairs[:, 1]], axis=1)
    result = evaluate_scores(scores, vset.issame, vset.folds, fars)
    return {"accuracy": result.accuracy, "auc": result.auc,
            **{f"tar@far={far:.0e}".replace("e-0", "e-"): result.tar_at_far[far].tar for far in fars}}


def _assert_metrics_equal(logged, expected, set_name):
    for name, value in expected.items():
        assert logged[f"val_{set_name}_{name}"] == pytest.approx(value, abs=1e-6), name


def test_epoch_metrics_in_logs_match_an_independent_evaluation(vset):
    model, embedder = _tiny_model()
    _compile(model)
    callback = VerificationCallback([vset], every_n_epochs=2, fars=FARS, flip=True, batch_size=7,
                                    embedding_model=embedder, verbose=0)
    x, y = _train_data()
    history = model.fit(x, y, batch_size=8, epochs=4, callbacks=[callback], verbose=0)
    assert callback.monitor == "val_val_pairs_accuracy"
    # Evaluated after epochs 2 and 4 only, at global steps 8 and 16.
    assert [(e["epoch"], e["step"]) for e in callback.evaluations] == [(2, 8), (4, 16)]
    assert len(history.history["val_val_pairs_accuracy"]) == 2
    assert set(history.history) >= {"val_val_pairs_auc", "val_val_pairs_tar@far=1e-1"}
    _assert_metrics_equal(callback.evaluations[-1]["metrics"],
                          _reference_metrics(embedder, vset, flip=True), "val_pairs")
    # The weights moved between the two evaluations and so did the metrics: the equality above
    # does not come from evaluating a stale copy of the model.
    assert callback.evaluations[0]["metrics"] != callback.evaluations[1]["metrics"]


def test_step_cadence_is_global_and_survives_a_resume(vset):
    model, embedder = _tiny_model()
    _compile(model)
    x, y = _train_data(num=40)  # 5 steps per epoch
    callback = VerificationCallback([vset], every_n_steps=3, fars=FARS, embedding_model=embedder, verbose=0)
    model.fit(x, y, batch_size=8, epochs=2, callbacks=[callback], verbose=0)
    # Steps 3, 6, 9 on the cadence, then the final weights at step 10.
    assert [(e["epoch"], e["step"]) for e in callback.evaluations] == [(1, 3), (2, 6), (2, 9), (2, 10)]
    # A new fit (as after a restart) continues from the optimizer's 10 steps.
    resumed = VerificationCallback([vset], every_n_steps=3, fars=FARS, embedding_model=embedder, verbose=0,
                                   evaluate_at_end=False)
    history = model.fit(x, y, batch_size=8, epochs=4, initial_epoch=2, callbacks=[resumed], verbose=0)
    assert [(e["epoch"], e["step"]) for e in resumed.evaluations] == [(3, 12), (3, 15), (4, 18)]
    # Each epoch's logs carry that epoch's latest evaluation.
    assert history.history["val_val_pairs_accuracy"] == [
        resumed.evaluations[i]["metrics"]["val_val_pairs_accuracy"] for i in (1, 2)]


def _forced(callback, values):
    """Make `evaluate` return the given selected-metric values in turn (real evaluation skipped)."""
    values = iter(values)

    def evaluate():
        return {"val_val_pairs_accuracy": next(values), "val_val_pairs_auc": 0.5,
                "val_val_pairs_tar@far=1e-1": 0.0}

    callback.evaluate = evaluate
    return callback


def test_best_checkpoint_only_on_improvement_and_resume_keeps_the_better_one(vset, tmp_path, monkeypatch):
    best = tmp_path / "run" / "best.keras"
    record_path = tmp_path / "run" / "best.json"
    model, _ = _tiny_model()
    _compile(model)
    x, y = _train_data(num=8)  # 1 step per epoch
    saved = []
    original_save = model.save

    def save(path, *args, **kwargs):
        saved.append(np.array(model.get_layer("conv").kernel))
        original_save(path, *args, **kwargs)

    monkeypatch.setattr(model, "save", save)
    lines = []
    callback = _forced(VerificationCallback([vset], fars=FARS, best_path=best, print_fn=lines.append),
                       [0.6, 0.8, 0.7])
    model.fit(x, y, batch_size=8, epochs=3, callbacks=[callback], verbose=0)
    assert len(saved) == 2  # after epochs 1 and 2; epoch 3's 0.7 is worse than 0.8
    record = json.loads(record_path.read_text())
    assert (record["value"], record["epoch"], record["step"], record["metric"]) == (0.8, 2, 2, "accuracy")
    assert record["metrics"] == {"val_val_pairs_accuracy": 0.8, "val_val_pairs_auc": 0.5,
                                 "val_val_pairs_tar@far=1e-1": 0.0}
    assert callback.best == 0.8 and sum("saved" in line for line in lines) == 2
    restored = keras.saving.load_model(best)
    np.testing.assert_array_equal(np.array(restored.get_layer("conv").kernel), saved[-1])
    assert not np.array_equal(saved[-1], np.array(model.get_layer("conv").kernel))  # not the last weights
    assert sorted(p.name for p in best.parent.iterdir()) == ["best.json", "best.keras"]  # no partial files

    # A resumed run whose evaluation is worse than the recorded best keeps the checkpoint...
    again = _forced(VerificationCallback([vset], fars=FARS, best_path=best, verbose=0), [0.75, 0.9])
    model.fit(x, y, batch_size=8, epochs=4, initial_epoch=3, callbacks=[again], verbose=0)
    assert len(saved) == 2 and json.loads(record_path.read_text())["value"] == 0.8 and again.best == 0.8
    # ... and replaces it with a better one.
    model.fit(x, y, batch_size=8, epochs=5, initial_epoch=4, callbacks=[again], verbose=0)
    assert len(saved) == 3 and json.loads(record_path.read_text())["value"] == 0.9

    # A record made for another selection metric cannot be compared: start over, and say so.
    lines.clear()
    other = _forced(VerificationCallback([vset], metric="val_pairs/auc", fars=FARS, best_path=best,
                                         print_fn=lines.append), [0.1])
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[other], verbose=0)
    assert "chosen by 'accuracy'" in lines[0]
    assert len(saved) == 4 and json.loads(record_path.read_text())["metric"] == "val_pairs/auc"


def test_tensorboard_scalars_at_the_global_step(vset, tmp_path):
    model, embedder = _tiny_model()
    _compile(model)
    x, y = _train_data(num=16)
    second = VerificationSet.load(f"second={vset.source}:{vset.root}")
    callback = VerificationCallback([vset, second], every_n_steps=2, fars=FARS, log_dir=tmp_path / "tb",
                                    embedding_model=embedder, verbose=0)
    model.fit(x, y, batch_size=8, epochs=2, callbacks=[callback], verbose=0)
    scalars = {}
    for path in (tmp_path / "tb").glob("*tfevents*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                scalars[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    assert [e["step"] for e in callback.evaluations] == [2, 4]
    assert len(scalars) == 2 * 3 * 3
    for evaluation in callback.evaluations:
        for set_name in ("val_pairs", "second", "mean"):
            for name in ("accuracy", "auc", "tar@far=1e-1"):
                assert scalars[(f"verification/{set_name}/{name}", evaluation["step"])] == pytest.approx(
                    evaluation["metrics"][f"val_{set_name}_{name}"]), (set_name, name)
    metrics = callback.evaluations[-1]["metrics"]
    assert metrics["val_mean_auc"] == pytest.approx((metrics["val_val_pairs_auc"] + metrics["val_second_auc"]) / 2)
    assert callback.monitor == "val_mean_accuracy"


def test_bad_metric_and_bad_set_specs_fail_before_training(vset, tmp_path):
    with pytest.raises(ValueError, match=r"`metric` 'acc' is not one of \['accuracy', 'auc', 'tar@far=1e-1'"):
        VerificationCallback([vset], metric="acc", fars=FARS)
    with pytest.raises(ValueError, match="'lfw/accuracy' is not one of .*'val_pairs/accuracy'"):
        VerificationCallback([vset], metric="lfw/accuracy", fars=FARS)
    with pytest.raises(ValueError, match="'tar@far=1e-4' is not one of"):
        VerificationCallback([vset], metric="tar@far=1e-4", fars=FARS)
    # 30 impostor pairs cannot measure FAR 1e-3.
    with pytest.raises(ValueError, match="'val_pairs' .* has 30 impostor pairs, too few .* FAR 0.001"):
        VerificationCallback([vset], metric="tar@far=0.001", fars=(1e-3,))
    assert VerificationCallback([vset], metric="val_pairs/TAR@FAR=0.1", fars=FARS).monitor == \
        "val_val_pairs_tar@far=1e-1"
    missing = f"{tmp_path / 'nope.txt'}:/x"
    with pytest.raises(FileNotFoundError, match=re.escape(f"cannot load verification set {missing!r}")):
        VerificationCallback([vset, missing])
    with pytest.raises(ValueError, match=r"several sets are named \['val_pairs'\]"):
        VerificationCallback([vset, vset])
    with pytest.raises(ValueError, match="not both"):
        VerificationCallback([vset], every_n_epochs=1, every_n_steps=5)
    with pytest.raises(ValueError, match="`every_n_steps` must be an int >= 1, got 0"):
        VerificationCallback([vset], every_n_steps=0)


def _tiny_face_recognizer():
    from kerasface import heads
    from kerasface.models.face_recognizer import FaceRecognizer

    model = FaceRecognizer(_tiny_backbone(), heads.get("arcface", num_classes=NUM_CLASSES), name="tiny_fr")
    model.build((None, 112, 112, 3))
    return _compile(model)


def test_mirrored_strategy_and_mixed_precision_give_the_single_device_metrics(vset):
    from kerasface.testing.mirrored_check import mirrored_strategy

    x, y = _train_data(num=16)
    with mirrored_strategy().scope():
        model = _tiny_face_recognizer()
    before = _reference_metrics(model.embedding_model, vset)
    # Default embedding model: the FaceRecognizer's `embedding_model`.
    callback = VerificationCallback([vset], fars=FARS, verbose=0)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[callback], verbose=0)
    single = _tiny_face_recognizer()
    single.set_weights(model.get_weights())
    after = _reference_metrics(single.embedding_model, vset)
    assert after != before  # the evaluation has to see the trained replicated weights
    _assert_metrics_equal(callback.evaluations[0]["metrics"], after, "val_pairs")

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model, embedder = _tiny_model()
        assert embedder.output.dtype == "float16"
        # Outside fit (no training step to trace): the evaluation is what depends on the dtype.
        callback = VerificationCallback([vset], fars=FARS, embedding_model=embedder, verbose=0)
        callback.set_model(model)
        metrics = callback.evaluate()
        reference = _reference_metrics(embedder, vset)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    _assert_metrics_equal(metrics, reference, "val_pairs")


def test_train_with_recipe_eval_sets_keeps_the_best_checkpoint(vset, pairs_spec, tmp_path):
    from kerasface.evaluation.set_evaluation import evaluate_set
    from kerasface.models import load_embedding_model
    from kerasface.recipe import Recipe, apply_overrides
    from kerasface.training import train

    # Trains on the set's own images: the test is about the plumbing, not generalisation.
    recipe = apply_overrides(Recipe(), [
        f"data.root={vset.root}", "data.batch_size=8", "train.epochs=3", "train.steps_per_epoch=1",
        "model.backbone=mobilenet_v1", "model.embedding_size=16",
        "model.backbone_kwargs={'width_multiplier': 0.25, 'blocks': ((16, 2),), 'neck': 'gap', 'activation': 'relu'}",
        f"eval.sets=['{pairs_spec}']", "eval.metric=val_pairs/auc", "optimizer.lr=0.5",
        # Plain SGD: momentum and weight decay triple the time to trace the training step.
        "optimizer.momentum=0", "optimizer.weight_decay=0",
    ])
    assert recipe.eval.sets == (pairs_spec,)
    run = tmp_path / "run"
    lines = []
    train(recipe, run, verbose=0, print_fn=lines.append)
    summary = json.loads((run / "summary.json").read_text())
    aucs = summary["history"]["val_val_pairs_auc"]
    assert len(aucs) == 3
    best = summary["verification"]["best"]
    assert best["value"] == max(aucs) and best["epoch"] == 1 + aucs.index(max(aucs))
    assert best["step"] == best["epoch"] and best["metric"] == "val_pairs/auc"
    assert json.loads((run / "best.json").read_text()) == best
    assert any((run / "logs" / "verification").glob("*tfevents*"))
    assert any(line.startswith("verification val_pairs (epoch 1, step 1)") for line in lines)
    # The checkpoint is the model that scored the recorded value.
    evaluation = evaluate_set(load_embedding_model(run / "best.keras"), vset)
    assert evaluation.result.auc == pytest.approx(best["value"], abs=1e-6)

    with pytest.raises(FileNotFoundError, match="cannot load verification set 'missing.txt:/x'"):
        train(apply_overrides(recipe, ["eval.sets=missing.txt:/x"]), tmp_path / "bad", verbose=0,
              print_fn=lambda *_: None)
    assert not (tmp_path / "bad" / "recipe.json").exists()  # failed before any training set-up
