"""Softmax, SphereFace, combined margin, Li-ArcFace and LinearFace heads against NumPy references."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasface.heads.combined_margin_head  # noqa: F401  (registers "combined")
import kerasface.heads.li_arcface_head  # noqa: F401  (registers "li_arcface")
import kerasface.heads.linearface_head  # noqa: F401  (registers "linearface")
import kerasface.heads.softmax_head  # noqa: F401  (registers "softmax")
import kerasface.heads.sphereface_head  # noqa: F401  (registers "sphereface")
from kerasface import heads
from kerasface.testing.head_cases import embeddings_at_angles, head_with_kernel
from kerasface.testing import run_all_checks

NAMES = ["softmax", "sphereface", "combined", "li_arcface", "linearface"]
_PI = math.pi


# ---------------------------------------------------------------- NumPy references (float64)


def _normalise(x, axis):
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


def _cosines(embeddings, kernel):
    e = _normalise(embeddings.astype(np.float64), 1)
    w = _normalise(kernel.astype(np.float64), 0)
    return np.clip(e @ w, -1.0, 1.0)


def ref_lambda(iteration, base=1000.0, gamma=0.12, power=1.0, lambda_min=5.0):
    return np.maximum(base * (1.0 + gamma * np.asarray(iteration, np.float64)) ** (-power), lambda_min)


def ref_psi(theta, m):
    """SphereFace eq. 7 straight from the definition: k is the interval index of theta."""
    k = np.minimum(np.floor(theta * m / math.pi), m - 1)
    return (-1.0) ** k * np.cos(m * theta) - 2.0 * k


def ref_target(name, theta, **kw):
    """Unscaled target logit as a function of theta_y, from each paper's equation."""
    if name == "softmax":
        return np.cos(theta)
    if name == "sphereface":
        lam = kw.get("lam", 5.0)
        return (lam * np.cos(theta) + ref_psi(theta, kw.get("margin", 4))) / (1.0 + lam)
    if name == "combined":
        m1, m2, m3 = kw.get("m1", 1.0), kw.get("m2", 0.3), kw.get("m3", 0.2)
        switch = (math.pi - m2) / m1
        # The documented continuation past m1*theta + m2 = pi (see CombinedMarginHead).
        delta = max(m2 * math.sin(m2), 1.0 + math.cos(min(switch, math.pi)))
        return np.where(theta < switch, np.cos(m1 * theta + m2) - m3, np.cos(theta) - m3 - delta)
    if name == "li_arcface":
        return (math.pi - 2.0 * (theta + kw.get("margin", 0.45))) / math.pi
    if name == "linearface":
        return -kw.get("a", 0.88) * theta + kw.get("b", 0.88)
    raise ValueError(name)


def ref_logits(name, embeddings, kernel, labels, scale, **kw):
    """Scaled (B, C) training logits; bias only for softmax."""
    rows = np.arange(len(labels))
    if name == "softmax":
        return scale * (embeddings.astype(np.float64) @ kernel.astype(np.float64) + kw["bias"])
    cos = _cosines(embeddings, kernel)
    theta = np.arccos(cos)
    logits = (math.pi - 2.0 * theta) / math.pi if name == "li_arcface" else cos.copy()
    logits[rows, labels] = ref_target(name, theta[rows, labels], **kw)
    return scale * logits


# ---------------------------------------------------------------- helpers




def _target_column(head, thetas):
    embeddings = embeddings_at_angles(thetas)
    labels = np.zeros(len(thetas), np.int32)
    return head([embeddings, labels]).numpy()[:, 0]


# ---------------------------------------------------------------- logits vs references


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("combined", {}),
        ("combined", {"m1": 0.9, "m2": 0.4, "m3": 0.15}),
        ("combined", {"m1": 1.35, "m2": 0.25, "m3": 0.1}),
        ("li_arcface", {}),
        ("li_arcface", {"margin": 0.3}),
        ("linearface", {}),
        ("linearface", {"a": 1.0, "b": 0.9}),
        ("sphereface", {"margin": 4, "lambda_base": 0.0, "lambda_min": 0.0}),
        ("sphereface", {"margin": 3, "lambda_base": 0.0, "lambda_min": 0.0}),
        ("sphereface", {"margin": 2, "lambda_min": 2.0}),
    ],
)
def test_logits_match_numpy_reference(name, kwargs):
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(32, 8)).astype(np.float32)
    kernel = rng.normal(size=(8, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 32)
    head = head_with_kernel(name, kernel, scale=30.0, **kwargs)
    ref_kwargs = {k: v for k, v in kwargs.items() if not k.startswith("lambda")}
    if name == "sphereface":
        base = kwargs.get("lambda_base", 1000.0)
        ref_kwargs["lam"] = float(ref_lambda(0, base=base, lambda_min=kwargs["lambda_min"]))
    got = head([embeddings, labels]).numpy()
    assert got.dtype == np.float32 and got.shape == (32, 5)
    want = ref_logits(name, embeddings, kernel, labels, 30.0, **ref_kwargs)
    np.testing.assert_allclose(got, want, atol=3e-3)
    # Misclassified samples are in this batch, so negatives were checked where they win.
    assert np.any(np.argmax(want, axis=1) != labels)
    # Inference: plain scaled cosine, no margin, for every angular head.
    np.testing.assert_allclose(head(embeddings).numpy(), 30.0 * _cosines(embeddings, kernel), atol=3e-4)


@pytest.mark.parametrize(
    "name,kwargs,thetas",
    [
        # theta ~ 0, mid-range, either side of theta* = (pi - m2) / m1, and pi.
        ("combined", {}, [0.0, 1e-3, 0.3, math.pi / 2, _PI - 0.3 - 1e-3, _PI - 0.3 + 1e-3, _PI - 0.05, _PI]),
        ("combined", {"m1": 1.35, "m2": 0.25, "m3": 0.1},
         [0.0, 0.5, (_PI - 0.25) / 1.35 - 1e-3, (_PI - 0.25) / 1.35 + 1e-3, 2.8, _PI]),
        ("combined", {"m1": 0.9, "m2": 0.4, "m3": 0.15}, [0.0, 1.0, (_PI - 0.4) / 0.9 - 1e-3, (_PI - 0.4) / 0.9 + 1e-3, _PI]),
        ("li_arcface", {}, [0.0, 1e-3, 0.3, math.pi / 2, math.pi - 0.45 - 1e-3, math.pi - 0.45 + 1e-3, math.pi]),
        ("linearface", {}, [0.0, 1e-3, 0.3, math.pi / 2, 2.5, math.pi]),
        # k boundaries k pi / m on both sides, for m = 4.
        ("sphereface", {"lambda_base": 0.0, "lambda_min": 0.0},
         [0.0, 1e-3] + [k * _PI / 4 + d for k in (1, 2, 3) for d in (-1e-3, 0.0, 1e-3)] + [_PI - 1e-3, _PI]),
        ("sphereface", {"lambda_base": 0.0, "lambda_min": 5.0}, [0.0, _PI / 4, 1.0, _PI / 2, 2.0, 3 * _PI / 4, _PI]),
    ],
)
def test_hand_picked_angles(name, kwargs, thetas):
    thetas = np.array(thetas)
    head = head_with_kernel(name, np.eye(8, 3, dtype=np.float32), scale=1.0, **kwargs)
    got = _target_column(head, thetas)
    ref_kwargs = {k: v for k, v in kwargs.items() if not k.startswith("lambda")}
    if name == "sphereface":
        ref_kwargs["lam"] = kwargs["lambda_min"]
    # float32 cannot resolve angles below ~5e-4 and acos clips cos at 1 - 1e-7.
    np.testing.assert_allclose(got, ref_target(name, thetas, **ref_kwargs), atol=1e-3)
    assert np.all(np.diff(got) <= 1e-6), got


def test_sphereface_psi_values_at_k_boundaries():
    # psi(k pi / m) = 1 - 2k for m = 4 (continuous across every interval).
    head = head_with_kernel("sphereface", np.eye(8, 3, dtype=np.float32), scale=1.0, lambda_base=0.0, lambda_min=0.0)
    got = _target_column(head, np.array([0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4, math.pi]))
    np.testing.assert_allclose(got, [1.0, -1.0, -3.0, -5.0, -7.0], atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_target_curves_are_monotonic_and_match_reference(name):
    thetas = np.linspace(0.0, math.pi, 2001)
    head = heads.get(name, num_classes=4)
    curve = np.asarray(head.target_curve(thetas))
    assert curve.shape == thetas.shape and curve.dtype == np.float32
    assert np.all(np.diff(curve) <= 1e-6), name
    # SphereFace's curve is the one at lambda_min (5), where the annealing settles.
    np.testing.assert_allclose(curve, ref_target(name, thetas), atol=1e-3)
    # The margin only ever lowers the target below the head's own no-margin logit (LATSE eq. 8).
    plain = (math.pi - 2 * thetas) / math.pi if name == "li_arcface" else np.cos(thetas)
    assert np.all(curve <= plain + 1e-6), name


def test_sphereface_target_curve_lambda_argument():
    thetas = np.linspace(0.0, math.pi, 101)
    head = heads.get("sphereface", num_classes=4, margin=3)
    np.testing.assert_allclose(np.asarray(head.target_curve(thetas, lambda_value=0.0)), ref_psi(thetas, 3), atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(head.target_curve(thetas, lambda_value=100.0)),
        ref_target("sphereface", thetas, margin=3, lam=100.0),
        atol=1e-5,
    )


def test_combined_reduces_to_arcface_and_cosface():
    rng = np.random.default_rng(3)
    thetas = np.concatenate([[0.0, math.pi - 0.5 - 1e-3, math.pi - 0.5 + 1e-3, math.pi], rng.uniform(0, math.pi, 28)])
    kernel = np.eye(8, 3, dtype=np.float32)
    arc = _target_column(head_with_kernel("arcface", kernel, margin=0.5, scale=1.0), thetas)
    combined = _target_column(head_with_kernel("combined", kernel, m1=1.0, m2=0.5, m3=0.0, scale=1.0), thetas)
    np.testing.assert_allclose(combined, arc, atol=1e-3)  # one uses acos, the other expands cos(theta + m)
    cos = _target_column(head_with_kernel("cosface", kernel, margin=0.35, scale=1.0), thetas)
    combined = _target_column(head_with_kernel("combined", kernel, m1=1.0, m2=0.0, m3=0.35, scale=1.0), thetas)
    np.testing.assert_allclose(combined, cos, atol=1e-3)


def test_li_arcface_changes_negatives_too():
    kernel = np.eye(8, 3, dtype=np.float32)
    # Class 1's centre is e_1, at pi/2 - theta from these embeddings.
    thetas = np.array([0.2, 1.0, 2.0])
    logits = head_with_kernel("li_arcface", kernel, scale=64.0)([embeddings_at_angles(thetas), np.zeros(3, np.int32)]).numpy()
    theta_1 = np.abs(math.pi / 2 - thetas)
    np.testing.assert_allclose(logits[:, 1], 64.0 * (math.pi - 2 * theta_1) / math.pi, atol=2e-3)
    np.testing.assert_allclose(logits[:, 2], 0.0, atol=2e-3)  # theta = pi/2 -> (pi - pi) / pi


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", NAMES)
def test_gradients_finite_at_cos_plus_minus_one(name):
    kernel = np.eye(8, 3, dtype=np.float32)
    angles = [0.0, math.pi, math.pi / 2, 0.0, math.pi / 4, 3 * math.pi / 4]
    embeddings = tf.constant(embeddings_at_angles(np.array(angles)))
    labels = np.array([0, 0, 0, 1, 0, 0], dtype=np.int32)
    kwargs = {"lambda_base": 0.0, "lambda_min": 0.0} if name == "sphereface" else {}
    head = head_with_kernel(name, kernel, **kwargs)
    with tf.GradientTape() as tape:
        tape.watch(embeddings)
        logits = head([embeddings, labels], training=True)
        loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    grads = tape.gradient(loss, [embeddings] + head.trainable_weights)
    for grad in grads:
        assert grad is not None and np.all(np.isfinite(grad.numpy())), name


# ---------------------------------------------------------------- SphereFace annealing state


def test_sphereface_lambda_schedule_values():
    head = heads.get("sphereface", num_classes=4)
    steps = np.array([0, 1, 2, 10, 100, 1000, 1658, 1659, 100000], np.float32)
    np.testing.assert_allclose(head.lambda_schedule(steps).numpy(), ref_lambda(steps), rtol=1e-5)
    assert float(head.lambda_schedule(1659)) == 5.0  # 1000 / (1 + 0.12 * 1659) < 5
    custom = heads.get("sphereface", num_classes=4, lambda_base=50.0, lambda_gamma=0.5, lambda_power=2.0, lambda_min=0.1)
    want = ref_lambda(steps, base=50.0, gamma=0.5, power=2.0, lambda_min=0.1)
    np.testing.assert_allclose(custom.lambda_schedule(steps).numpy(), want, rtol=1e-5)


def test_sphereface_counter_moves_only_when_training():
    rng = np.random.default_rng(4)
    embeddings = rng.normal(size=(6, 8)).astype(np.float32)
    kernel = rng.normal(size=(8, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 6)
    # A fast schedule (lambda 10, 5, 3.3, ...) so one step visibly changes the logits.
    schedule = {"base": 10.0, "gamma": 1.0, "power": 1.0, "lambda_min": 0.5}
    head = head_with_kernel("sphereface", kernel, scale=30.0, lambda_base=10.0, lambda_gamma=1.0, lambda_power=1.0, lambda_min=0.5)
    weight_names = {w.name: w.trainable for w in head.weights}
    assert weight_names == {"kernel": True, "iteration": False}

    def want(step):
        return ref_logits("sphereface", embeddings, kernel, labels, 30.0, lam=float(ref_lambda(step, **schedule)))

    np.testing.assert_allclose(head([embeddings, labels]).numpy(), want(0), atol=3e-3)
    head([embeddings, labels], training=False)
    assert float(head.iteration) == 0.0
    # The first training call runs at lambda(1), like the reference layer (increment, then lambda).
    np.testing.assert_allclose(head([embeddings, labels], training=True).numpy(), want(1), atol=3e-3)
    np.testing.assert_allclose(head([embeddings, labels], training=True).numpy(), want(2), atol=3e-3)
    assert float(head.iteration) == 2.0
    np.testing.assert_allclose(float(head.current_lambda()), ref_lambda(2, **schedule), rtol=1e-6)
    np.testing.assert_allclose(head([embeddings, labels], training=False).numpy(), want(2), atol=3e-3)
    head(embeddings, training=True)  # inference path: no labels, no margin, no step
    assert float(head.iteration) == 2.0
    # Late in training lambda sits at lambda_min.
    head.iteration.assign(50000.0)
    np.testing.assert_allclose(head([embeddings, labels]).numpy(), want(50000), atol=3e-3)


def test_sphereface_counter_in_fit_and_predict():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(12, 8)).astype(np.float32)
    y = rng.integers(0, 4, 12).astype(np.int32)
    emb_in, label_in = keras.Input((8,)), keras.Input((), dtype="int32")
    head = heads.get("sphereface", num_classes=4)
    model = keras.Model([emb_in, label_in], head([emb_in, label_in]))
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit([x, y], y, batch_size=4, epochs=1, verbose=0)
    assert float(head.iteration) == 3.0
    model.predict([x, y], batch_size=4, verbose=0)
    model.evaluate([x, y], y, batch_size=4, verbose=0)
    assert float(head.iteration) == 3.0


# ---------------------------------------------------------------- softmax


def test_softmax_uses_bias_on_raw_features():
    rng = np.random.default_rng(6)
    embeddings = (5.0 * rng.normal(size=(6, 8))).astype(np.float32)  # far from unit norm
    kernel = rng.normal(size=(8, 4)).astype(np.float32)
    bias = np.array([0.5, -1.0, 2.0, 0.0], np.float32)
    labels = np.array([0, 1, 2, 3, 0, 1])
    head = head_with_kernel("softmax", kernel, scale=2.0)
    assert [w.name for w in head.trainable_weights] == ["kernel", "bias"]
    np.testing.assert_array_equal(head.bias.numpy(), np.zeros(4))  # zeros by default
    head.bias.assign(bias)
    want = ref_logits("softmax", embeddings, kernel, labels, 2.0, bias=bias)
    got = head([embeddings, labels], training=True).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(head(embeddings).numpy(), want, rtol=1e-5, atol=1e-4)  # no margin anywhere
    # The bias gets a gradient: d(sum logits)/d(bias_j) = scale * B.
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(head([embeddings, labels]))
    np.testing.assert_allclose(tape.gradient(total, head.bias.value).numpy(), np.full(4, 2.0 * 6))
    assert heads.get("softmax", num_classes=3).scale == 1.0


def test_softmax_checks_labels():
    head = heads.get("softmax", num_classes=3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes=3"):
        head([np.ones((2, 4), np.float32), np.array([0, 3])])


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "name,kwargs,message",
    [
        ("softmax", {"scale": 0.0}, r"`scale` must be > 0, got 0.0"),
        ("sphereface", {"margin": 2.5}, r"`margin` must be an integer >= 1, got 2.5"),
        ("sphereface", {"margin": 0}, r"`margin` must be an integer >= 1, got 0"),
        ("sphereface", {"lambda_min": -1.0}, r"`lambda_min` must be >= 0, got -1.0"),
        ("sphereface", {"lambda_gamma": -0.1}, r"`lambda_gamma` must be >= 0, got -0.1"),
        ("sphereface", {"lambda_base": float("nan")}, r"`lambda_base` must be >= 0, got nan"),
        ("sphereface", {"lambda_power": -2}, r"`lambda_power` must be >= 0, got -2"),
        ("combined", {"m1": 0.0}, r"`m1` must be > 0, got 0.0"),
        ("combined", {"m2": 1.6}, r"`m2` must be in \[0, pi/2\), got 1.6"),
        ("combined", {"m2": -0.1}, r"`m2` must be in \[0, pi/2\), got -0.1"),
        ("combined", {"m3": -0.2}, r"`m3` must be >= 0, got -0.2"),
        ("li_arcface", {"margin": -0.45}, r"`margin` must be >= 0, got -0.45"),
        ("linearface", {"a": 0.0}, r"`a` must be > 0 so the target decreases with the angle, got 0.0"),
        ("linearface", {"b": float("inf")}, r"`b` must be a finite number, got inf"),
        ("li_arcface", {"scale": -1}, r"`scale` must be > 0, got -1"),
    ],
)
def test_validation_errors(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        heads.get(name, num_classes=3, **kwargs)


def test_registered_names_and_defaults():
    assert set(NAMES) <= set(heads.list())
    sphere = heads.get("sphereface", num_classes=3)
    schedule = (sphere.lambda_base, sphere.lambda_gamma, sphere.lambda_power, sphere.lambda_min)
    assert (sphere.margin, sphere.scale, schedule) == (4, 30.0, (1000.0, 0.12, 1.0, 5.0))
    combined = heads.get("combined", num_classes=3)
    assert (combined.m1, combined.m2, combined.m3, combined.scale) == (1.0, 0.3, 0.2, 64.0)
    li = heads.get("li_arcface", num_classes=3)
    assert (li.margin, li.scale) == (0.45, 64.0)
    linear = heads.get("linearface", num_classes=3)
    assert (linear.a, linear.b, linear.scale) == (0.88, 0.88, 64.0)


@pytest.mark.parametrize("name", NAMES)
def test_float16_embeddings_give_float32_logits(name):
    rng = np.random.default_rng(7)
    embeddings = rng.normal(size=(4, 8)).astype(np.float16)
    labels = np.array([0, 1, 2, 0])
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        head = heads.get(name, num_classes=3)
        mixed = head([embeddings, labels])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert mixed.dtype == "float32" and head.kernel.dtype == "float32"
    np.testing.assert_allclose(mixed.numpy(), head([embeddings.astype(np.float32), labels]).numpy(), atol=1e-4)


# ---------------------------------------------------------------- shared checks


@pytest.mark.parametrize("name", NAMES)
def test_shared_checks(name, tmp_path):
    # Seeded: the kernel's initial values otherwise depend on the tests that ran before, and a
    # cosine near +-1 (arccos' steep end) turns float32 rounding into ~1e-5 logit differences.
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(2)
    inputs = [rng.normal(size=(8, 16)).astype(np.float32), rng.integers(0, 10, 8).astype(np.int32)]
    run_all_checks(lambda: heads.get(name, num_classes=10), inputs, tmp_path, call_kwargs={"training": True})
