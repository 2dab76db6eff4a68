import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface import heads
from kerasface.testing.head_cases import embeddings_at_angles, head_with_kernel
from kerasface.testing import run_all_checks


def _normalise(x, axis):
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


def reference_logits(name, embeddings, kernel, labels, scale, margin, easy_margin=False):
    """Independent NumPy logits written from the papers' equations (angles via arccos)."""
    cos = np.clip(_normalise(embeddings, 1) @ _normalise(kernel, 0), -1.0, 1.0).astype(np.float64)
    logits = cos.copy()
    rows = np.arange(len(labels))
    theta = np.arccos(cos[rows, labels])
    if name == "cosface":
        logits[rows, labels] = cos[rows, labels] - margin
    elif name == "arcface":
        target = np.cos(theta + margin)
        if easy_margin:
            target = np.where(cos[rows, labels] > 0, target, cos[rows, labels])
        else:
            # Past theta + m > pi: the linear continuation cos(theta) - m sin(m).
            target = np.where(theta + margin <= math.pi, target, cos[rows, labels] - margin * math.sin(margin))
        logits[rows, labels] = target
    return scale * logits




@pytest.mark.parametrize(
    "name,kwargs",
    [("normface", {}), ("cosface", {"margin": 0.35}), ("arcface", {"margin": 0.5}),
     ("arcface", {"margin": 0.5, "easy_margin": True})],
)
def test_logits_match_numpy_reference(name, kwargs):
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(16, 8)).astype(np.float32)
    kernel = rng.normal(size=(8, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 16)
    head = head_with_kernel(name, kernel, scale=30.0, **kwargs)
    got = head([embeddings, labels]).numpy()
    want = reference_logits(name, embeddings, kernel, labels, 30.0, kwargs.get("margin", 0.0), kwargs.get("easy_margin", False))
    np.testing.assert_allclose(got, want, atol=2e-4)
    # Inference path: plain scaled cosine, no margin anywhere.
    np.testing.assert_allclose(head(embeddings).numpy(), reference_logits("normface", embeddings, kernel, labels, 30.0, 0.0), atol=2e-4)


def test_arcface_hand_picked_angles_including_near_pi():
    margin = 0.5
    kernel = np.eye(8, 3, dtype=np.float32)
    thetas = np.array([0.0, 1e-4, 0.3, math.pi / 2, math.pi - margin - 1e-3, math.pi - margin + 1e-3, math.pi - 0.05, math.pi])
    embeddings = embeddings_at_angles(thetas)
    labels = np.zeros(len(thetas), dtype=np.int32)
    head = head_with_kernel("arcface", kernel, margin=margin, scale=1.0)
    target = head([embeddings, labels]).numpy()[:, 0]
    expected = np.where(thetas + margin <= math.pi, np.cos(thetas + margin), np.cos(thetas) - margin * math.sin(margin))
    np.testing.assert_allclose(target, expected, atol=2e-3)
    # Non-increasing in theta everywhere, including across theta + m = pi.
    assert np.all(np.diff(target) <= 1e-6), target  # float32 cannot tell theta=0 from 1e-4


@pytest.mark.parametrize("name", ["arcface", "cosface", "normface"])
def test_gradients_finite_at_cos_plus_minus_one(name):
    kernel = np.eye(8, 3, dtype=np.float32)
    embeddings = tf.constant(embeddings_at_angles(np.array([0.0, math.pi, math.pi / 2, 0.0])))
    labels = np.array([0, 0, 0, 1], dtype=np.int32)
    head = head_with_kernel(name, kernel)
    with tf.GradientTape() as tape:
        tape.watch(embeddings)
        loss = keras.losses.sparse_categorical_crossentropy(labels, head([embeddings, labels]), from_logits=True)
    grads = tape.gradient(loss, [embeddings, head.kernel])
    for grad in grads:
        assert np.all(np.isfinite(grad.numpy()))


def test_margin_lowers_the_target_logit_only():
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(6, 8)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 0, 1])
    kernel = rng.normal(size=(8, 4)).astype(np.float32)
    plain = head_with_kernel("normface", kernel)([embeddings, labels]).numpy()
    arc = head_with_kernel("arcface", kernel)([embeddings, labels]).numpy()
    is_target = np.arange(4)[None] == labels[:, None]
    np.testing.assert_allclose(arc[~is_target], plain[~is_target], atol=1e-4)
    assert np.all(arc[is_target] < plain[is_target])


def test_registry_and_errors():
    assert {"arcface", "cosface", "normface"} <= set(heads.list())
    assert isinstance(heads.get("arcface", num_classes=3), heads.ArcFaceHead)
    with pytest.raises(ValueError, match="Unknown head 'nope'"):
        heads.get("nope", num_classes=3)
    with pytest.raises(ValueError, match=r"`scale` must be > 0, got -1"):
        heads.get("cosface", num_classes=3, scale=-1)
    with pytest.raises(ValueError, match=r"`margin` must be in \[0, pi/2\), got 2.0"):
        heads.get("arcface", num_classes=3, margin=2.0)
    with pytest.raises(ValueError, match="`num_classes` must be >= 2, got 1"):
        heads.get("arcface", num_classes=1)


def test_logits_are_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        head = heads.get("arcface", num_classes=4)
        out = head([np.ones((2, 8), np.float16), np.array([0, 1])])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert out.dtype == "float32"


@pytest.mark.parametrize("name", ["arcface", "cosface", "normface"])
def test_shared_checks(name, tmp_path):
    rng = np.random.default_rng(2)
    inputs = [rng.normal(size=(8, 16)).astype(np.float32), rng.integers(0, 10, 8).astype(np.int32)]
    run_all_checks(lambda: heads.get(name, num_classes=10), inputs, tmp_path, call_kwargs={"training": True})


@pytest.mark.parametrize("name", heads.list())
def test_every_head_gives_float32_logits_under_mixed_bfloat16(name):
    from kerasface.testing import check_mixed_precision

    rng = np.random.default_rng(3)
    inputs = [rng.normal(size=(8, 16)).astype(np.float32), rng.integers(0, 10, 8).astype(np.int32)]
    # bfloat16 keeps 8 mantissa bits: the logits (s up to 64) agree with float32 to ~1e-2 relative.
    check_mixed_precision(lambda: heads.get(name, num_classes=10), inputs, policy="mixed_bfloat16",
                          output_dtype="float32", call_kwargs={"training": True}, atol=0.1, rtol=2e-2)
