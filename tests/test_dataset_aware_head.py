import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface import heads
from kerasface.heads.dataset_aware_head import MASKED_LOGIT, DatasetAwareHead
from kerasface.models import FaceRecognizer
from kerasface.testing import run_all_checks

COUNTS = [3, 3, 4]  # datasets own labels 0-2, 3-5, 6-9
# Written out by hand, independent of the layer's range arithmetic.
CLASS_DATASET = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
LABELS = np.array([0, 2, 3, 5, 6, 9, 9, 4], dtype=np.int32)  # both ends of every range
ENTROPY = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)


def _inner(name, num_classes=10):
    kwargs = {"arcface": {"margin": 0.5, "scale": 64.0}, "cosface": {"margin": 0.35, "scale": 30.0}}[name]
    return heads.get(name, num_classes=num_classes, **kwargs)


def _batch(labels=LABELS, dim=16, seed=0):
    """Random kernel and embeddings; once that kernel is assigned to the head, sample 0 sits
    exactly on its class centre (theta = 0) and sample 1 exactly opposite it (theta = pi)."""
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=(dim, 10)).astype(np.float32)
    embeddings = rng.normal(size=(len(labels), dim)).astype(np.float32)
    embeddings[0] = 3.0 * kernel[:, labels[0]]
    embeddings[1] = -0.5 * kernel[:, labels[1]]
    return embeddings, np.asarray(labels, np.int32), kernel


def _wrapped(name, p=0.0, seed=1, counts=COUNTS):
    inner = _inner(name, sum(counts))
    return DatasetAwareHead(inner, dataset_num_classes=counts, crossing_dropout_p=p, seed=seed)


def _reference_loss(name, embeddings, labels, kernel):
    """DAIL eq. 3-4 in float64: softmax over the target and the same-dataset negatives only."""
    x = embeddings.astype(np.float64)
    w = kernel.astype(np.float64)
    cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0, keepdims=True))
    cos = np.clip(cos, -1.0, 1.0)
    losses = []
    for i, y in enumerate(labels):
        if name == "arcface":
            s, m = 64.0, 0.5
            theta = np.arccos(cos[i, y])
            # Past theta + m > pi ArcFace continues monotonically (the head's documented fallback).
            target = s * (np.cos(theta + m) if theta + m <= math.pi else cos[i, y] - m * math.sin(m))
        else:
            s, m = 30.0, 0.35
            target = s * (cos[i, y] - m)
        same = [j for j in range(10) if j != y and CLASS_DATASET[j] == CLASS_DATASET[y]]
        terms = np.concatenate([[target], s * cos[i, same]])
        top = terms.max()
        losses.append(-(target - top - np.log(np.sum(np.exp(terms - top)))))
    return np.array(losses)


@pytest.mark.parametrize("name", ["arcface", "cosface"])
@pytest.mark.parametrize("training", [True, False])
def test_p0_is_the_dataset_aware_loss_of_eq_3_4(name, training):
    embeddings, labels, kernel = _batch()
    head = _wrapped(name, p=0.0)
    head([embeddings, labels])
    head.kernel.assign(kernel)
    logits = head([embeddings, labels], training=training).numpy()
    assert logits.dtype == np.float32 and logits.shape == (8, 10)
    np.testing.assert_allclose(ENTROPY(labels, logits).numpy(), _reference_loss(name, embeddings, labels, kernel),
                               rtol=1e-4, atol=1e-4)
    other = CLASS_DATASET[None, :] != CLASS_DATASET[labels][:, None]
    assert np.all(logits[other] == MASKED_LOGIT)
    # Same-dataset entries are the wrapped head's margin logits, untouched.
    plain = head.head([embeddings, labels]).numpy()
    np.testing.assert_array_equal(logits[~other], plain[~other])


@pytest.mark.parametrize("name", ["arcface", "cosface"])
def test_p1_and_a_single_dataset_equal_the_wrapped_head_exactly(name):
    embeddings, labels, _ = _batch()
    head = _wrapped(name, p=1.0)
    for training in (True, False):
        np.testing.assert_array_equal(head([embeddings, labels], training=training).numpy(),
                                      head.head([embeddings, labels], training=training).numpy())
    single = DatasetAwareHead(_inner(name), dataset_num_classes=[10], crossing_dropout_p=0.0)
    np.testing.assert_array_equal(single([embeddings, labels], training=True).numpy(),
                                  single.head([embeddings, labels]).numpy())


def test_inference_path_is_the_wrapped_heads_plain_cosine_logits():
    embeddings, labels, _ = _batch()
    head = _wrapped("arcface", p=0.5)
    head([embeddings, labels])
    np.testing.assert_array_equal(head(embeddings, training=True).numpy(), head.head(embeddings).numpy())
    np.testing.assert_array_equal(head(embeddings).numpy(), 64.0 * head.cosine(embeddings).numpy())
    assert head.kernel is head.head.kernel and head.num_classes == 10 and head.num_datasets == 3


def test_crossing_dropout_is_per_sample_and_class_with_keep_probability_p():
    p, draws = 0.3, 40
    counts = [10, 10, 20]
    rng = np.random.default_rng(3)
    labels = np.repeat(np.array([0, 12, 35, 35], np.int32), 16)  # many rows sharing a label
    embeddings = rng.normal(size=(len(labels), 8)).astype(np.float32)
    head = _wrapped("arcface", p=p, seed=7, counts=counts)
    class_dataset = np.repeat([0, 1, 2], counts)
    other = class_dataset[None, :] != class_dataset[labels][:, None]
    kept = []
    for _ in range(draws):
        logits = head([embeddings, labels], training=True).numpy()
        masked = logits == MASKED_LOGIT
        # Own-dataset classes (target included) are never dropped.
        assert not masked[~other].any()
        kept.append(~masked[other])
        # Rows with the same label get different draws (not one decision per class per batch)...
        assert np.any(masked[0] != masked[1])
        # ...and classes of the same other dataset differ within a row (not one per dataset).
        assert 0 < masked[0, 10:20].sum() < 10 or 0 < masked[0, 20:].sum() < 20
    kept = np.stack(kept)
    # ~60k Bernoulli(p) draws: the standard error is ~0.002.
    assert abs(kept.mean() - p) < 0.01, kept.mean()
    assert not np.array_equal(kept[0], kept[1])  # the seed generator advances between steps
    # Outside training no draws: every other-dataset class is masked, deterministically.
    evaluation = head([embeddings, labels], training=False).numpy()
    np.testing.assert_array_equal(evaluation == MASKED_LOGIT, other)


def test_same_seed_gives_the_same_draws():
    embeddings, labels, _ = _batch()
    first, second = _wrapped("cosface", p=0.5, seed=11), _wrapped("cosface", p=0.5, seed=11)
    masks = [[h([embeddings, labels], training=True).numpy() == MASKED_LOGIT for _ in range(3)]
             for h in (first, second)]
    np.testing.assert_array_equal(masks[0], masks[1])


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_loss_and_gradients_are_finite_and_masked_classes_get_none(p):
    # cos = +1 and -1 exactly for the first two samples; all labels in dataset 0.
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1], np.int32)
    embeddings, labels, kernel = _batch(labels)
    head = _wrapped("arcface", p=p)
    head([embeddings, labels])
    head.kernel.assign(kernel)
    x = tf.constant(embeddings)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        logits = head([x, labels], training=True)
        loss = tf.reduce_mean(ENTROPY(labels, logits))
    grads = [tape.gradient(loss, x), tape.gradient(loss, head.kernel)]
    assert np.isfinite(loss.numpy())
    for grad in grads:
        assert np.all(np.isfinite(grad.numpy()))
    kernel_grad = grads[1].numpy()
    if p == 0.0:
        # No sample of dataset 0 sees classes 3-9: their centres get exactly zero gradient.
        assert np.all(kernel_grad[:, 3:] == 0.0)
        assert np.all(np.abs(kernel_grad[:, :3]).sum(axis=0) > 0)
    if p == 1.0:
        assert np.all(np.abs(kernel_grad).sum(axis=0) > 0)


# Partial FC and the sharded head are wrappers with target-first logits; DatasetAwareHead refuses them.
@pytest.mark.parametrize("name", sorted(set(heads.list()) - {"dataset_aware", "partial_fc", "sharded"}))
def test_wraps_every_registered_head(name):
    embeddings, labels, _ = _batch()
    head = DatasetAwareHead(name, dataset_num_classes=COUNTS, crossing_dropout_p=0.0)
    x = tf.constant(embeddings)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = head([x, labels], training=True)
        # Auxiliary terms of the wrapped head (MagFace, LFRC) reach the wrapper's losses.
        loss = tf.reduce_mean(ENTROPY(labels, logits)) + sum(head.losses)
    grads = tape.gradient(loss, [x] + head.trainable_variables)
    logits = logits.numpy()
    other = CLASS_DATASET[None, :] != CLASS_DATASET[labels][:, None]
    assert logits.shape == (8, 10) and logits.dtype == np.float32
    assert np.all(logits[other] == MASKED_LOGIT) and np.all(np.abs(logits[~other]) < 1e4)
    assert np.isfinite(loss.numpy())
    assert all(np.all(np.isfinite(grad.numpy())) for grad in grads if grad is not None)


def test_explicit_dataset_ids_are_checked_against_the_labels():
    embeddings, labels, _ = _batch()
    head = _wrapped("cosface")
    ids = CLASS_DATASET[labels].astype(np.int32)
    np.testing.assert_array_equal(head([embeddings, labels, ids], training=True).numpy(),
                                  head([embeddings, labels], training=True).numpy())
    np.testing.assert_array_equal(head.dataset_ids(labels).numpy(), ids)
    wrong = ids.copy()
    wrong[3] = 0
    with pytest.raises(tf.errors.InvalidArgumentError, match="dataset_ids disagree"):
        head([embeddings, labels, wrong], training=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must be < num_classes=10"):
        head([embeddings, np.array([0, 1, 2, 3, 4, 5, 6, 10], np.int32)], training=True)


def test_validation_errors():
    with pytest.raises(ValueError, match=r"sums to 9, but the wrapped head has num_classes=10"):
        DatasetAwareHead(_inner("arcface"), dataset_num_classes=[3, 3, 3])
    with pytest.raises(ValueError, match=r"non-empty list of positive ints, got \[\]"):
        DatasetAwareHead(_inner("arcface"), dataset_num_classes=[])
    with pytest.raises(ValueError, match=r"bad entries \[0, 2.5, 2.5\]"):
        DatasetAwareHead(_inner("arcface"), dataset_num_classes=[5, 0, 2.5, 2.5])
    with pytest.raises(ValueError, match="must be a list of positive ints, got 10"):
        DatasetAwareHead(_inner("arcface"), dataset_num_classes=10)
    with pytest.raises(ValueError, match=r"`crossing_dropout_p` must be in \[0, 1\], got 1.5"):
        DatasetAwareHead(_inner("arcface"), dataset_num_classes=COUNTS, crossing_dropout_p=1.5)
    with pytest.raises(ValueError, match=r"`num_classes` \(12\) differs from the wrapped head's num_classes \(10\)"):
        DatasetAwareHead(_inner("arcface"), dataset_num_classes=COUNTS, num_classes=12)
    with pytest.raises(ValueError, match="needs `num_classes` or `dataset_num_classes`"):
        DatasetAwareHead("arcface")
    with pytest.raises(TypeError, match="`head` must be a MarginHead.*got Dense"):
        DatasetAwareHead(keras.layers.Dense(10), dataset_num_classes=COUNTS)
    with pytest.raises(TypeError, match="got DatasetAwareHead"):
        DatasetAwareHead(_wrapped("arcface"), dataset_num_classes=COUNTS)
    with pytest.raises(ValueError, match="Unknown head 'nope'"):
        DatasetAwareHead("nope", dataset_num_classes=COUNTS)
    with pytest.raises(ValueError, match="`seed` must be an int or None, got 1.5"):
        DatasetAwareHead(_inner("arcface"), dataset_num_classes=COUNTS, seed=1.5)


def test_registry_builds_it_by_name():
    assert "dataset_aware" in heads.list()
    default = heads.get("dataset_aware", num_classes=10)
    assert type(default.head).__name__ == "ArcFaceHead" and default.dataset_num_classes == [10]
    named = heads.get("dataset_aware", head="cosface", dataset_num_classes=COUNTS, crossing_dropout_p=1e-4)
    assert type(named.head).__name__ == "CosFaceHead" and named.num_classes == 10
    theta = np.linspace(0.0, math.pi, 5).astype(np.float32)
    np.testing.assert_array_equal(named.target_curve(theta).numpy(), named.head.target_curve(theta).numpy())


def test_shared_checks_deterministic(tmp_path):
    embeddings, labels, _ = _batch()
    run_all_checks(lambda: _wrapped("arcface", p=0.0), [embeddings, labels], tmp_path,
                   call_kwargs={"training": True})


def test_shared_checks_with_crossing_dropout(tmp_path):
    # The config round-trip and mixed-precision checks copy the seed state between instances, so
    # their draws coincide. A .keras file does not store RNG state (Keras' own Dropout neither), so
    # the reloaded copy is compared on the deterministic evaluation path. XLA's stateless RNG
    # kernels give other numbers than eager ones, and each replica draws its own (B/2, C) block, so
    # those two checks run with deterministic p (above; p=1 returns the wrapped head's logits as
    # they are, and the heads pass the shared checks on their own).
    embeddings, labels, _ = _batch()
    run_all_checks(lambda: _wrapped("cosface", p=0.5), [embeddings, labels], tmp_path,
                   call_kwargs={"training": True}, skip=("xla", "mirrored"),
                   options={"saving": {"call_kwargs": {"training": False}}})


def _tiny_backbone():
    return keras.Sequential(
        [keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
         keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(16)],
        name="tiny",
    )


def test_face_recognizer_fits_evaluates_and_reloads(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(10, dtype=np.int32), 4)
    images = rng.normal(size=(40, 16, 16, 3)).astype(np.float32) + labels[:, None, None, None] / 5.0
    head = DatasetAwareHead(_inner("arcface"), dataset_num_classes=COUNTS, crossing_dropout_p=0.3, seed=2)
    model = FaceRecognizer(_tiny_backbone(), head)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(20)
    # Evaluation is the pure dataset-aware loss (no draws outside training): check it by hand.
    evaluated = model.evaluate(data, verbose=0)
    logits = model((images, labels), training=False).numpy()
    by_hand = ENTROPY(labels, logits).numpy().mean()
    assert evaluated == pytest.approx(float(by_hand), rel=1e-4)
    assert np.all(logits[CLASS_DATASET[None, :] != CLASS_DATASET[labels][:, None]] == MASKED_LOGIT)
    history = model.fit(data, epochs=12, verbose=0).history["loss"]
    assert all(np.isfinite(history)) and history[-1] < history[0] * 0.8, history

    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(restored.head, DatasetAwareHead) and restored.head.dataset_num_classes == COUNTS
    np.testing.assert_allclose(restored((images, labels)).numpy(), model((images, labels)).numpy(), atol=1e-5)
    np.testing.assert_allclose(restored(images).numpy(), model(images).numpy(), atol=1e-6)
