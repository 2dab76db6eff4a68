"""MV-Softmax, ArcNegFace, CurricularFace and NPCFace against NumPy references of their equations."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasface.heads.arcnegface_head  # noqa: F401  registers "arcnegface"
import kerasface.heads.curricularface_head  # noqa: F401  registers "curricularface"
import kerasface.heads.mv_softmax_head  # noqa: F401  registers "mv_softmax"
import kerasface.heads.npcface_head  # noqa: F401  registers "npcface"
from kerasface import heads
from kerasface.testing.head_cases import head_with_kernel
from kerasface.testing import run_all_checks

# ---------------------------------------------------------------------------------------------
# NumPy references, float64, angles through np.arccos, written from the papers' equations.
# ---------------------------------------------------------------------------------------------


def _cosines(embeddings, kernel):
    e = embeddings.astype(np.float64)
    w = kernel.astype(np.float64)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    w = w / np.linalg.norm(w, axis=0, keepdims=True)
    return np.clip(e @ w, -1.0, 1.0)


def _arc(theta, m):
    """cos(theta + m), continued as cos(theta) - m sin(m) past theta + m > pi (ArcFace fallback)."""
    return np.where(theta + m <= math.pi, np.cos(theta + m), np.cos(theta) - m * np.sin(m))


def ref_mv_softmax(cos, labels, margin_type, m, t):
    """MV-Softmax: f(m, theta_y) target; mis-classified negatives (cos_j > f) -> t cos_j + t - 1."""
    rows = np.arange(len(labels))
    cos_y = cos[rows, labels]
    f = cos_y - m if margin_type == "am" else _arc(np.arccos(cos_y), m)
    logits = np.where(cos > f[:, None], t * cos + t - 1.0, cos)
    logits[rows, labels] = f
    return logits


def ref_arcnegface(cos, labels, m, alpha, sigma):
    """ArcNegFace: every negative -> t_j cos_j + t_j - 1, t_j = alpha exp(-(cos_j - T)^2 / sigma)."""
    rows = np.arange(len(labels))
    target = _arc(np.arccos(cos[rows, labels]), m)
    weight = alpha * np.exp(-((cos - target[:, None]) ** 2) / sigma)
    logits = weight * cos + weight - 1.0
    logits[rows, labels] = target
    return logits


def ref_curricularface(cos, labels, m, t):
    """CurricularFace eq. 8-9 with a given t: hard negatives (cos_j > T) -> cos_j (t + cos_j)."""
    rows = np.arange(len(labels))
    target = _arc(np.arccos(cos[rows, labels]), m)
    logits = np.where(cos > target[:, None], cos * (t + cos), cos)
    logits[rows, labels] = target
    return logits


def ref_npcface(cos, labels, t, alpha, m0, m1, hard_margin=None):
    """NPCFace eq. 10-12, sample by sample and class by class. Returns (logits, per-sample margin)."""
    hard_margin = m0 if hard_margin is None else hard_margin
    logits = cos.copy()
    margins = np.zeros(len(labels))
    for i, y in enumerate(labels):
        theta_y = np.arccos(cos[i, y])
        threshold = _arc(theta_y, hard_margin)
        hard_cos = []
        for j in range(cos.shape[1]):
            if j == y:
                continue
            if cos[i, j] > threshold:
                hard_cos.append(cos[i, j])
                logits[i, j] = t * cos[i, j] + alpha
        margins[i] = m0 + m1 * np.mean(hard_cos) if hard_cos else m0
        logits[i, y] = _arc(theta_y, margins[i])
    return logits, margins


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------



def _embeddings_with_cosines(rows, dim=8):
    """Unit embeddings whose cosines to the basis vectors e_0..e_{k-1} are the given rows."""
    rows = np.asarray(rows, dtype=np.float64)
    residual = 1.0 - np.sum(rows**2, axis=1)
    assert np.all(residual >= -1e-12), "cosines of one row must have squared sum <= 1"
    e = np.zeros((len(rows), dim))
    e[:, : rows.shape[1]] = rows
    e[:, rows.shape[1]] = np.sqrt(np.maximum(residual, 0.0))
    return e.astype(np.float32)


def _hand_picked(m):
    """Label-0 rows over 4 classes (kernel = identity): theta ~ 0, misclassified, near pi - m and pi."""
    def at(theta, *others):
        return [math.cos(theta), *others, *[0.0] * (3 - len(others))]

    rows = [
        at(0.0),  # theta = 0: no hard negative
        at(1e-4, 0.0, 5e-5),
        [0.5, 0.7, 0.1, -0.3],  # misclassified by class 1; class 2 lies between the heads' thresholds
        [0.9, 0.3, -0.2, 0.1],  # well classified
        at(math.pi / 2, 0.6, -0.5),  # theta = pi/2
        at(math.pi - m - 1e-3, 0.2, -0.15),  # just before theta + m = pi
        at(math.pi - m + 1e-3, 0.2, -0.15),  # just past it: the monotonic continuation
        at(math.pi - 0.05, 0.04),
        at(math.pi),  # theta = pi: every negative (cos 0) beats the target
        [0.1, 0.5, 0.5, 0.5],  # all negatives hard
    ]
    embeddings = _embeddings_with_cosines(rows)
    kernel = np.eye(8, 4, dtype=np.float32)
    labels = np.zeros(len(rows), dtype=np.int32)
    return embeddings, kernel, labels


def _random_batch(seed=0, batch=16, dim=8, classes=5):
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(batch, dim)).astype(np.float32)
    kernel = rng.normal(size=(dim, classes)).astype(np.float32)
    labels = rng.integers(0, classes, batch).astype(np.int32)
    return embeddings, kernel, labels


# ---------------------------------------------------------------------------------------------
# MV-Softmax
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("margin_type,margin", [("am", 0.35), ("arc", 0.5)])
@pytest.mark.parametrize("batch", ["random", "hand_picked"])
def test_mv_softmax_matches_reference(margin_type, margin, batch):
    embeddings, kernel, labels = _random_batch(3) if batch == "random" else _hand_picked(margin)
    head = head_with_kernel("mv_softmax", kernel, margin_type=margin_type, scale=1.0)
    got = head([embeddings, labels]).numpy()
    want = ref_mv_softmax(_cosines(embeddings, kernel), labels, margin_type, margin, 1.2)
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_mv_softmax_defaults_and_misclassified_row():
    head = heads.get("mv_softmax", num_classes=4)
    assert (head.margin_type, head.margin, head.t, head.scale) == ("am", 0.35, 1.2, 32.0)
    assert heads.get("mv_softmax", num_classes=4, margin_type="arc").margin == 0.5
    embeddings, kernel, labels = _hand_picked(0.35)
    head = head_with_kernel("mv_softmax", kernel)
    row = head([embeddings[2:3], labels[2:3]]).numpy()[0] / 32.0
    # cos = [0.5, 0.7, 0.1, -0.3], f = 0.5 - 0.35 = 0.15: only class 1 beats it (0.1 < 0.15).
    np.testing.assert_allclose(row, [0.15, 1.2 * 0.7 + 0.2, 0.1, -0.3], atol=1e-5)


def test_mv_softmax_with_t_one_is_plain_cosface():
    embeddings, kernel, labels = _random_batch(4)
    mv = head_with_kernel("mv_softmax", kernel, t=1.0, scale=30.0)([embeddings, labels]).numpy()
    cos = _cosines(embeddings, kernel)
    cos[np.arange(len(labels)), labels] -= 0.35
    np.testing.assert_allclose(mv, 30.0 * cos, atol=2e-4)


# ---------------------------------------------------------------------------------------------
# ArcNegFace
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", ["random", "hand_picked"])
def test_arcnegface_matches_reference(batch):
    embeddings, kernel, labels = _random_batch(5) if batch == "random" else _hand_picked(0.5)
    head = head_with_kernel("arcnegface", kernel, scale=1.0)
    got = head([embeddings, labels]).numpy()
    want = ref_arcnegface(_cosines(embeddings, kernel), labels, 0.5, 1.2, 2.0)
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_arcnegface_weights_are_constants_for_the_gradient():
    # t_j depends on the target column, but as a stop_gradient constant: a negative's logit
    # must not send gradient to the target class centre.
    embeddings, kernel, labels = _random_batch(6)
    head = head_with_kernel("arcnegface", kernel)
    labels = np.zeros_like(labels)
    with tf.GradientTape() as tape:
        logits = head([embeddings, labels])
        negatives = keras.ops.sum(logits[:, 1:])
    grad = tape.gradient(negatives, head.kernel).numpy()
    np.testing.assert_array_equal(grad[:, 0], 0.0)
    assert np.any(grad[:, 1:] != 0)


# ---------------------------------------------------------------------------------------------
# CurricularFace
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", ["random", "hand_picked"])
def test_curricularface_training_call_updates_t_then_uses_it(batch):
    embeddings, kernel, labels = _random_batch(7) if batch == "random" else _hand_picked(0.5)
    cos = _cosines(embeddings, kernel)
    mean_cos_y = np.mean(cos[np.arange(len(labels)), labels])
    head = head_with_kernel("curricularface", kernel, scale=1.0)
    assert float(head.t.numpy()) == 0.0
    got = head([embeddings, labels], training=True).numpy()
    t1 = 0.01 * mean_cos_y
    np.testing.assert_allclose(float(head.t.numpy()), t1, atol=1e-7)
    np.testing.assert_allclose(got, ref_curricularface(cos, labels, 0.5, t1), atol=2e-4)
    head([embeddings, labels], training=True)
    np.testing.assert_allclose(float(head.t.numpy()), 0.01 * mean_cos_y + 0.99 * t1, atol=1e-7)


@pytest.mark.parametrize("training", [False, None])
def test_curricularface_t_unchanged_without_training(training):
    embeddings, kernel, labels = _hand_picked(0.5)
    head = head_with_kernel("curricularface", kernel, scale=1.0)
    head.t.assign(0.7)
    got = head([embeddings, labels], training=training).numpy()
    assert float(head.t.numpy()) == pytest.approx(0.7)
    want = ref_curricularface(_cosines(embeddings, kernel), labels, 0.5, 0.7)
    np.testing.assert_allclose(got, want, atol=2e-4)
    # The hard negatives of the misclassified row get cos (t + cos) with the stored t.
    np.testing.assert_allclose(got[2, 1:], [0.7 * 1.4, 0.1 * 0.8, -0.3], atol=1e-5)


def test_curricularface_t_is_a_non_trainable_mean_aggregated_weight():
    head = heads.get("curricularface", num_classes=4)
    head.build([(None, 8), (None,)])
    assert [w.name for w in head.non_trainable_weights] == ["t"]
    assert head.t.aggregation == "mean"


# ---------------------------------------------------------------------------------------------
# NPCFace
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hard_margin", [None, 0.5])
@pytest.mark.parametrize("batch", ["random", "hand_picked"])
def test_npcface_matches_reference(batch, hard_margin):
    embeddings, kernel, labels = _random_batch(8) if batch == "random" else _hand_picked(0.4)
    head = head_with_kernel("npcface", kernel, scale=1.0, hard_margin=hard_margin)
    got = head([embeddings, labels]).numpy()
    want, _ = ref_npcface(_cosines(embeddings, kernel), labels, 1.1, 0.25, 0.4, 0.2, hard_margin)
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_npcface_cooperative_margin_per_sample():
    embeddings, kernel, labels = _hand_picked(0.4)
    cos = _cosines(embeddings, kernel)
    head = head_with_kernel("npcface", kernel, scale=1.0)
    target = head([embeddings, labels]).numpy()[:, 0]
    _, margins = ref_npcface(cos, labels, 1.1, 0.25, 0.4, 0.2)
    # Hand-computed: rows 0, 1, 3 have no hard negative -> m0; row 2 (cos_y = 0.5, threshold
    # cos(60deg + 0.4) = 0.123): only class 1 (0.7; 0.1 is below) -> m0 + 0.2 * 0.7.
    np.testing.assert_allclose(margins[[0, 1, 3]], 0.4)
    np.testing.assert_allclose(margins[2], 0.4 + 0.2 * 0.7)
    # Row 4 (theta = pi/2, threshold -0.389): 0.6 and 0 hard, -0.5 not -> m0 + 0.2 * 0.3.
    np.testing.assert_allclose(margins[4], 0.4 + 0.2 * 0.3)
    # Row 9: all three negatives (0.5 each) hard -> m0 + 0.2 * 0.5.
    np.testing.assert_allclose(margins[9], 0.4 + 0.2 * 0.5)
    # theta = pi: every negative (cos 0) is hard -> m0 + 0.
    np.testing.assert_allclose(margins[8], 0.4)
    # The head's margin, read back from its target logit where theta + m <= pi.
    theta = np.arccos(cos[:, 0])
    regular = theta + margins <= math.pi - 1e-2
    recovered = np.arccos(np.clip(target[regular], -1, 1)) - theta[regular]
    np.testing.assert_allclose(recovered, margins[regular], atol=2e-3)


def test_npcface_no_hard_batch_is_arcface_at_m0_and_all_hard_batch():
    # No hard negative anywhere: NPCFace == ArcFace(m0) exactly.
    embeddings = _embeddings_with_cosines([[1.0, 0, 0, 0], [0.95, 0.1, -0.2, 0.0], [0.9, 0.0, 0.3, 0.2]])
    kernel = np.eye(8, 4, dtype=np.float32)
    labels = np.zeros(3, dtype=np.int32)
    npc = head_with_kernel("npcface", kernel)([embeddings, labels]).numpy()
    arc = head_with_kernel("arcface", kernel, margin=0.4)([embeddings, labels]).numpy()
    np.testing.assert_allclose(npc, arc, atol=1e-4)
    # Every negative hard: every negative is t cos + alpha, margins m0 + m1 * mean.
    embeddings = _embeddings_with_cosines([[0.1, 0.5, 0.5, 0.5], [-0.2, 0.6, 0.3, -0.1]])
    labels = np.zeros(2, dtype=np.int32)
    got = head_with_kernel("npcface", kernel, scale=1.0)([embeddings, labels]).numpy()
    cos = _cosines(embeddings, kernel)
    np.testing.assert_allclose(got[:, 1:], 1.1 * cos[:, 1:] + 0.25, atol=1e-5)
    margins = 0.4 + 0.2 * cos[:, 1:].mean(axis=1)
    np.testing.assert_allclose(got[:, 0], np.cos(np.arccos(cos[:, 0]) + margins), atol=1e-5)


def test_npcface_target_logit_ignores_negative_centres_for_the_gradient():
    embeddings, kernel, labels = _random_batch(9)
    labels = np.zeros_like(labels)
    head = head_with_kernel("npcface", kernel)
    with tf.GradientTape() as tape:
        target = keras.ops.sum(head([embeddings, labels])[:, 0])
    grad = tape.gradient(target, head.kernel).numpy()
    np.testing.assert_array_equal(grad[:, 1:], 0.0)
    assert np.any(grad[:, 0] != 0)


# ---------------------------------------------------------------------------------------------
# All four
# ---------------------------------------------------------------------------------------------

ALL = [
    ("mv_softmax", {}),
    ("mv_softmax", {"margin_type": "arc"}),
    ("arcnegface", {}),
    ("curricularface", {}),
    ("npcface", {}),
]


NO_HARD = [[1.0, 0.0, 0.0, 0.0], [0.95, 0.1, -0.2, 0.0], [0.9, 0.0, 0.3, 0.2]]
ALL_HARD = [[0.1, 0.5, 0.5, 0.5], [-0.2, 0.6, 0.3, -0.1]]


@pytest.mark.parametrize(
    "name,kwargs,hard_negative",
    [
        ("mv_softmax", {}, lambda cos: 1.2 * cos + 0.2),
        ("mv_softmax", {"margin_type": "arc"}, lambda cos: 1.2 * cos + 0.2),
        ("curricularface", {}, lambda cos: cos * (0.3 + cos)),
        ("npcface", {}, lambda cos: 1.1 * cos + 0.25),
    ],
)
def test_no_hard_and_all_hard_batches(name, kwargs, hard_negative):
    kernel = np.eye(8, 4, dtype=np.float32)
    for rows, expected in ((NO_HARD, lambda cos: cos), (ALL_HARD, hard_negative)):
        embeddings = _embeddings_with_cosines(rows)
        labels = np.zeros(len(rows), dtype=np.int32)
        head = head_with_kernel(name, kernel, scale=1.0, **kwargs)
        if name == "curricularface":
            head.t.assign(0.3)
        got = head([embeddings, labels]).numpy()
        np.testing.assert_allclose(got[:, 1:], expected(np.asarray(rows)[:, 1:]), atol=1e-5)


@pytest.mark.parametrize("name,kwargs", ALL)
def test_gradients_finite_at_cos_plus_minus_one(name, kwargs):
    kernel = np.eye(8, 3, dtype=np.float32)
    embeddings = tf.constant(_embeddings_with_cosines([[1, 0, 0], [-1, 0, 0], [0, 0, 0], [1, 0, 0], [0, -1, 0]]))
    labels = np.array([0, 0, 0, 1, 2], dtype=np.int32)  # row 3: cos_y = 0, a negative at cos = 1
    head = head_with_kernel(name, kernel, **kwargs)
    with tf.GradientTape() as tape:
        tape.watch(embeddings)
        logits = head([embeddings, labels], training=True)
        loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    assert np.all(np.isfinite(logits.numpy()))
    for grad in tape.gradient(loss, [embeddings, head.kernel]):
        assert np.all(np.isfinite(grad.numpy()))


@pytest.mark.parametrize("name,kwargs", ALL)
def test_inference_path_is_plain_scaled_cosine(name, kwargs):
    embeddings, kernel, _ = _random_batch(10)
    head = head_with_kernel(name, kernel, **kwargs)
    np.testing.assert_allclose(head(embeddings).numpy(), head.scale * _cosines(embeddings, kernel), atol=1e-4)


def test_target_curves_at_defaults():
    theta = np.linspace(0.0, math.pi, 9)
    curves = {
        ("mv_softmax", "am"): np.cos(theta) - 0.35,
        ("mv_softmax", "arc"): _arc(theta, 0.5),
        ("arcnegface", None): _arc(theta, 0.5),
        ("curricularface", None): _arc(theta, 0.5),
        ("npcface", None): _arc(theta, 0.4),
    }
    for (name, margin_type), want in curves.items():
        kwargs = {"margin_type": margin_type} if margin_type else {}
        got = keras.ops.convert_to_numpy(heads.get(name, num_classes=3, **kwargs).target_curve(theta))
        np.testing.assert_allclose(got, want, atol=2e-4, err_msg=name)


def test_registered_and_errors():
    assert {"mv_softmax", "arcnegface", "curricularface", "npcface"} <= set(heads.list())
    cases = [
        ("mv_softmax", {"margin_type": "sphere"}, r"`margin_type` must be one of \['am', 'arc'\], got 'sphere'"),
        ("mv_softmax", {"t": 0.5}, r"`t` must be >= 1, got 0.5"),
        ("mv_softmax", {"margin": -0.1}, r"`margin` must be >= 0 for margin_type='am', got -0.1"),
        ("mv_softmax", {"margin_type": "arc", "margin": 2.0}, r"`margin` must be in \[0, pi/2\) .*got 2.0"),
        ("arcnegface", {"sigma": 0}, r"`sigma` must be > 0, got 0"),
        ("arcnegface", {"alpha": -1}, r"`alpha` must be > 0, got -1"),
        ("arcnegface", {"margin": 2.0}, r"`margin` must be in \[0, pi/2\), got 2.0"),
        ("curricularface", {"alpha": 0.0}, r"`alpha` must be in \(0, 1\], got 0.0"),
        ("npcface", {"m1": 0.5}, r"`m1` must be in \[0, m0\].*got m0=0.4, m1=0.5"),
        ("npcface", {"m0": 1.2, "m1": 0.5}, r"`m0 \+ m1` must be < pi/2, got m0=1.2, m1=0.5"),
        ("npcface", {"t": 0}, r"`t` must be > 0, got 0"),
        ("npcface", {"hard_margin": -0.1}, r"`hard_margin` must be in \[0, pi/2\) or None, got -0.1"),
    ]
    for name, kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            heads.get(name, num_classes=3, **kwargs)


@pytest.mark.parametrize("name,kwargs", ALL)
def test_shared_checks(name, kwargs, tmp_path):
    rng = np.random.default_rng(2)
    inputs = [rng.normal(size=(8, 16)).astype(np.float32), rng.integers(0, 10, 8).astype(np.int32)]
    # The Arc variant of MV-Softmax differs from the AM one by an elementwise target only; the
    # (slow) MirroredStrategy check of the AM variant covers the shared code path.
    skip = ("mirrored",) if kwargs.get("margin_type") == "arc" else ()
    run_all_checks(
        lambda: heads.get(name, num_classes=10, **kwargs), inputs, tmp_path, call_kwargs={"training": True}, skip=skip
    )
