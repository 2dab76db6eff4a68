"""LFRC head (eq. 3-6), its intra/inter losses (eq. 7-8) and class-balanced cross-entropy (eq. 9)."""

import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasface.heads.combined_margin_head  # noqa: F401  registers "combined"
import kerasface.heads.lfrc_head  # noqa: F401  registers "lfrc"
from kerasface import heads
from kerasface.testing.head_cases import embeddings_at_angles, head_with_kernel
from kerasface.data.image_folder import ImageFolder
from kerasface.losses import (
    ClassBalancedCrossentropy,
    batch_inter_class_loss,
    class_balanced_weights,
    class_counts,
    inter_class_loss,
    intra_class_loss,
    nearest_other_center,
)
from kerasface.testing import run_all_checks

M1, M2, M3, T = 1.0, 0.3, 0.2, 1.2  # the head's defaults


# ---- NumPy references, written from the paper's equations (float64) --------------------------


def _unit(x, axis):
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-6)


def reference_target(theta, m1=M1, m2=M2, m3=M3):
    """Eq. 4's cos(m1 theta + m2) - m3, and past theta* the combined head's documented continuation."""
    switch = (math.pi - m2) / m1
    delta = max(m2 * math.sin(m2), 1.0 + math.cos(switch))
    return np.where(theta < switch, np.cos(m1 * theta + m2) - m3, np.cos(theta) - m3 - delta)


def reference_lfrc(embeddings, kernel, labels, scale=64.0, m1=M1, m2=M2, m3=M3, t=T):
    """Logits whose softmax cross-entropy is eq. 5: (B, C) logits and the hard mask I (eq. 6)."""
    cos = np.clip(_unit(embeddings, 1) @ _unit(kernel, 0), -1.0, 1.0)
    rows = np.arange(len(labels))
    target = reference_target(np.arccos(cos[rows, labels]), m1, m2, m3)
    # I_j = 1 iff target - cos_j < 0, for j != y.
    hard = target[:, None] - cos < 0
    hard[rows, labels] = False
    logits = np.where(hard, t * cos + t - 1.0, cos)
    logits[rows, labels] = target
    return scale * logits, hard


def reference_eq5_loss(embeddings, kernel, labels, scale, t):
    """Eq. 5 literally: -log(Z1 / (Z1 + sum_{j != y} Z3)), Z3 = e^{s(t-1)(cos+1) I_j} e^{s cos}."""
    cos = np.clip(_unit(embeddings, 1) @ _unit(kernel, 0), -1.0, 1.0)
    rows = np.arange(len(labels))
    target = reference_target(np.arccos(cos[rows, labels]))
    indicator = (target[:, None] - cos < 0).astype(np.float64)
    z3 = np.exp(scale * (t - 1) * (cos + 1) * indicator) * np.exp(scale * cos)
    z3[rows, labels] = 0.0
    z1 = np.exp(scale * target)
    return np.mean(-np.log(z1 / (z1 + z3.sum(axis=1))))


def reference_intra(embeddings, kernel, labels):
    """Eq. 7 and its gradients: d/dx arccos(c) = -(w_hat - c x_hat) / (|x| sqrt(1 - c^2))."""
    x_hat, w_hat = _unit(embeddings, 1), _unit(kernel, 0)[:, labels].T
    cos = np.sum(x_hat * w_hat, axis=1)
    n = len(labels)
    factor = -1.0 / (n * np.sqrt(1.0 - cos**2))
    grad_x = factor[:, None] * (w_hat - cos[:, None] * x_hat) / np.linalg.norm(embeddings, axis=1, keepdims=True)
    grad_w = np.zeros(kernel.shape)
    norms = np.linalg.norm(kernel, axis=0)
    for i, label in enumerate(labels):
        grad_w[:, label] += factor[i] * (x_hat[i] - cos[i] * w_hat[i]) / norms[label]
    return np.mean(np.arccos(cos)), grad_x, grad_w


def reference_nearest(kernel):
    """Dense C x C eq. 8 pieces: for each class the max cosine to another centre and its index."""
    w_hat = _unit(kernel, 0)
    cos = w_hat.T @ w_hat
    np.fill_diagonal(cos, -np.inf)
    nearest = np.argmax(cos, axis=1)
    return cos[np.arange(len(cos)), nearest], nearest


def reference_inter_grad(kernel, rows, nearest, count):
    """Gradient of (1/count) sum_k cos(W_rows[k], W_nearest[k]) w.r.t. the kernel."""
    w_hat = _unit(kernel, 0)
    norms = np.linalg.norm(kernel, axis=0)
    grad = np.zeros(kernel.shape)
    for i, j in zip(rows, nearest):
        c = w_hat[:, i] @ w_hat[:, j]
        grad[:, i] += (w_hat[:, j] - c * w_hat[:, i]) / norms[i] / count
        grad[:, j] += (w_hat[:, i] - c * w_hat[:, j]) / norms[j] / count
    return grad


def reference_cb_weights(counts, beta):
    counts = np.asarray(counts, np.float64)
    weights = (1.0 - beta) / (1.0 - beta**counts)
    return weights / weights.sum() * len(counts)


def reference_cb_loss(labels, logits, weights):
    logits = np.asarray(logits, np.float64)
    log_softmax = logits - logits.max(1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
    return -weights[labels] * log_softmax[np.arange(len(labels)), labels]


# ---- helpers ---------------------------------------------------------------------------------




# ---- LFRCHead logits ---------------------------------------------------------------------------


def test_lfrc_hand_picked_angles_match_reference():
    # Centres e_0..e_3; label 0; cos to e_1 = sin(theta), to e_2 and e_3 = 0.
    kernel = np.eye(8, 4, dtype=np.float32)
    thetas = np.array([0.0, 1e-3, 0.5, 1.0, 2.0, math.pi - M2 - 0.01, math.pi - M2 + 0.01, math.pi - 0.05, math.pi])
    embeddings = embeddings_at_angles(thetas)
    labels = np.zeros(len(thetas), np.int32)
    head = head_with_kernel("lfrc", kernel, scale=1.0)
    got = head([embeddings, labels]).numpy()
    want, hard = reference_lfrc(embeddings, kernel, labels, scale=1.0)
    # theta = 0 reads acos(1 - 1e-7) = 5e-4 rad, which moves cos(theta + 0.3) by 1.5e-4.
    np.testing.assert_allclose(got, want, atol=3e-4)
    # The cases the angles were picked for: no hard negative near theta = 0, exactly e_1 at
    # theta = 1 (sin 1 = 0.84 > cos(1.3) - 0.2 = 0.07 > 0), all of them from theta = 2 on.
    np.testing.assert_array_equal(hard.sum(axis=1), [0, 0, 0, 1, 3, 3, 3, 3, 3])
    np.testing.assert_allclose(got[3, 1], T * math.sin(1.0) + T - 1, atol=1e-6)
    np.testing.assert_allclose(got[3, 2:], 0.0, atol=1e-6)
    np.testing.assert_allclose(got[0], [math.cos(M2) - M3, 0.0, 0.0, 0.0], atol=3e-4)
    # The target never rises with theta, across theta* = pi - m2 included.
    assert np.all(np.diff(got[:, 0]) <= 1e-6), got[:, 0]


@pytest.mark.parametrize(
    "kwargs", [{}, {"m1": 1.15, "m2": 0.2, "m3": 0.1, "t": 1.1}, {"m1": 0.9, "m2": 0.4, "m3": 0.15, "t": 1.3}]
)
def test_lfrc_random_batch_matches_reference(kwargs):
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(32, 8)).astype(np.float32)
    kernel = rng.normal(size=(8, 6)).astype(np.float32)
    labels = rng.integers(0, 6, 32).astype(np.int32)
    head = head_with_kernel("lfrc", kernel, **kwargs)
    want, hard = reference_lfrc(embeddings, kernel, labels, **kwargs)
    assert 0 < hard.sum() < hard.size - len(labels)  # both kinds of negatives occur
    np.testing.assert_allclose(head([embeddings, labels]).numpy(), want, atol=2e-3)
    # Inference: plain scaled cosine.
    cos = _unit(embeddings, 1) @ _unit(kernel, 0)
    np.testing.assert_allclose(head(embeddings).numpy(), 64.0 * cos, atol=2e-4)


def test_lfrc_crossentropy_is_eq5_all_hard_and_no_hard():
    kernel = np.eye(8, 4, dtype=np.float32)
    labels = np.zeros(4, np.int32)
    scale = 16.0
    all_hard = embeddings_at_angles(np.array([2.0, 2.4, 2.9, math.pi - 0.1]), tilt=0.7)
    no_hard = embeddings_at_angles(np.array([0.05, 0.2, 0.3, 0.4]), tilt=0.3)
    for embeddings, expected_hard in [(all_hard, 3), (no_hard, 0)]:
        assert np.all(reference_lfrc(embeddings, kernel, labels, scale)[1].sum(axis=1) == expected_hard)
        logits = head_with_kernel("lfrc", kernel, scale=scale)([embeddings, labels])
        loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True).numpy().mean()
        np.testing.assert_allclose(loss, reference_eq5_loss(embeddings, kernel, labels, scale, T), rtol=1e-4)
    # Without hard negatives t changes nothing: the combined-margin head's logits.
    combined = heads.get("combined", num_classes=4, scale=scale)
    combined.build([(None, 8), (None,)])
    combined.kernel.assign(kernel)
    np.testing.assert_allclose(
        head_with_kernel("lfrc", kernel, scale=scale, t=1.5)([no_hard, labels]).numpy(),
        combined([no_hard, labels]).numpy(),
        atol=1e-5,
    )
    # With them, every negative is raised by s (t - 1)(cos + 1).
    raised = head_with_kernel("lfrc", kernel, scale=scale)([all_hard, labels]).numpy()
    plain = combined([all_hard, labels]).numpy()
    cos_neg = (all_hard @ kernel)[:, 1:]
    np.testing.assert_allclose(raised[:, 1:] - plain[:, 1:], scale * (T - 1) * (cos_neg + 1), atol=1e-4)


def test_lfrc_target_curve_is_monotone_and_matches_eq4():
    head = heads.get("lfrc", num_classes=3)
    theta = np.linspace(0.0, math.pi, 721)
    curve = keras.ops.convert_to_numpy(head.target_curve(theta))
    assert np.all(np.diff(curve) <= 1e-6)
    inner = (theta > 0.05) & (theta < math.pi - M2 - 0.01)
    np.testing.assert_allclose(curve[inner], np.cos(theta[inner] + M2) - M3, atol=1e-5)


def test_gradients_finite_at_cos_plus_minus_one_with_auxiliary_losses():
    kernel = np.eye(8, 3, dtype=np.float32)
    embeddings = tf.constant(embeddings_at_angles(np.array([0.0, math.pi, math.pi / 2, 0.0])))
    labels = np.array([0, 0, 0, 1], dtype=np.int32)
    head = head_with_kernel("lfrc", kernel, intra_weight=1.0, inter_weight=1.0, chunk_size=2)
    with tf.GradientTape() as tape:
        tape.watch(embeddings)
        logits = head([embeddings, labels], training=True)
        loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        loss = tf.reduce_mean(loss) + tf.add_n(head.losses)
    assert len(head.losses) == 2
    for grad in tape.gradient(loss, [embeddings, head.kernel]):
        assert np.all(np.isfinite(grad.numpy()))


# ---- auxiliary losses inside the head ------------------------------------------------------------


def test_head_adds_weighted_intra_and_inter_only_when_training():
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(10, 5)).astype(np.float32)
    kernel = rng.normal(size=(5, 7)).astype(np.float32)
    labels = rng.integers(0, 7, 10).astype(np.int32)
    intra = reference_intra(embeddings, kernel, labels)[0]
    nearest_cos, _ = reference_nearest(kernel)
    head = head_with_kernel("lfrc", kernel, intra_weight=0.7, inter_weight=0.3, chunk_size=3)
    head([embeddings, labels], training=True)
    np.testing.assert_allclose([float(v) for v in head.losses], [0.7 * intra, 0.3 * nearest_cos.mean()], rtol=1e-5)
    head([embeddings, labels], training=False)
    assert head.losses == []
    head(embeddings, training=True)
    assert head.losses == []
    assert heads.get("lfrc", num_classes=7).intra_weight == 0.0  # off by default
    batch_head = head_with_kernel("lfrc", kernel, inter_weight=2.0, inter_scope="batch")
    batch_head([embeddings, labels], training=True)
    w_hat = _unit(kernel, 0)
    cos = w_hat.T @ w_hat
    np.fill_diagonal(cos, -np.inf)
    np.testing.assert_allclose(float(batch_head.losses[0]), 2.0 * cos[labels].max(axis=1).mean(), rtol=1e-5)


def test_fit_adds_the_auxiliary_losses_to_the_model_loss():
    rng = np.random.default_rng(2)
    embeddings = rng.normal(size=(8, 5)).astype(np.float32)
    kernel = rng.normal(size=(5, 6)).astype(np.float32)
    labels = rng.integers(0, 6, 8).astype(np.int32)
    head = head_with_kernel("lfrc", kernel, scale=8.0, intra_weight=0.5, inter_weight=0.25, chunk_size=4)
    x, y = keras.Input((5,)), keras.Input((), dtype="int32")
    model = keras.Model([x, y], head([x, y]))
    crossentropy_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=crossentropy_loss)
    history = model.fit([embeddings, labels], labels, batch_size=8, epochs=1, verbose=0, shuffle=False)
    logits, _ = reference_lfrc(embeddings, kernel, labels, scale=8.0)
    crossentropy = reference_cb_loss(labels, logits, np.ones(6)).mean()
    intra, inter = reference_intra(embeddings, kernel, labels)[0], reference_nearest(kernel)[0].mean()
    want = crossentropy + 0.5 * intra + 0.25 * inter
    np.testing.assert_allclose(history.history["loss"][0], want, rtol=1e-4)


# ---- intra (eq. 7) -------------------------------------------------------------------------------


def test_intra_class_loss_value_and_gradients():
    rng = np.random.default_rng(3)
    embeddings = tf.constant(rng.normal(size=(9, 6)).astype(np.float32) * 3.0)
    kernel = tf.Variable(rng.normal(size=(6, 4)).astype(np.float32))
    labels = np.array([0, 1, 2, 3, 0, 1, 1, 2, 3], np.int32)
    with tf.GradientTape() as tape:
        tape.watch(embeddings)
        loss = intra_class_loss(embeddings, labels[:, None], kernel)
    grad_x, grad_w = tape.gradient(loss, [embeddings, kernel])
    want, want_x, want_w = reference_intra(embeddings.numpy(), kernel.numpy(), labels)
    np.testing.assert_allclose(float(loss), want, rtol=1e-6)
    np.testing.assert_allclose(grad_x.numpy(), want_x, atol=1e-6)
    np.testing.assert_allclose(grad_w.numpy(), want_w, atol=1e-6)
    # On the centre the angle is ~0 (acos is clipped off 1) and the gradient stays finite.
    on_centre = tf.constant(np.eye(4, 6, dtype=np.float32))
    with tf.GradientTape() as tape:
        tape.watch(on_centre)
        loss = intra_class_loss(on_centre, np.arange(4), tf.transpose(on_centre))
    assert abs(float(loss)) < 1e-3
    assert np.all(np.isfinite(tape.gradient(loss, on_centre).numpy()))
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must be < num_classes=4"):
        intra_class_loss(embeddings, np.full(9, 4), kernel)


# ---- inter (eq. 8) -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "num_classes,dim,chunk_size",
    [(7, 5, 1), (7, 5, 3), (7, 5, 4), (7, 5, 7), (7, 5, 100), (50, 6, 13), (50, 6, 16), (50, 6, 50), (2, 3, 1)],
)
def test_chunked_inter_matches_dense_reference(num_classes, dim, chunk_size):
    rng = np.random.default_rng(num_classes + dim)
    kernel = tf.Variable(rng.normal(size=(dim, num_classes)).astype(np.float32))
    want_cos, want_nearest = reference_nearest(kernel.numpy())
    cosines, nearest = nearest_other_center(kernel, chunk_size)
    assert cosines.shape == (num_classes,) and nearest.dtype == "int32"
    np.testing.assert_array_equal(nearest.numpy(), want_nearest)
    np.testing.assert_allclose(cosines.numpy(), want_cos, atol=1e-6)
    with tf.GradientTape() as tape:
        loss = inter_class_loss(kernel, chunk_size)
    np.testing.assert_allclose(float(loss), want_cos.mean(), atol=1e-6)
    grad = tape.gradient(loss, kernel)
    want_grad = reference_inter_grad(kernel.numpy(), np.arange(num_classes), want_nearest, num_classes)
    np.testing.assert_allclose(grad.numpy(), want_grad, atol=1e-6)


def test_inter_ties_and_zero_centres_pick_the_lowest_index():
    rng = np.random.default_rng(4)
    kernel = rng.normal(size=(4, 9)).astype(np.float32)
    kernel[:, 5] = kernel[:, 2]  # duplicate centres: cosine 1 with each other
    kernel[:, 3] = 0.0  # zero centres: cosine exactly 0 (+-0.0) with everything
    kernel[:, 7] = 0.0
    kernel[:, 1] = -kernel[:, 0]
    want_cos, want_nearest = reference_nearest(kernel)
    for chunk_size in (2, 4, 9):
        cosines, nearest = nearest_other_center(kernel, chunk_size)
        np.testing.assert_array_equal(nearest.numpy(), want_nearest)
        np.testing.assert_allclose(cosines.numpy(), want_cos, atol=1e-6)
    assert want_nearest[2] == 5 and want_nearest[5] == 2


def test_inter_under_xla_and_tf_function_matches_eager():
    kernel = tf.Variable(np.random.default_rng(5).normal(size=(6, 37)).astype(np.float32))

    def loss_and_grad():
        with tf.GradientTape() as tape:
            loss = inter_class_loss(kernel, 8)
        return loss, tape.gradient(loss, kernel)

    eager = loss_and_grad()
    for jit in (False, True):
        compiled = tf.function(loss_and_grad, jit_compile=jit)()
        for a, b in zip(compiled, eager):
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_batch_inter_class_loss_value_and_gradient():
    rng = np.random.default_rng(6)
    kernel = tf.Variable(rng.normal(size=(5, 11)).astype(np.float32))
    labels = np.array([3, 3, 0, 10, 7, 2], np.int32)
    want_cos, want_nearest = reference_nearest(kernel.numpy())
    with tf.GradientTape() as tape:
        loss = batch_inter_class_loss(kernel, labels)
    np.testing.assert_allclose(float(loss), want_cos[labels].mean(), atol=1e-6)
    want_grad = reference_inter_grad(kernel.numpy(), labels, want_nearest[labels], len(labels))
    np.testing.assert_allclose(tape.gradient(loss, kernel).numpy(), want_grad, atol=1e-6)
    # Every class once in the batch: the full eq. 8.
    every_class = float(batch_inter_class_loss(kernel, np.arange(11)))
    np.testing.assert_allclose(every_class, float(inter_class_loss(kernel, 4)), atol=1e-6)


def test_inter_argument_errors():
    kernel = np.ones((3, 5), np.float32)
    for bad in (0, 2.5, True, None):
        with pytest.raises(ValueError, match=r"`chunk_size` must be an int >= 1, got"):
            nearest_other_center(kernel, bad)
    with pytest.raises(ValueError, match=r"at least 2 class centres.*\(3, 1\)"):
        inter_class_loss(np.ones((3, 1), np.float32))


_MODERATE_SCRIPT = r"""
import json, resource, sys, time
import numpy as np, tensorflow as tf
from kerasface.losses import inter_class_loss, nearest_other_center
C, D, chunk = 20000, 64, 512
kernel = tf.Variable(np.random.default_rng(7).normal(size=(D, C)).astype(np.float32))
def step():
    with tf.GradientTape() as tape:
        loss = inter_class_loss(kernel, chunk)
    return loss, tape.gradient(loss, kernel), nearest_other_center(kernel, chunk)
step = tf.function(step, jit_compile=True)
step.get_concrete_function()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
loss, grad, (cosines, nearest) = step()
seconds = time.perf_counter() - start
grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
rows = np.random.default_rng(8).choice(C, 64, replace=False)
json.dump({"loss": float(loss), "finite": bool(np.isfinite(grad.numpy()).all()), "seconds": seconds,
           "grown_mb": grown_mb, "rows": rows.tolist(), "cosines": cosines.numpy()[rows].tolist(),
           "nearest": nearest.numpy()[rows].tolist()}, sys.stdout)
"""


def test_inter_at_3000_classes_matches_numpy_on_sampled_rows():
    kernel = np.random.default_rng(12).normal(size=(32, 3000)).astype(np.float32)
    cosines, nearest = nearest_other_center(kernel, 256)  # 256 does not divide 3000
    rows = np.random.default_rng(13).choice(3000, 100, replace=False)
    w_hat = _unit(kernel, 0)
    cos = w_hat[:, rows].T @ w_hat
    cos[np.arange(len(rows)), rows] = -np.inf
    np.testing.assert_array_equal(nearest.numpy()[rows], cos.argmax(axis=1))
    np.testing.assert_allclose(cosines.numpy()[rows], cos.max(axis=1), atol=1e-6)


@pytest.mark.slow
def test_inter_at_20000_classes_runs_in_bounded_memory():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, "-c", _MODERATE_SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"inter_class_loss + gradient, 20000 x 64, XLA: {result['seconds']:.1f} s, RSS +{result['grown_mb']:.0f} MB")
    assert result["finite"]
    # A C x C float32 matrix alone would be 1526 MB (plus as much again for its gradient).
    assert result["grown_mb"] < 700, result["grown_mb"]
    w_hat = _unit(np.random.default_rng(7).normal(size=(64, 20000)).astype(np.float32), 0)
    rows = np.array(result["rows"])
    cos = w_hat[:, rows].T @ w_hat
    cos[np.arange(len(rows)), rows] = -np.inf
    np.testing.assert_array_equal(result["nearest"], cos.argmax(axis=1))
    np.testing.assert_allclose(result["cosines"], cos.max(axis=1), atol=1e-5)


# ---- class-balanced cross-entropy (eq. 9) --------------------------------------------------------


COUNTS = [1, 5, 50, 1000, 3]


@pytest.mark.parametrize("beta", [0.0, 0.9, 0.999, 0.9999])
def test_class_balanced_weights_match_cui_et_al(beta):
    weights = class_balanced_weights(COUNTS, beta)
    np.testing.assert_allclose(weights, reference_cb_weights(COUNTS, beta), rtol=1e-6)
    np.testing.assert_allclose(weights.sum(), len(COUNTS), rtol=1e-6)
    if beta > 0:  # rarer classes weigh more
        order = np.argsort(COUNTS)
        assert np.all(np.diff(weights[order]) < 0)
    else:
        np.testing.assert_array_equal(weights, 1.0)


def test_class_balanced_loss_values():
    rng = np.random.default_rng(9)
    logits = rng.normal(size=(12, 5)).astype(np.float32) * 3
    labels = rng.integers(0, 5, 12)
    weights = reference_cb_weights(COUNTS, 0.99)
    per_sample = reference_cb_loss(labels, logits, weights)
    loss = ClassBalancedCrossentropy(COUNTS, beta=0.99)
    np.testing.assert_allclose(float(loss(labels, logits)), per_sample.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(loss(labels[:, None], logits)), per_sample.mean(), rtol=1e-5)
    unreduced = ClassBalancedCrossentropy(COUNTS, beta=0.99, reduction=None)(labels, logits)
    np.testing.assert_allclose(unreduced.numpy(), per_sample, rtol=1e-5)
    probabilities = keras.ops.softmax(logits).numpy()
    from_probabilities = ClassBalancedCrossentropy(COUNTS, beta=0.99, from_logits=False)
    np.testing.assert_allclose(float(from_probabilities(labels, probabilities)), per_sample.mean(), rtol=1e-4)
    plain = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    unweighted = ClassBalancedCrossentropy(COUNTS, beta=0.0)(labels, logits)
    np.testing.assert_allclose(float(unweighted), float(plain), rtol=1e-6)


def test_class_balanced_serialization_round_trips(tmp_path):
    counts = np.random.default_rng(10).integers(1, 400, 20000)
    loss = ClassBalancedCrossentropy(counts, beta=0.9999, name="cb")
    config = loss.get_config()
    # Compact: well under the JSON list of the counts.
    assert len(json.dumps(config)) < 0.6 * len(json.dumps(counts.tolist()))
    for restored in (
        ClassBalancedCrossentropy.from_config(json.loads(json.dumps(config))),
        keras.losses.deserialize(json.loads(json.dumps(keras.losses.serialize(loss)))),
    ):
        assert isinstance(restored, ClassBalancedCrossentropy)
        np.testing.assert_array_equal(restored.class_counts, counts)
        assert (restored.beta, restored.from_logits, restored.name) == (0.9999, True, "cb")
        np.testing.assert_array_equal(restored.class_weights, loss.class_weights)
    # Inside a compiled model's .keras file.
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5)])
    model.compile(optimizer="sgd", loss=ClassBalancedCrossentropy(COUNTS, beta=0.9))
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    x, y = np.ones((3, 4), np.float32), np.array([0, 3, 4])
    np.testing.assert_allclose(reloaded.evaluate(x, y, verbose=0), model.evaluate(x, y, verbose=0), rtol=1e-6)
    assert isinstance(reloaded.loss, ClassBalancedCrossentropy)
    np.testing.assert_array_equal(reloaded.loss.class_counts, COUNTS)


def test_class_balanced_errors():
    with pytest.raises(ValueError, match=r"whole numbers > 0; 2 classes are not \(classes 1, 3; class 1 has 0\)"):
        ClassBalancedCrossentropy([4, 0, 2, -1])
    with pytest.raises(ValueError, match="class 1 has 2.5"):
        ClassBalancedCrossentropy([4, 2.5])
    with pytest.raises(ValueError, match=r"non-empty 1-D list of counts, got shape \(0,\)"):
        ClassBalancedCrossentropy([])
    with pytest.raises(ValueError, match=r"got shape \(1, 2\)"):
        ClassBalancedCrossentropy([[1, 2]])
    for beta in (1.0, -0.1, True):
        with pytest.raises(ValueError, match=r"`beta` must be in \[0, 1\), got"):
            ClassBalancedCrossentropy(COUNTS, beta=beta)
    with pytest.raises(ValueError, match=r"`class_counts` as a dict must be"):
        ClassBalancedCrossentropy({"encoding": "gzip", "data": ""})
    loss = ClassBalancedCrossentropy(COUNTS)
    with pytest.raises(ValueError, match=r"`y_pred` has 4 classes but `class_counts` has 5 entries"):
        loss(np.array([0, 1]), np.zeros((2, 4), np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must be < num_classes=5"):
        loss(np.array([0, 5]), np.zeros((2, 5), np.float32))


def test_class_counts_from_labels_and_image_folder(tmp_path):
    np.testing.assert_array_equal(class_counts(np.array([0, 2, 2, 0, 2])), [2, 0, 3])
    np.testing.assert_array_equal(class_counts([1, 1], num_classes=4), [0, 2, 0, 0])
    with pytest.raises(ValueError, match="labels must be >= 0, got -1"):
        class_counts([0, -1])
    with pytest.raises(ValueError, match="labels must be < num_classes=2, got 2"):
        class_counts([0, 2], num_classes=2)
    with pytest.raises(ValueError, match="1-D int array"):
        class_counts([0.5, 1.0])
    for identity, files in {"anna": 2, "bob": 1, "cleo": 3}.items():
        (tmp_path / identity).mkdir()
        for i in range(files):
            (tmp_path / identity / f"{i}.jpg").write_bytes(b"not decoded here")
    folder = ImageFolder(tmp_path, batch_size=1, shuffle=False)
    np.testing.assert_array_equal(class_counts(folder), [2, 1, 3])
    # A label map from another run may name identities with no images here: count 0,
    # which the loss refuses, naming the class.
    folder = ImageFolder(tmp_path, batch_size=1, shuffle=False, label_map={"anna": 0, "zed": 1, "bob": 2, "cleo": 3})
    counts = class_counts(folder)
    np.testing.assert_array_equal(counts, [2, 0, 1, 3])
    with pytest.raises(ValueError, match="class 1 has 0"):
        ClassBalancedCrossentropy(counts)


# ---- registry, arguments, shared checks ----------------------------------------------------------


def test_lfrc_registry_config_and_errors():
    head = heads.get("lfrc", num_classes=5, intra_weight=0.1, inter_weight=0.2, inter_scope="batch", chunk_size=64)
    config = head.get_config()
    expected = {
        "m1": 1.0, "m2": 0.3, "m3": 0.2, "t": 1.2, "scale": 64.0, "intra_weight": 0.1, "inter_weight": 0.2,
        "inter_scope": "batch", "chunk_size": 64,
    }
    assert {key: config[key] for key in expected} == expected
    assert type(heads.get_class("lfrc").from_config(config)) is type(head)
    with pytest.raises(ValueError, match=r"`t` must be >= 1, got 0.9"):
        heads.get("lfrc", num_classes=5, t=0.9)
    with pytest.raises(ValueError, match=r"`intra_weight` must be >= 0, got -1"):
        heads.get("lfrc", num_classes=5, intra_weight=-1)
    with pytest.raises(ValueError, match=r"`inter_weight` must be >= 0, got -0.5"):
        heads.get("lfrc", num_classes=5, inter_weight=-0.5)
    with pytest.raises(ValueError, match=r"`inter_scope` must be one of \['all', 'batch'\], got 'some'"):
        heads.get("lfrc", num_classes=5, inter_scope="some")
    with pytest.raises(ValueError, match=r"`chunk_size` must be an int >= 1, got 0"):
        heads.get("lfrc", num_classes=5, chunk_size=0)
    with pytest.raises(ValueError, match=r"`m2` must be in \[0, pi/2\), got 2.0"):
        heads.get("lfrc", num_classes=5, m2=2.0)


@pytest.mark.parametrize(
    "kwargs", [{}, {"intra_weight": 0.5, "inter_weight": 0.5, "chunk_size": 3}], ids=["default", "auxiliary_losses"]
)
def test_shared_checks(kwargs, tmp_path):
    rng = np.random.default_rng(11)
    inputs = [rng.normal(size=(8, 16)).astype(np.float32), rng.integers(0, 10, 8).astype(np.int32)]
    factory = lambda: heads.get("lfrc", num_classes=10, **kwargs)  # noqa: E731
    run_all_checks(factory, inputs, tmp_path, call_kwargs={"training": True})
