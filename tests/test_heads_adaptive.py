"""AdaCos, AdaFace, MagFace and sub-center ArcFace against NumPy references from the papers."""

import contextlib
import math
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasface.heads.adacos_head  # noqa: F401  (registers "adacos")
import kerasface.heads.adaface_head  # noqa: F401  (registers "adaface")
import kerasface.heads.magface_head  # noqa: F401  (registers "magface")
import kerasface.heads.subcenter_arcface_head  # noqa: F401  (registers "subcenter_arcface")
from kerasface import heads
from kerasface.testing.head_cases import head_with_kernel
from kerasface.testing import run_all_checks

# ---------------------------------------------------------------- NumPy references (float64)


def _unit(x, axis):
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


def _cosine(embeddings, kernel):
    return np.clip(_unit(embeddings.astype(np.float64), 1) @ _unit(kernel.astype(np.float64), 0), -1.0, 1.0)


def _with_target(cos, labels, target):
    out = cos.copy()
    out[np.arange(len(labels)), labels] = target
    return out


def adacos_scale_reference(cos, labels, old_scale):
    """AdaCos Sec. 4.2: s = log(B_avg) / cos(min(pi/4, median theta_y)), B_avg with the old s."""
    is_target = np.arange(cos.shape[1])[None] == labels[:, None]
    b_avg = np.mean(np.sum(np.where(is_target, 0.0, np.exp(old_scale * cos)), axis=1))
    theta_median = np.median(np.arccos(cos[np.arange(len(labels)), labels]))
    return np.log(b_avg) / np.cos(min(math.pi / 4, theta_median))


def adaface_reference(cos, labels, norms, mean, std, margin=0.4, h=0.333, eps=1e-3):
    """AdaFace: z^ = clip((||z|| - mu) / (sigma + eps) * h, -1, 1); g_angle = -m z^, g_add = m z^ + m."""
    z = np.clip((np.clip(norms, 0.001, 100.0) - mean) / (std + eps) * h, -1.0, 1.0)
    theta = np.arccos(cos[np.arange(len(labels)), labels])
    target = np.cos(np.clip(theta - margin * z, eps, math.pi - eps)) - (margin * z + margin)
    return _with_target(cos, labels, target)


def magface_margin_reference(norms, l_a=10.0, u_a=110.0, l_m=0.45, u_m=0.8):
    a = np.clip(norms, l_a, u_a)
    return a, (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m


def arc_target_reference(cos_target, margin, easy_margin=False):
    theta = np.arccos(cos_target)
    target = np.cos(theta + margin)
    if easy_margin:
        return np.where(cos_target > 0, target, cos_target)
    return np.where(theta + margin <= math.pi, target, cos_target - margin * np.sin(margin))


# ---------------------------------------------------------------- helpers


@contextlib.contextmanager
def _no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _at_angles(thetas, norms=None, dim=8):
    """Embeddings at exactly angle theta from e_0 (class 0's centre in an identity kernel)."""
    e = np.zeros((len(thetas), dim))
    e[:, 0] = np.cos(thetas)
    e[:, 1] = np.sin(thetas)
    if norms is not None:
        e *= np.asarray(norms, dtype=np.float64)[:, None]
    return e.astype(np.float32)



def _random_problem(seed, batch=8, dim=8, classes=5, norm_range=None):
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(batch, dim))
    if norm_range is not None:
        embeddings = _unit(embeddings, 1) * rng.uniform(*norm_range, size=(batch, 1))
    kernel = rng.normal(size=(dim, classes)).astype(np.float32)
    labels = rng.integers(0, classes, batch).astype(np.int32)
    return embeddings.astype(np.float32), kernel, labels


# ---------------------------------------------------------------- AdaCos


def test_adacos_fixed_scale_for_ten_classes():
    embeddings, kernel, labels = _random_problem(0, classes=10)
    head = head_with_kernel("adacos", kernel, dynamic=False)
    assert head.scale == pytest.approx(math.sqrt(2) * math.log(9))
    assert head.scale == pytest.approx(3.107345, abs=1e-6)
    assert [w.name for w in head.weights] == ["kernel"]
    want = head.scale * _cosine(embeddings, kernel)  # no margin: the same logits for every call
    np.testing.assert_allclose(head([embeddings, labels], training=True).numpy(), want, atol=1e-5)
    np.testing.assert_allclose(head(embeddings).numpy(), want, atol=1e-5)


def test_adacos_scale_arguments():
    with pytest.raises(ValueError, match=r"`num_classes` must be >= 3 for AdaCos.*got 2"):
        heads.get("adacos", num_classes=2)
    assert heads.get("adacos", num_classes=2, scale=5.0).scale == 5.0
    head = heads.get("adacos", num_classes=1001)
    assert head.scale == pytest.approx(math.sqrt(2) * math.log(1000))
    assert heads.get_class("adacos").from_config(head.get_config()).scale == head.scale


@pytest.mark.parametrize("batch", [7, 8])  # odd and even: the median of an even count averages
def test_adacos_dynamic_scale_updates_like_the_paper(batch):
    embeddings, kernel, labels = _random_problem(1, batch=batch, classes=6)
    head = head_with_kernel("adacos", kernel)
    cos = _cosine(embeddings, kernel)
    s0 = math.sqrt(2) * math.log(5)
    assert float(head.adaptive_scale.numpy()) == pytest.approx(s0, rel=1e-6)

    s1 = adacos_scale_reference(cos, labels, s0)
    got = head([embeddings, labels], training=True).numpy()
    assert float(head.adaptive_scale.numpy()) == pytest.approx(s1, rel=1e-5)
    np.testing.assert_allclose(got, s1 * cos, rtol=1e-5, atol=1e-5)  # this call already uses s1

    s2 = adacos_scale_reference(cos, labels, s1)
    head([embeddings, labels], training=True)
    assert float(head.adaptive_scale.numpy()) == pytest.approx(s2, rel=1e-5)
    assert s2 != pytest.approx(s1, rel=1e-3)  # B_avg depends on the previous s

    # training=False and inference: the stored s, unchanged.
    np.testing.assert_allclose(head([embeddings, labels], training=False).numpy(), s2 * cos, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(head(embeddings).numpy(), s2 * cos, rtol=1e-5, atol=1e-5)
    assert float(head.adaptive_scale.numpy()) == pytest.approx(s2, rel=1e-5)


@pytest.mark.parametrize(
    "thetas",
    [
        np.array([0.0, 1e-3, 0.1, 0.2, 0.3]),  # well classified: median < pi/4, s = log B / cos(theta_med)
        np.array([0.5, 2.0, 2.5, 3.0, math.pi]),  # mostly misclassified: median clamped to pi/4
    ],
)
def test_adacos_dynamic_scale_hand_picked_angles(thetas):
    kernel = np.eye(8, 4, dtype=np.float32)
    embeddings = _at_angles(thetas)
    labels = np.zeros(len(thetas), dtype=np.int32)
    head = head_with_kernel("adacos", kernel)
    head([embeddings, labels], training=True)
    cos = _cosine(embeddings, kernel)
    want = adacos_scale_reference(cos, labels, math.sqrt(2) * math.log(3))
    assert float(head.adaptive_scale.numpy()) == pytest.approx(want, rel=1e-5)


# ---------------------------------------------------------------- AdaFace


def test_adaface_matches_reference_and_updates_the_moving_averages():
    embeddings, kernel, labels = _random_problem(2, batch=8, classes=5, norm_range=(5.0, 60.0))
    norms = np.linalg.norm(embeddings.astype(np.float64), axis=1)
    cos = _cosine(embeddings, kernel)
    head = head_with_kernel("adaface", kernel, scale=30.0)

    mean = 0.01 * norms.mean() + 0.99 * 20.0
    std = 0.01 * norms.std(ddof=1) + 0.99 * 100.0
    got = head([embeddings, labels], training=True).numpy()
    assert float(head.norm_mean.numpy()) == pytest.approx(mean, rel=1e-6)
    assert float(head.norm_std.numpy()) == pytest.approx(std, rel=1e-6)
    np.testing.assert_allclose(got, 30.0 * adaface_reference(cos, labels, norms, mean, std), atol=2e-4)

    # training=False: the stored averages, unchanged; inference: plain scaled cosine.
    got = head([embeddings, labels], training=False).numpy()
    np.testing.assert_allclose(got, 30.0 * adaface_reference(cos, labels, norms, mean, std), atol=2e-4)
    assert float(head.norm_mean.numpy()) == pytest.approx(mean, rel=1e-6)
    assert float(head.norm_std.numpy()) == pytest.approx(std, rel=1e-6)
    np.testing.assert_allclose(head(embeddings).numpy(), 30.0 * cos, atol=2e-4)


def test_adaface_hand_picked_norms_and_angles():
    # momentum=1: the batch's own statistics, so z^ spans [-1, 1] (h=1 saturates the ends).
    thetas = np.array([0.0, 1e-3, 0.3, math.pi / 2, 2.8, 1.2, math.pi, 1.0])
    norms = np.array([100.0, 90.0, 60.0, 50.0, 40.0, 5.0, 1.0, 250.0])  # 250 is clipped to 100
    kernel = np.eye(8, 3, dtype=np.float32)
    embeddings = _at_angles(thetas, norms)
    labels = np.zeros(len(thetas), dtype=np.int32)
    head = head_with_kernel("adaface", kernel, scale=1.0, h=1.0, momentum=1.0)
    got = head([embeddings, labels], training=True).numpy()
    safe = np.clip(norms, 0.001, 100.0)
    want = adaface_reference(_cosine(embeddings, kernel), labels, norms, safe.mean(), safe.std(ddof=1), h=1.0)
    np.testing.assert_allclose(got, want, atol=2e-3)
    z = np.clip((safe - safe.mean()) / (safe.std(ddof=1) + 1e-3), -1, 1)
    assert z.min() < -0.9 and z.max() > 0.9  # both margin regimes are exercised
    # A high-norm sample at theta=0 gets an angle clipped at eps; a low-norm one at pi clipped at pi - eps.
    assert got[0, 0] == pytest.approx(math.cos(1e-3) - (0.4 * z[0] + 0.4), abs=2e-3)
    assert got[6, 0] == pytest.approx(math.cos(math.pi - 1e-3) - (0.4 * z[6] + 0.4), abs=2e-3)
    # The regimes: z^ = -1 is ArcFace's cos(theta + m); z^ = +1 is cos(theta - m) - 2m.
    assert z[5] == -1.0 and z[7] == 1.0
    assert got[5, 0] == pytest.approx(math.cos(1.2 + 0.4), abs=1e-5)
    assert got[7, 0] == pytest.approx(math.cos(1.0 - 0.4) - 0.8, abs=1e-5)


def test_adaface_batch_of_one_and_target_curve():
    kernel = np.eye(8, 3, dtype=np.float32)
    head = head_with_kernel("adaface", kernel, momentum=1.0)
    head([_at_angles(np.array([0.5]), [30.0]), np.array([0])], training=True)
    assert float(head.norm_mean.numpy()) == pytest.approx(30.0, rel=1e-6)
    assert float(head.norm_std.numpy()) == 0.0  # unbiased std undefined at n=1: 0, not nan
    theta = np.linspace(0, math.pi, 9)
    want = np.cos(np.clip(theta, 1e-3, math.pi - 1e-3)) - 0.4
    np.testing.assert_allclose(keras.ops.convert_to_numpy(head.target_curve(theta)), want, atol=1e-5)


def test_adaface_argument_errors():
    with pytest.raises(ValueError, match=r"`momentum` must be in \(0, 1\], got 0"):
        heads.get("adaface", num_classes=3, momentum=0)
    with pytest.raises(ValueError, match="`h` must be > 0, got -1"):
        heads.get("adaface", num_classes=3, h=-1)


# ---------------------------------------------------------------- MagFace


@pytest.mark.parametrize("easy_margin", [False, True])
def test_magface_hand_picked_magnitudes_and_angles(easy_margin):
    near_pi_minus_m = [math.pi - 0.45 - 1e-3, math.pi - 0.45 + 1e-2]  # either side of theta + l_m = pi
    thetas = np.array([0.0, 0.3, math.pi / 2, 2.0, *near_pi_minus_m, math.pi - 0.05, math.pi])
    norms = np.array([5.0, 10.0, 35.0, 60.0, 10.0, 10.0, 110.0, 500.0])
    kernel = np.eye(8, 3, dtype=np.float32)
    embeddings = _at_angles(thetas, norms)
    labels = np.zeros(len(thetas), dtype=np.int32)
    head = head_with_kernel("magface", kernel, scale=1.0, easy_margin=easy_margin)
    got = head([embeddings, labels], training=True).numpy()
    cos = _cosine(embeddings, kernel)
    _, margin = magface_margin_reference(norms)
    want = _with_target(cos, labels, arc_target_reference(cos[:, 0], margin, easy_margin))
    np.testing.assert_allclose(got, want, atol=2e-3)
    if not easy_margin:
        # Samples 4 and 5 straddle theta + m = pi at the same margin: still decreasing.
        assert got[5, 0] < got[4, 0]


def test_magface_random_batch_matches_reference():
    embeddings, kernel, labels = _random_problem(3, batch=8, classes=5, norm_range=(2.0, 130.0))
    head = head_with_kernel("magface", kernel)
    got = head([embeddings, labels], training=False).numpy()
    cos = _cosine(embeddings, kernel)
    _, margin = magface_margin_reference(np.linalg.norm(embeddings.astype(np.float64), axis=1))
    want = _with_target(cos, labels, arc_target_reference(cos[np.arange(8), labels], margin))
    np.testing.assert_allclose(got, 64.0 * want, atol=5e-3)


def test_magface_regulariser_is_added_only_when_training():
    embeddings, kernel, labels = _random_problem(4, batch=6, classes=4, norm_range=(1.0, 150.0))
    a, _ = magface_margin_reference(np.linalg.norm(embeddings.astype(np.float64), axis=1))
    want = 35.0 * np.mean(1.0 / a + a / 110.0**2)
    head = head_with_kernel("magface", kernel)
    head([embeddings, labels], training=True)
    assert len(head.losses) == 1
    assert float(head.losses[0]) == pytest.approx(want, rel=1e-5)
    head([embeddings, labels], training=False)
    assert head.losses == []

    # Inside a model, fit's loss = cross-entropy + lambda_g * mean g(a).
    emb_in, lab_in = keras.Input((8,)), keras.Input((), dtype="int32")
    model = keras.Model([emb_in, lab_in], head_with_kernel("magface", kernel)([emb_in, lab_in]))
    logits = model([embeddings, labels], training=True)
    assert float(sum(model.losses)) == pytest.approx(want, rel=1e-5)
    assert logits.shape == (6, 4)


def test_magface_gradient_flows_through_the_magnitude():
    """The radial gradient comes only from a (g and m(a)); the clip stops it outside [l_a, u_a]."""
    kernel = np.eye(8, 3, dtype=np.float32)
    embeddings = tf.constant(_at_angles(np.array([0.7, 1.2, 0.4, 2.0]), [40.0, 80.0, 5.0, 300.0]))
    labels = np.array([0, 1, 0, 2], dtype=np.int32)
    for lambda_g, use_ce in [(35.0, False), (0.0, True)]:  # g alone; the margin m(a) alone
        with pytest.warns(UserWarning, match="below the paper's bound") if lambda_g == 0 else _no_warning():
            head = head_with_kernel("magface", kernel, lambda_g=lambda_g)
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            logits = head([embeddings, labels], training=True)
            loss = sum(head.losses)
            if use_ce:
                loss = loss + tf.reduce_sum(
                    keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
                )
        radial = np.sum(tape.gradient(loss, embeddings).numpy() * _unit(embeddings.numpy(), 1), axis=1)
        assert np.all(np.abs(radial[:2]) > 1e-6), radial
        np.testing.assert_allclose(radial[2:], 0.0, atol=1e-7)


def test_magface_arguments_and_target_curve():
    with pytest.warns(UserWarning, match=r"`lambda_g`=20.0 is below the paper's bound 22\.59"):
        heads.get("magface", num_classes=3, lambda_g=20)
    with pytest.raises(ValueError, match=r"0 < `l_a` < `u_a`, got l_a=50, u_a=40"):
        heads.get("magface", num_classes=3, l_a=50, u_a=40)
    with pytest.raises(ValueError, match=r"`l_m` <= `u_m` < pi/2, got l_m=0.9, u_m=0.8"):
        heads.get("magface", num_classes=3, l_m=0.9)
    head = heads.get("magface", num_classes=3)
    theta = np.linspace(0, math.pi, 13)
    want = arc_target_reference(np.cos(theta), 0.625)  # a = 60 -> m = (0.45 + 0.8) / 2
    np.testing.assert_allclose(keras.ops.convert_to_numpy(head.target_curve(theta)), want, atol=2e-3)


# ---------------------------------------------------------------- sub-center ArcFace


def test_subcenter_pooling_picks_the_max_class_major():
    rng = np.random.default_rng(5)
    classes, k, dim = 4, 3, 8
    embeddings = rng.normal(size=(10, dim)).astype(np.float32)
    kernel = rng.normal(size=(dim, classes * k)).astype(np.float32)
    labels = rng.integers(0, classes, 10).astype(np.int32)
    head = head_with_kernel("subcenter_arcface", kernel, num_subcenters=k, scale=10.0)
    assert tuple(head.kernel.shape) == (dim, classes * k)
    per_center = _cosine(embeddings, kernel).reshape(10, classes, k)  # column c*k + i = class c
    pooled = per_center.max(axis=2)
    np.testing.assert_allclose(head.cosine(embeddings).numpy(), pooled, atol=1e-5)
    want = _with_target(pooled, labels, arc_target_reference(pooled[np.arange(10), labels], 0.5))
    np.testing.assert_allclose(head([embeddings, labels]).numpy(), 10.0 * want, atol=2e-4)
    np.testing.assert_allclose(head(embeddings).numpy(), 10.0 * pooled, atol=2e-4)


def test_subcenter_layout_and_dominant_centers():
    classes, k, dim = 3, 3, 8
    kernel = np.zeros((dim, classes * k), np.float32)
    for c in range(classes):
        for i in range(k):
            kernel[c, c * k + i] = 1.0
            kernel[3 + i, c * k + i] = 0.5  # sub-centre i of class c leans toward axis 3+i
    head = head_with_kernel("subcenter_arcface", kernel, num_subcenters=k)
    # Class 1, sub-centre 2 is column 5: an embedding on it has cosine 1 for class 1 only.
    np.testing.assert_allclose(head.cosine(kernel[:, 5:6].T).numpy()[0], [0.25 / 1.25, 1.0, 0.25 / 1.25], atol=1e-5)
    # Samples of class 0 near sub-centre 1 (x2), class 2 near sub-centre 2 (x2) and 0 (x1); class 1 none.
    embeddings = np.stack([kernel[:, 1], kernel[:, 1] + 0.01, kernel[:, 8], kernel[:, 8] * 2, kernel[:, 6]])
    labels = np.array([0, 0, 2, 2, 2])
    counts = keras.ops.convert_to_numpy(head.subcenter_counts(embeddings, labels))
    np.testing.assert_array_equal(counts, [[0, 2, 0], [0, 0, 0], [1, 0, 2]])
    dominant = keras.ops.convert_to_numpy(head.dominant_centers(counts))
    np.testing.assert_array_equal(dominant, kernel[:, [1, 3, 8]])  # class 1 has no samples: sub-centre 0
    with pytest.raises(ValueError, match=r"`counts` must have shape \(3, 3\).*got \(3, 2\)"):
        head.dominant_centers(np.zeros((3, 2)))


def test_subcenter_with_one_center_is_arcface():
    embeddings, kernel, labels = _random_problem(6)
    sub = head_with_kernel("subcenter_arcface", kernel, num_subcenters=1)([embeddings, labels]).numpy()
    arc = head_with_kernel("arcface", kernel)([embeddings, labels]).numpy()
    np.testing.assert_allclose(sub, arc, atol=1e-5)
    with pytest.raises(ValueError, match="`num_subcenters` must be an integer >= 1, got 0"):
        heads.get("subcenter_arcface", num_classes=3, num_subcenters=0)


# ---------------------------------------------------------------- every head


NAMES = {
    "adacos": {},
    "adacos_fixed": {"dynamic": False},
    "adaface": {},
    "magface": {},
    "subcenter_arcface": {},
}


def _registered(key):
    return key.replace("_fixed", "")


@pytest.mark.parametrize("key", sorted(NAMES))
def test_gradients_finite_at_cos_plus_minus_one_and_zero_embedding(key):
    kwargs = dict(NAMES[key])
    if key == "subcenter_arcface":
        kwargs["num_subcenters"] = 2
        kernel = np.zeros((8, 6), np.float32)
        kernel[0, 0] = kernel[0, 1] = kernel[1, 2] = kernel[2, 3] = kernel[1, 4] = kernel[3, 5] = 1.0
    else:
        kernel = np.eye(8, 3, dtype=np.float32)
    thetas = np.array([0.0, math.pi, math.pi / 2, 0.0, 0.0])
    embeddings = _at_angles(thetas, [20.0, 60.0, 1.0, 30.0, 1.0])
    embeddings[4] = 0.0  # a zero-norm embedding
    embeddings = tf.constant(embeddings)
    labels = np.array([0, 0, 0, 1, 2], dtype=np.int32)
    head = head_with_kernel(_registered(key), kernel, **kwargs)
    with tf.GradientTape() as tape:
        tape.watch(embeddings)
        logits = head([embeddings, labels], training=True)
        loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        loss = loss + sum(head.losses)
    assert np.all(np.isfinite(logits.numpy()))
    for grad in tape.gradient(loss, [embeddings, head.kernel]):
        assert np.all(np.isfinite(grad.numpy()))
    assert all(np.all(np.isfinite(w.numpy())) for w in head.weights)


@pytest.mark.parametrize("key", sorted(NAMES))
def test_shared_checks(key, tmp_path):
    rng = np.random.default_rng(7)
    embeddings = rng.normal(size=(8, 16))
    if key in ("adaface", "magface"):
        # Raw features with magnitudes across MagFace's [10, 110] and AdaFace's typical range.
        embeddings = _unit(embeddings, 1) * rng.uniform(5.0, 120.0, size=(8, 1))
    inputs = [embeddings.astype(np.float32), rng.integers(0, 10, 8).astype(np.int32)]
    # Fixed AdaCos has no state and the base class's call path (checked in test_heads.py):
    # only its config (the resolved default scale) needs the round trips; saves ~20 s.
    skip = ("mixed_precision", "xla", "mirrored") if key == "adacos_fixed" else ()
    run_all_checks(
        lambda: heads.get(_registered(key), num_classes=10, **NAMES[key]),
        inputs,
        tmp_path,
        call_kwargs={"training": True},
        skip=skip,
    )


def test_registry_lists_the_adaptive_heads():
    assert {"adacos", "adaface", "magface", "subcenter_arcface"} <= set(heads.list())
