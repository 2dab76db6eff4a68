"""All-pairs scoring and the verification metrics at scale, against independent NumPy references.

Small hand-made cases live in test_evaluation.py; this file checks larger inputs, ties, values
that differ in the last bits, FARs down to 1e-6 and ROC thinning.
"""

import numpy as np
import pytest

from kerasface.evaluation.all_pair_scores import all_pair_scores, pair_from_index
from kerasface.evaluation.verification import (
    evaluate_scores,
    roc_auc,
    roc_curve,
    tar_at_far,
    thin_roc,
    verification_accuracy,
)

# ----------------------------------------------------------------------------- references


def _kfold_reference(scores, issame, folds):
    """Per held-out fold: every candidate threshold on the other folds, lowest best kept."""
    accuracies, thresholds = [], []
    for fold in np.unique(folds):
        train = folds != fold
        values = np.unique(scores[train])
        middles = (values[:-1] + values[1:]) / 2
        # A midpoint that rounds onto the upper value does not separate: the lower one does.
        middles = np.where(middles < values[1:], middles, values[:-1])
        candidates = np.concatenate([[np.nextafter(values[0], -np.inf)], middles, [values[-1]]])
        train_scores, train_same = scores[train], issame[train]
        correct = np.concatenate([
            ((train_scores[None] > block[:, None]) == train_same[None]).sum(axis=1)
            for block in np.array_split(candidates, max(1, len(candidates) // 256))
        ])
        best = candidates[np.argmax(correct)]  # argmax: the first (lowest) best threshold
        test = ~train
        accuracies.append(np.mean((scores[test] > best) == issame[test]))
        thresholds.append(best)
    return np.array(accuracies), np.array(thresholds)


def _tar_reference(scores, issame, far):
    """Lowest threshold among {-inf} + distinct scores whose FAR is <= far; its TAR."""
    genuine, impostors = np.sort(scores[issame]), np.sort(scores[~issame])
    candidates = np.concatenate([[-np.inf], np.unique(scores)])
    fars = (len(impostors) - np.searchsorted(impostors, candidates, side="right")) / len(impostors)
    threshold = candidates[np.argmax(fars <= far)]
    tar = (len(genuine) - np.searchsorted(genuine, threshold, side="right")) / len(genuine)
    return tar, threshold


def _scores_with_ties(rng, num, genuine_fraction, decimals):
    issame = rng.random(num) < genuine_fraction
    scores = rng.normal(size=num) * 0.2 + 0.5 * issame
    return (scores if decimals is None else np.round(scores, decimals)), issame


# ----------------------------------------------------------------------------- all pairs


@pytest.mark.parametrize("chunk_size", [1, 7, 50, 1024])
def test_all_pair_scores_match_double_loop(chunk_size):
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(61, 9)).astype(np.float32) * 3  # not normalised
    labels = np.array([f"id{value}" for value in rng.integers(0, 8, size=61)])
    scores, issame = all_pair_scores(embeddings, labels, chunk_size=chunk_size)
    unit = embeddings.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    expected_scores, expected_same = [], []
    for i in range(61):
        for j in range(i + 1, 61):
            expected_scores.append(np.dot(unit[i], unit[j]))
            expected_same.append(labels[i] == labels[j])
    assert scores.dtype == np.float64 and issame.dtype == bool
    assert scores.shape == issame.shape == (61 * 60 // 2,)
    np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(issame, expected_same)


def test_pair_from_index_inverts_the_pair_order():
    for num in (2, 3, 17, 400):
        rows, columns = np.triu_indices(num, k=1)
        i, j = pair_from_index(np.arange(len(rows)), num)
        np.testing.assert_array_equal(i, rows)
        np.testing.assert_array_equal(j, columns)
    # Large M: float rounding of the quadratic inverse is corrected.
    num = 300_000
    last = num * (num - 1) // 2 - 1
    assert pair_from_index(last, num) == (num - 2, num - 1)
    assert pair_from_index(num - 2, num) == (0, num - 1)
    assert pair_from_index(num - 1, num) == (1, 2)
    with pytest.raises(ValueError, match=r"pair positions must be in \[0, 3\) for 3 embeddings"):
        pair_from_index(3, 3)


def test_all_pair_scores_bad_input():
    with pytest.raises(ValueError, match=r"`labels` must have shape \(4,\) .* got \(3,\)"):
        all_pair_scores(np.ones((4, 2)), [0, 1, 2])
    with pytest.raises(ValueError, match=r"`embeddings` must be a 2-D numeric \(M, D\) array"):
        all_pair_scores(np.ones(4), [0, 1, 2, 3])
    with pytest.raises(ValueError, match="needs at least 2 embeddings, got 1"):
        all_pair_scores(np.ones((1, 2)), [0])
    embeddings = np.ones((4, 2))
    embeddings[2] = 0
    with pytest.raises(ValueError, match=r"1 rows that are zero or not finite \(first: row 2\)"):
        all_pair_scores(embeddings, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="`chunk_size` must be an integer >= 1, got 0"):
        all_pair_scores(np.ones((4, 2)), [0, 1, 2, 3], chunk_size=0)


def test_all_pairs_protocol_end_to_end():
    # Well-separated identities: all-pairs TAR@FAR is high and the counts are right.
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(30, 64))
    labels = np.repeat(np.arange(30), 8)
    embeddings = centers[labels] + 0.4 * rng.normal(size=(240, 64))
    scores, issame = all_pair_scores(embeddings, labels, chunk_size=33)
    assert issame.sum() == 30 * 8 * 7 // 2 and len(scores) == 240 * 239 // 2
    points = tar_at_far(scores, issame, (1e-2, 1e-3, 1e-5))
    assert points[1e-2].tar > 0.99 and points[1e-3].reason is None
    assert points[1e-5].reason == f"needs >= 100000 impostor pairs, have {int((~issame).sum())}"


# ----------------------------------------------------------------------------- k-fold accuracy


@pytest.mark.parametrize("decimals", [2, 3, None])
def test_kfold_accuracy_larger_n_matches_reference(decimals):
    rng = np.random.default_rng(2)
    issame = rng.random(4000) < 0.3
    scores = rng.normal(size=4000) * 0.3 + 0.5 * issame
    if decimals is not None:
        scores = np.round(scores, decimals)  # heavy ties inside and across folds
    folds = rng.permutation(np.arange(4000) % 10)
    result = verification_accuracy(scores, issame, folds)
    expected_accuracies, expected_thresholds = _kfold_reference(scores, issame, folds)
    np.testing.assert_array_equal(result.fold_accuracies, expected_accuracies)
    np.testing.assert_array_equal(result.fold_thresholds, expected_thresholds)


def test_kfold_accuracy_scores_differing_in_last_bits_and_signed_zero():
    # Distinct scores a few ulps apart (and -0.0 == 0.0) must stay distinct (or equal) exactly.
    rng = np.random.default_rng(3)
    base = np.round(rng.normal(size=600), 1)
    scores = base.copy()
    for _ in range(3):
        step = rng.integers(-1, 2, size=600)
        scores = np.where(step > 0, np.nextafter(scores, np.inf),
                          np.where(step < 0, np.nextafter(scores, -np.inf), scores))
    scores[rng.random(600) < 0.1] = -0.0
    scores[rng.random(600) < 0.1] = 0.0
    issame = rng.random(600) < 0.5
    folds = rng.integers(0, 10, size=600)
    result = verification_accuracy(scores, issame, folds)
    expected_accuracies, expected_thresholds = _kfold_reference(scores, issame, folds)
    np.testing.assert_array_equal(result.fold_accuracies, expected_accuracies)
    np.testing.assert_array_equal(result.fold_thresholds, expected_thresholds)


def test_kfold_accuracy_unusual_fold_ids():
    rng = np.random.default_rng(4)
    scores, issame = _scores_with_ties(rng, 900, 0.5, 2)
    for folds in (
        rng.integers(0, 3, size=900) * 1_000_000 - 7,  # sparse, negative ids
        rng.integers(0, 300, size=900),  # many folds
        (np.arange(900) % 4).astype(np.uint8),
        # Folds by score rank: each held-out fold is one long run of the sorted scores.
        np.argsort(np.argsort(scores, kind="stable")) // 90,
    ):
        result = verification_accuracy(scores, issame, folds)
        expected_accuracies, expected_thresholds = _kfold_reference(scores, issame, folds)
        np.testing.assert_array_equal(result.fold_accuracies, expected_accuracies)
        np.testing.assert_array_equal(result.fold_thresholds, expected_thresholds)


# ----------------------------------------------------------------------------- TAR@FAR, ROC


def test_tar_at_far_large_n_with_ties_matches_reference():
    rng = np.random.default_rng(5)
    scores, issame = _scores_with_ties(rng, 200_000, 0.05, 3)
    fars = (0.2, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
    points = tar_at_far(scores, issame, fars)
    for far in fars[:5]:
        tar, threshold = _tar_reference(scores, issame, far)
        assert points[far].reason is None
        assert points[far].tar == tar and points[far].threshold == threshold
        assert points[far].achieved_far <= far
    assert points[1e-6].reason == f"needs >= 1000000 impostor pairs, have {(~issame).sum()}"


def test_tar_at_far_down_to_1e_6():
    rng = np.random.default_rng(6)
    issame = np.zeros(2_003_000, bool)
    issame[-3000:] = True
    scores = rng.normal(size=issame.size) * 0.1 + 0.5 * issame
    points = tar_at_far(scores, issame, (1e-6, 1e-7))
    impostors = np.sort(scores[~issame])[::-1]
    # FAR 1e-6 of 2M impostors allows exactly 2 false accepts: the 3rd highest impostor.
    point = points[1e-6]
    assert point.reason is None and point.threshold == impostors[2]
    assert point.achieved_far == 2 / 2_000_000
    assert point.tar == np.mean(scores[issame] > impostors[2])
    assert np.isnan(points[1e-7].tar)
    assert points[1e-7].reason == "needs >= 10000000 impostor pairs, have 2000000"
    # Below 1e6 impostors, 1e-6 is not measurable: NaN with the reason, never a guess.
    small = tar_at_far(scores[1_200_000:], issame[1_200_000:], (1e-6,))[1e-6]
    assert np.isnan(small.tar) and np.isnan(small.threshold)
    assert small.reason == "needs >= 1000000 impostor pairs, have 800000"


def test_roc_curve_large_n_matches_reference_and_thins():
    rng = np.random.default_rng(7)
    scores, issame = _scores_with_ties(rng, 100_000, 0.3, 4)
    fpr, tpr, thresholds = roc_curve(scores, issame)
    values = np.unique(scores)[::-1]
    genuine, impostors = np.sort(scores[issame]), np.sort(scores[~issame])
    expected_fpr = (len(impostors) - np.searchsorted(impostors, values)) / len(impostors)
    expected_tpr = (len(genuine) - np.searchsorted(genuine, values)) / len(genuine)
    np.testing.assert_array_equal(thresholds, np.concatenate([[np.inf], values]))
    np.testing.assert_array_equal(fpr, np.concatenate([[0.0], expected_fpr]))
    np.testing.assert_array_equal(tpr, np.concatenate([[0.0], expected_tpr]))

    thin_fpr, thin_tpr, thin_thresholds = roc_curve(scores, issame, max_points=300)
    assert 100 < len(thin_fpr) <= 300
    assert (thin_fpr[0], thin_tpr[0], thin_fpr[-1], thin_tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    # A subset of the exact points, in order, spread over the log-FAR range.
    index = np.searchsorted(-thresholds, -thin_thresholds)
    np.testing.assert_array_equal(thresholds[index], thin_thresholds)
    np.testing.assert_array_equal(fpr[index], thin_fpr)
    np.testing.assert_array_equal(tpr[index], thin_tpr)
    # Evenly spread in log-FAR wherever FAR is not limited by whole impostor counts.
    dense = thin_fpr[thin_fpr >= 100 / np.count_nonzero(~issame)]
    assert np.diff(np.log10(dense)).max() < 0.02
    # For every kept FAR level, the kept point is the last (highest-TAR) one at that FAR.
    for f, t in zip(thin_fpr[1:], thin_tpr[1:]):
        assert t == tpr[np.searchsorted(fpr, f, side="right") - 1]


def test_thin_roc_short_curves_unchanged_and_bad_input():
    fpr, tpr = np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.9, 1.0])
    same_fpr, same_tpr = thin_roc(fpr, tpr, max_points=10)
    np.testing.assert_array_equal(same_fpr, fpr)
    np.testing.assert_array_equal(same_tpr, tpr)
    with pytest.raises(ValueError, match="`max_points` must be an integer >= 2, got 1"):
        thin_roc(fpr, tpr, max_points=1)
    with pytest.raises(ValueError, match=r"1-D of the same length, got shapes \(3,\) and \(2,\)"):
        thin_roc(fpr, tpr[:2])


def test_evaluate_scores_thinned_roc_keeps_exact_auc():
    rng = np.random.default_rng(8)
    scores, issame = _scores_with_ties(rng, 30_000, 0.2, None)
    folds = np.arange(30_000) % 10
    full = evaluate_scores(scores, issame, folds)
    thinned = evaluate_scores(scores, issame, folds, max_roc_points=200)
    assert len(full.fpr) == len(np.unique(scores)) + 1  # default: every point is kept
    assert len(thinned.fpr) <= 200
    assert thinned.auc == full.auc == roc_auc(*roc_curve(scores, issame)[:2])
    assert thinned.accuracy == full.accuracy
