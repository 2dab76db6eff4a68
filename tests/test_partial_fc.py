"""Partial FC (sampled class centres, target-first logits) and LazySGD (row-sparse updates)."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface import heads
from kerasface.heads.partial_fc_head import EXCLUDED_LOGIT
from kerasface.testing import check_mirrored, run_all_checks
from kerasface.training import LazySGD

C, D, B = 40, 8, 6


def _unit(x, axis):
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


def _arcface_target_first(embeddings, rows, local_labels, scale=64.0, margin=0.5):
    """NumPy ArcFace over the given centre rows, laid out target-first (float64)."""
    cos = np.clip(_unit(embeddings.astype(np.float64), 1) @ _unit(rows.astype(np.float64), 1).T, -1, 1)
    index = np.arange(len(local_labels))
    theta = np.arccos(cos[index, local_labels])
    target = np.where(theta + margin < np.pi, np.cos(theta + margin), cos[index, local_labels] - margin * np.sin(margin))
    # insightface's "easy_margin=False" fallback past pi - m; ArcFaceHead documents the same rule.
    negatives = cos.copy()
    negatives[index, local_labels] = EXCLUDED_LOGIT
    return scale * np.concatenate([target[:, None], negatives], axis=1)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(B, D)).astype(np.float32)
    labels = np.array([3, 17, 17, 39, 0, 25], np.int32)
    return embeddings, labels


def _built_head(sample_rate=0.25, seed=0, head="arcface"):
    layer = heads.PartialFCHead(head, num_classes=C, sample_rate=sample_rate, seed=seed)
    layer.build([(B, D), (B,)])
    return layer


def test_sample_keeps_every_positive_and_k_centres():
    layer = _built_head(sample_rate=0.25)
    embeddings, labels = _batch()
    index = layer.sample(tf.constant(labels)).numpy()
    assert len(index) == math.ceil(0.25 * C) == layer.num_sampled(B)
    assert np.all(np.diff(index) > 0) and index.min() >= 0 and index.max() < C
    assert set(labels) <= set(index)
    # The draw moves with the step counter, and with the seed.
    layer.sample_step.assign(1)
    assert not np.array_equal(layer.sample(tf.constant(labels)).numpy(), index)
    other = _built_head(sample_rate=0.25, seed=7)
    assert not np.array_equal(other.sample(tf.constant(labels)).numpy(), index)
    # Never fewer centres than the batch, so the positives always fit.
    assert _built_head(sample_rate=0.01).num_sampled(B) == B


def test_training_logits_match_numpy_over_the_sampled_rows():
    layer = _built_head(sample_rate=0.25)
    embeddings, labels = _batch()
    index = layer.sample(tf.constant(labels)).numpy()  # the draw of step 0, which the call repeats
    logits = layer([embeddings, labels], training=True).numpy()
    assert layer.sample_step.numpy() == 1
    assert logits.shape == (B, 1 + len(index)) and logits.dtype == np.float32
    kernel = layer.kernel.numpy()
    local = np.searchsorted(index, labels)
    expected = _arcface_target_first(embeddings, kernel[index], local)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-4)


def test_full_rate_and_inference_equal_the_dense_head():
    embeddings, labels = _batch()
    layer = _built_head(sample_rate=1.0)
    dense = heads.get("arcface", num_classes=C)
    dense.build([(B, D), (B,)])
    dense.kernel.assign(layer.kernel.numpy().T)
    dense_logits = dense([embeddings, labels], training=True).numpy()
    rows = np.arange(B)
    for training in (True, False):
        logits = layer([embeddings, labels], training=training).numpy()
        np.testing.assert_allclose(logits[:, 0], dense_logits[rows, labels], rtol=1e-5, atol=1e-4)
        others = logits[:, 1:].copy()
        others[rows, labels] = dense_logits[rows, labels]  # put the excluded column back for comparison
        expected = dense_logits.copy()
        np.testing.assert_allclose(others, expected, rtol=1e-5, atol=1e-4)
        assert np.all(logits[rows, 1 + labels] == EXCLUDED_LOGIT * 64.0)
    np.testing.assert_allclose(layer(embeddings).numpy(), dense(embeddings).numpy(), rtol=1e-5, atol=1e-4)
    # A small rate still uses every centre outside training.
    assert _built_head(sample_rate=0.1)([embeddings, labels]).shape == (B, 1 + C)


def test_kernel_gradient_is_row_sparse_and_matches_numpy():
    layer = _built_head(sample_rate=0.25)
    embeddings, labels = _batch()
    index = layer.sample(tf.constant(labels)).numpy()
    with tf.GradientTape() as tape:
        logits = layer([embeddings, labels], training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(tf.zeros(B, "int32"), logits, from_logits=True))
    (gradient,) = tape.gradient(loss, [layer.kernel])
    assert isinstance(gradient, tf.IndexedSlices)
    assert gradient.values.shape == (len(index), D)
    np.testing.assert_array_equal(np.sort(gradient.indices.numpy()), index)
    # The loss is the softmax cross-entropy with the target in column 0.
    expected = _arcface_target_first(embeddings, layer.kernel.numpy()[index], np.searchsorted(index, labels))
    expected = expected - expected.max(axis=1, keepdims=True)
    reference = np.mean(-expected[:, 0] + np.log(np.exp(expected).sum(axis=1)))
    np.testing.assert_allclose(float(loss), reference, rtol=1e-5)


@pytest.mark.parametrize("name", ["arcface", "cosface", "curricularface", "npcface"])
def test_wraps_margin_heads(name):
    layer = heads.PartialFCHead(name, num_classes=C, sample_rate=0.25)
    embeddings, labels = _batch()
    with tf.GradientTape() as tape:
        logits = layer([tf.constant(embeddings), labels], training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(tf.zeros(B, "int32"), logits, from_logits=True))
    gradients = tape.gradient(loss, layer.trainable_weights)
    assert logits.shape == (B, 11) and np.isfinite(float(loss))
    assert all(g is not None for g in gradients)
    assert [w.name for w in layer.trainable_weights] == ["kernel"]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="sample_rate.*got 0"):
        heads.PartialFCHead("arcface", num_classes=C, sample_rate=0)
    with pytest.raises(ValueError, match="sample_rate.*got 1.5"):
        heads.PartialFCHead("arcface", num_classes=C, sample_rate=1.5)
    with pytest.raises(ValueError, match="SubCenterArcFaceHead"):
        heads.PartialFCHead("subcenter_arcface", num_classes=C)
    with pytest.raises(ValueError, match="SoftmaxHead"):
        heads.PartialFCHead("softmax", num_classes=C)
    with pytest.raises(ValueError, match="needs `num_classes`"):
        heads.PartialFCHead("arcface")
    with pytest.raises(ValueError, match=r"`num_classes` \(5\) differs"):
        heads.PartialFCHead(heads.get("arcface", num_classes=C), num_classes=5)
    built = heads.get("arcface", num_classes=C)
    built.build([(None, D), (None,)])
    with pytest.raises(ValueError, match="already built"):
        heads.PartialFCHead(built)
    layer = _built_head()
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes=40"):
        layer([np.zeros((2, D), np.float32), np.array([1, 40], np.int32)], training=True)
    with pytest.raises(TypeError, match="PartialFCHead"):
        heads.DatasetAwareHead(layer, dataset_num_classes=[20, 20])


def test_shared_checks(tmp_path):
    embeddings, labels = _batch()
    inputs = [np.concatenate([embeddings, embeddings[:2]]), np.concatenate([labels, labels[:2]])]
    run_all_checks(
        lambda: heads.PartialFCHead("arcface", num_classes=C, sample_rate=0.25),
        inputs,
        tmp_path,
        call_kwargs={"training": True},
        skip=("mirrored",),
        # XLA draws other random numbers than TF's kernels (as for Dropout): compare the
        # deterministic path there, and check the sampled one under XLA below.
        # Gradients carry the scale s=64: float32 rounding of the two compilations differs by ~1e-4.
        options={"xla": {"call_kwargs": {"training": False}, "gradient_atol": 2e-4}},
    )
    layer = heads.PartialFCHead("arcface", num_classes=C, sample_rate=0.25)
    layer.build([(8, D), (8,)])
    compiled = tf.function(lambda x, y: layer([x, y], training=True), jit_compile=True)
    for step in (1, 2):
        logits = compiled(*inputs).numpy()
        assert logits.shape == (8, 1 + 10) and np.isfinite(logits[:, 0]).all()
        assert layer.sample_step.numpy() == step
    # Each replica draws its own subset (the replica id seeds it), so one device and two
    # replicas agree only without sampling; the target-first loss takes label 0.
    check_mirrored(
        lambda: heads.PartialFCHead("arcface", num_classes=C, sample_rate=1.0),
        inputs,
        targets=np.zeros(len(inputs[1]), np.int32),
        call_kwargs={"training": True},
    )


# ---------------------------------------------------------------- LazySGD


def _variable(values):
    variable = keras.Variable(values, name="rows")
    return variable


def test_lazy_sgd_updates_only_touched_rows_against_numpy():
    rng = np.random.default_rng(0)
    start = rng.normal(size=(6, 3)).astype(np.float32)
    variable = _variable(start)
    optimizer = LazySGD(learning_rate=0.1, momentum=0.9, weight_decay=0.01)
    optimizer.build([variable])
    w, m = start.astype(np.float64), np.zeros((6, 3))
    steps = [(np.array([1, 4, 1]), rng.normal(size=(3, 3))), (np.array([4, 2]), rng.normal(size=(2, 3)))]
    for indices, values in steps:
        gradient = tf.IndexedSlices(tf.constant(values, tf.float32), tf.constant(indices), tf.constant([6, 3]))
        optimizer.apply([gradient], [variable])
        summed = np.zeros((6, 3))
        np.add.at(summed, indices, values)
        for row in np.unique(indices):
            w[row] -= 0.1 * 0.01 * w[row]
            m[row] = 0.9 * m[row] - 0.1 * summed[row]
            w[row] += m[row]
    np.testing.assert_allclose(variable.numpy(), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(optimizer.momentums[0].numpy(), m, rtol=1e-5, atol=1e-6)
    # Rows 0, 3 and 5 were never touched: neither they nor their momentum moved.
    np.testing.assert_array_equal(variable.numpy()[[0, 3, 5]], start[[0, 3, 5]])


def test_keras_sgd_moves_rows_the_sparse_gradient_never_touched():
    # What LazySGD avoids: Keras' SGD (like torch's in insightface's Partial FC v2) decays and
    # moves every row through its momentum, sampled or not.
    start = np.ones((4, 2), np.float32)
    lazy, dense = _variable(start), _variable(start)
    lazy_sgd = LazySGD(learning_rate=0.1, momentum=0.9, weight_decay=0.01)
    keras_sgd = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, weight_decay=0.01)
    for indices in ([0], [1]):
        gradient = tf.IndexedSlices(tf.ones((1, 2)), tf.constant(indices), tf.constant([4, 2]))
        lazy_sgd.apply([gradient], [lazy])
        keras_sgd.apply([gradient], [dense])
    assert np.array_equal(lazy.numpy()[2:], start[2:])
    assert not np.array_equal(dense.numpy()[2:], start[2:])  # weight decay reached them
    assert not np.allclose(lazy.numpy()[0], dense.numpy()[0])  # and row 0 kept moving with momentum


@pytest.mark.parametrize("nesterov", [False, True])
def test_lazy_sgd_dense_gradients_equal_keras_sgd(nesterov):
    rng = np.random.default_rng(1)
    start = rng.normal(size=(5, 3)).astype(np.float32)
    ours, theirs = _variable(start), _variable(start)
    kwargs = dict(learning_rate=0.05, momentum=0.9, nesterov=nesterov, weight_decay=0.001)
    lazy_sgd, keras_sgd = LazySGD(**kwargs), keras.optimizers.SGD(**kwargs)
    for _ in range(3):
        gradient = tf.constant(rng.normal(size=(5, 3)), tf.float32)
        lazy_sgd.apply([gradient], [ours])
        keras_sgd.apply([gradient], [theirs])
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6, atol=1e-7)


def test_lazy_sgd_applies_weight_decay_multipliers_to_sparse_rows():
    variable = _variable(np.ones((3, 2), np.float32))
    optimizer = LazySGD(learning_rate=0.1, momentum=0.0, weight_decay=0.01, weight_decay_multipliers={"rows": 10.0})
    gradient = tf.IndexedSlices(tf.zeros((1, 2)), tf.constant([2]), tf.constant([3, 2]))
    optimizer.apply([gradient], [variable])
    np.testing.assert_allclose(variable.numpy()[2], 1.0 - 0.1 * 0.01 * 10.0, rtol=1e-6)
    np.testing.assert_array_equal(variable.numpy()[:2], 1.0)
    restored = LazySGD.from_config(optimizer.get_config())
    assert restored.weight_decay_multipliers == {"rows": 10.0}


def test_partial_fc_recipe_trains_with_lazy_sgd(tmp_path):
    from kerasface.data.synthetic_faces import write_synthetic_faces
    from kerasface.recipe import Recipe, apply_overrides
    from kerasface.training import train

    faces = tmp_path / "faces"
    write_synthetic_faces(faces, num_identities=12, images_per_identity=4, seed=0)
    tiny = "{'width_multiplier': 0.25, 'neck_channels': 32, 'stages': ((2, 64, 1, 2), (2, 128, 1, 2))}"
    recipe = apply_overrides(Recipe(), [
        f"data.root={faces}", "data.batch_size=4", "train.epochs=1", "model.embedding_size=16",
        f"model.backbone_kwargs={tiny}", "head.sample_rate=0.25", "train.steps_per_epoch=4",
        "optimizer.lr_reference_batch=16",
    ])
    result = train(recipe, tmp_path / "run", verbose=0, print_fn=lambda *_: None)
    # Linear scaling: lr 0.1 is for a batch of 16, this run's batch is 4.
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["learning_rate"] == pytest.approx(0.025)
    model = result.model
    assert isinstance(model.optimizer, LazySGD) and isinstance(model.head, heads.PartialFCHead)
    assert model.head.sample_step.numpy() == 4 and model.head.num_sampled(4) == 4
    assert np.isfinite(result.history["loss"]).all()
    reloaded = keras.saving.load_model(tmp_path / "run" / "model.keras")
    np.testing.assert_array_equal(reloaded.head.kernel.numpy(), model.head.kernel.numpy())
    with pytest.raises(ValueError, match="Partial FC.*class_balanced"):
        train(apply_overrides(recipe, ["train.loss=class_balanced"]), tmp_path / "bad", verbose=0,
              print_fn=lambda *_: None)


def test_large_kernels_are_initialised_block_by_block(monkeypatch):
    import kerasface.heads.partial_fc_head as module

    monkeypatch.setattr(module, "INIT_BLOCK_ROWS", 16)  # C = 40: blocks of 16, 16 and 8 rows
    layer = heads.PartialFCHead(heads.get("arcface", num_classes=C, kernel_initializer="random_normal"))
    layer.build([(B, D), (B,)])
    kernel = layer.kernel.numpy()
    assert kernel.shape == (C, D)
    assert np.all(np.any(kernel != 0, axis=1))  # every block filled, the last partial one too
    assert len(np.unique(kernel[:, 0])) == C  # blocks are independent draws
    assert 0.02 < kernel.std() < 0.1  # random_normal's stddev 0.05
