"""Face-verification metrics on cosine scores: k-fold accuracy (LFW protocol), ROC, AUC, TAR@FAR.

Scores are similarities: higher means more likely the same person, and a pair is predicted
"same" when ``score > threshold``. Everything is vectorised NumPy: scores are sorted once and
every candidate threshold is evaluated at the same time through cumulative counts, so all-pairs
protocols (15M impostor + 50k genuine scores) take seconds, not minutes.
"""

import dataclasses
import math
from typing import NamedTuple

import numpy as np

DEFAULT_FARS = (1e-1, 1e-2, 1e-3)


class FoldAccuracy(NamedTuple):
    """k-fold verification accuracy: mean and std over folds, per-fold values, thresholds."""

    accuracy: float
    accuracy_std: float
    fold_accuracies: np.ndarray
    threshold: float
    fold_thresholds: np.ndarray


@dataclasses.dataclass
class OperatingPoint:
    """True-accept rate at a false-accept-rate target, or NaN with the reason it is unavailable.

    Args:
        far: the FAR target.
        tar: fraction of genuine pairs accepted at ``threshold``.
        threshold: the lowest threshold whose FAR does not exceed ``far``.
        achieved_far: the FAR actually reached at ``threshold`` (<= ``far``).
        reason: why the point is NaN (too few impostor pairs), else None.
    """

    far: float
    tar: float
    threshold: float
    achieved_far: float
    reason: str = None


@dataclasses.dataclass
class VerificationResult:
    """All verification metrics of one model on one pairs list.

    Args:
        accuracy: mean k-fold accuracy (threshold picked on the other folds).
        accuracy_std: standard deviation of the per-fold accuracies.
        threshold: mean of the per-fold best thresholds.
        tar_at_far: dict FAR target -> :class:`OperatingPoint`.
        auc: area under the ROC curve.
        num_pairs: number of pairs.
        num_genuine: number of same-person pairs.
        num_impostor: number of different-person pairs.
        fold_accuracies: accuracy of each held-out fold.
        fpr: ROC false-positive rates (for plotting).
        tpr: ROC true-positive rates.
        name: what was evaluated (e.g. the pairs file), shown in summaries and plots.
    """

    accuracy: float
    accuracy_std: float
    threshold: float
    tar_at_far: dict
    auc: float
    num_pairs: int
    num_genuine: int
    num_impostor: int
    fold_accuracies: np.ndarray = dataclasses.field(default=None, repr=False)
    fpr: np.ndarray = dataclasses.field(default=None, repr=False)
    tpr: np.ndarray = dataclasses.field(default=None, repr=False)
    name: str = None

    def summary(self, include_accuracy=True):
        """Short human-readable multi-line report.

        Args:
            include_accuracy: print the k-fold accuracy line; leave it out for heavily unbalanced
                pair sets (all pairs of a gallery), where answering "different" always scores
                near 100% and only TAR@FAR and AUC mean something.
        """
        folds = "" if self.fold_accuracies is None else f", {len(self.fold_accuracies)} folds"
        title = f"{self.name}: " if self.name else ""
        lines = [
            f"{title}{self.num_pairs} pairs ({self.num_genuine} genuine, "
            f"{self.num_impostor} impostor){folds if include_accuracy else ''}",
        ]
        if include_accuracy:
            lines.append(
                f"  accuracy      {100 * self.accuracy:.2f}% +- {100 * self.accuracy_std:.2f} "
                f"(threshold {self.threshold:.4f})"
            )
        lines.append(f"  AUC           {self.auc:.4f}")
        for far, point in self.tar_at_far.items():
            label = f"  TAR@FAR={far:.0e}"
            if point.reason:
                lines.append(f"{label}  n/a: {point.reason}")
            else:
                lines.append(f"{label}  {100 * point.tar:.2f}% (threshold {point.threshold:.4f})")
        return "\n".join(lines)

    def to_dict(self):
        """JSON-ready dict (NaN becomes None, ROC arrays are left out)."""
        return {
            "name": self.name,
            "accuracy": _json_float(self.accuracy),
            "accuracy_std": _json_float(self.accuracy_std),
            "threshold": _json_float(self.threshold),
            "fold_accuracies": None if self.fold_accuracies is None
            else [_json_float(value) for value in self.fold_accuracies],
            "auc": _json_float(self.auc),
            "num_pairs": int(self.num_pairs),
            "num_genuine": int(self.num_genuine),
            "num_impostor": int(self.num_impostor),
            "tar_at_far": {
                f"{far:g}": {
                    "tar": _json_float(point.tar),
                    "threshold": _json_float(point.threshold),
                    "achieved_far": _json_float(point.achieved_far),
                    "reason": point.reason,
                }
                for far, point in self.tar_at_far.items()
            },
        }


def verification_accuracy(scores, issame, folds):
    """k-fold verification accuracy as in the LFW protocol.

    For each fold, the threshold maximising accuracy on all other folds is chosen among the
    midpoints between consecutive distinct training scores (plus one threshold below and one
    at/above all of them; ties go to the lowest threshold), then applied to the held-out fold.

    Args:
        scores: (N,) similarity of each pair.
        issame: (N,) bool ground truth.
        folds: (N,) fold id of each pair (any integers, at least two distinct).

    Returns:
        :class:`FoldAccuracy`; ``accuracy_std`` is the population std (ddof=0) over folds.
    """
    scores, issame = _check_scores(scores, issame)
    folds = np.asarray(folds)
    if folds.shape != scores.shape or folds.dtype.kind not in "iu":
        raise ValueError(
            f"`folds` must be integers of shape {scores.shape}, got {folds.dtype} {folds.shape}"
        )
    fold_ids, fold_index = _fold_index(folds)
    if len(fold_ids) < 2:
        raise ValueError(
            f"k-fold accuracy needs at least 2 folds, got fold ids {fold_ids.tolist()}"
        )

    sorted_scores, sorted_same, sorted_fold = _sort_with_labels(scores, issame, fold_index,
                                                                len(fold_ids))
    num = len(scores)
    # Cut c predicts "different" for the c lowest scores. Only cuts between distinct values are
    # tried: a cut inside a run of tied scores is either unrealisable (it splits tied training
    # scores) or, as the run's other scores are all held out, has the same training accuracy and
    # the same threshold as the cut at the run's start or end.
    between_values = np.empty(num + 1, bool)
    between_values[0] = between_values[-1] = True
    np.not_equal(sorted_scores[1:], sorted_scores[:-1], out=between_values[1:-1])
    count_type = np.int32 if 4 * num + 4 < 2**31 else np.int64
    # Training accuracy at cut c is (impostors below c) - (genuine below c) + (training genuine),
    # the balance over all pairs minus that over the held-out fold. Cuts inside tied runs are
    # sunk by 3N + 1, below every cut between distinct values.
    sign = np.where(sorted_same, -1, 1).astype(np.int8)
    balance = np.empty(num + 1, count_type)
    balance[0] = 0
    np.cumsum(sign, dtype=count_type, out=balance[1:])
    balance[~between_values] -= 3 * num + 1
    del between_values
    held_out_balance = np.empty(num + 1, count_type)
    held_out_balance[0] = 0
    test = np.empty(num, bool)
    held_out_sign = np.empty(num, np.int8)
    fold_accuracies = np.empty(len(fold_ids))
    fold_thresholds = np.empty(len(fold_ids))
    for k in range(len(fold_ids)):
        np.equal(sorted_fold, k, out=test)
        np.multiply(sign, test, out=held_out_sign)
        np.cumsum(held_out_sign, dtype=count_type, out=held_out_balance[1:])
        np.subtract(balance, held_out_balance, out=held_out_balance)
        best = int(np.argmax(held_out_balance))
        below = _nearest_training_score(sorted_scores, test, best, before=True)
        above = _nearest_training_score(sorted_scores, test, best, before=False)
        threshold = _cut_threshold(below, above)
        # Held-out pairs at or below the threshold are predicted "different".
        cut = int(np.searchsorted(sorted_scores, threshold, side="right"))
        correct = np.count_nonzero(test[:cut] & ~sorted_same[:cut])
        correct += np.count_nonzero(test[cut:] & sorted_same[cut:])
        fold_accuracies[k] = correct / np.count_nonzero(test)
        fold_thresholds[k] = threshold
    return FoldAccuracy(
        float(fold_accuracies.mean()),
        float(fold_accuracies.std()),
        fold_accuracies,
        float(fold_thresholds.mean()),
        fold_thresholds,
    )


def tar_at_far(scores, issame, fars=DEFAULT_FARS):
    """True-accept rate at given false-accept rates, from the exact ROC of all pairs.

    For a target ``far`` with ``I`` impostor pairs, up to ``floor(far * I)`` impostors may be
    accepted; the threshold is the lowest one that respects this. When ``far * I < 1`` no impostor
    may be accepted and the target is not measurable: the point is NaN with the reason.

    Args:
        scores: (N,) similarity of each pair.
        issame: (N,) bool ground truth.
        fars: FAR targets, each in (0, 1).

    Returns:
        dict FAR -> :class:`OperatingPoint`, in the order of ``fars``.
    """
    scores, issame = _check_scores(scores, issame)
    genuine, impostors = scores[issame], scores[~issame]
    num_impostors = len(impostors)
    fars = [float(far) for far in fars]
    allowed = {}
    for far in fars:
        if not 0.0 < far < 1.0:
            raise ValueError(f"FAR targets must be in (0, 1), got {far}")
        # The tiny relative slack stops far * I = 29.999999999999996 from losing an impostor.
        allowed[far] = int(math.floor(far * num_impostors * (1 + 1e-9)))
    # The threshold for `a` allowed false accepts is the (a+1)-th highest impostor score: one
    # partial sort places every needed order statistic, O(I) instead of sorting all impostors.
    ranks = sorted({num_impostors - 1 - a for a in allowed.values() if 1 <= a < num_impostors})
    if ranks:
        impostors = np.partition(impostors, ranks)
    points = {}
    for far in fars:
        if allowed[far] < 1:
            points[far] = OperatingPoint(
                far, math.nan, math.nan, math.nan,
                reason=f"needs >= {math.ceil(1 / far - 1e-9)} impostor pairs, have {num_impostors}",
            )
            continue
        if allowed[far] >= num_impostors:
            threshold = float(np.nextafter(scores.min(), -np.inf))
        else:
            threshold = float(impostors[num_impostors - 1 - allowed[far]])
        accepted = np.count_nonzero(genuine > threshold)
        false_accepts = np.count_nonzero(impostors > threshold)
        points[far] = OperatingPoint(
            far, accepted / len(genuine), threshold, false_accepts / num_impostors
        )
    return points


def roc_curve(scores, issame, max_points=None):
    """Exact ROC: one point per distinct score, predicting "same" when ``score >= threshold``.

    Args:
        scores: (N,) similarity of each pair.
        issame: (N,) bool ground truth.
        max_points: if given, thin the curve to at most this many points for plotting (see
            :func:`thin_roc`); by default every point is returned.

    Returns:
        ``(fpr, tpr, thresholds)``, thresholds decreasing from ``+inf`` (the (0, 0) point).
    """
    scores, issame = _check_scores(scores, issame)
    num_genuine = int(np.count_nonzero(issame))
    num_impostors = len(scores) - num_genuine
    # Arrays are filled in place where possible: with millions of pairs, every fresh array
    # costs as much in page faults as the arithmetic on it.
    ascending = np.sort(scores)
    new_value = np.empty(len(ascending), bool)
    new_value[0] = True
    np.not_equal(ascending[1:], ascending[:-1], out=new_value[1:])
    starts = np.flatnonzero(new_value)
    del new_value
    values = ascending[starts]
    del ascending
    # Count the rarer class per distinct value (bincount of its positions) and derive the other.
    rare_is_genuine = num_genuine <= num_impostors
    rare = scores[issame] if rare_is_genuine else scores[~issame]
    rare_per_value = np.bincount(np.searchsorted(values, rare), minlength=len(values))
    del rare
    fpr, tpr, thresholds = (np.empty(len(values) + 1) for _ in range(3))
    fpr[0] = tpr[0] = 0.0
    thresholds[0] = np.inf
    thresholds[1:] = values[::-1]
    del values
    # From here on, index j is the j-th highest distinct value.
    rare_accepted = rare_per_value[::-1]
    np.cumsum(rare_accepted, out=rare_accepted)
    accepted = starts[::-1]
    np.subtract(len(scores), accepted, out=accepted)  # pairs with score >= each value
    np.subtract(accepted, rare_accepted, out=accepted)  # ... of the frequent class
    true_positives, false_positives = (
        (rare_accepted, accepted) if rare_is_genuine else (accepted, rare_accepted)
    )
    np.divide(false_positives, num_impostors, out=fpr[1:])
    np.divide(true_positives, num_genuine, out=tpr[1:])
    if max_points is not None:
        return thin_roc(fpr, tpr, thresholds, max_points=max_points)
    return fpr, tpr, thresholds


def thin_roc(fpr, tpr, thresholds=None, max_points=1000):
    """At most ``max_points`` points of a ROC curve, evenly spaced in log-FAR, for plotting.

    An exact ROC over millions of impostor pairs has millions of points. This keeps the first
    and last points and, for ``max_points - 2`` FAR levels spaced evenly on a log axis between
    the smallest non-zero FAR and 1, the last point at or below that level (the highest TAR
    reached there), so the curve keeps its shape on a log-FAR plot. AUC must be computed on the
    full curve, not on the thinned one.

    Args:
        fpr: non-decreasing false-positive rates, as from :func:`roc_curve`.
        tpr: true-positive rates, same length.
        thresholds: optional thresholds, same length, thinned alike.
        max_points: the most points kept, >= 2.

    Returns:
        ``(fpr, tpr)``, or ``(fpr, tpr, thresholds)`` when thresholds are given; curves that
        are already short enough come back unchanged.
    """
    if int(max_points) != max_points or max_points < 2:
        raise ValueError(f"`max_points` must be an integer >= 2, got {max_points}")
    fpr, tpr = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
    if fpr.ndim != 1 or fpr.shape != tpr.shape:
        raise ValueError(
            f"`fpr` and `tpr` must be 1-D of the same length, got shapes {fpr.shape} and "
            f"{tpr.shape}"
        )
    if thresholds is not None:
        thresholds = np.asarray(thresholds)
        if thresholds.shape != fpr.shape:
            raise ValueError(
                f"`thresholds` must have the shape of `fpr` {fpr.shape}, got {thresholds.shape}"
            )
    if len(fpr) > max_points:
        keep = [np.array([0, len(fpr) - 1])]
        positive = fpr[fpr > 0]
        if positive.size and max_points > 2:
            levels = np.geomspace(positive.min(), fpr[-1], int(max_points) - 2)
            keep.append(np.searchsorted(fpr, levels, side="right") - 1)
        keep = np.unique(np.concatenate(keep))
        fpr, tpr = fpr[keep], tpr[keep]
        if thresholds is not None:
            thresholds = thresholds[keep]
    return (fpr, tpr) if thresholds is None else (fpr, tpr, thresholds)


def roc_auc(fpr, tpr):
    """Area under a ROC curve by the trapezoid rule (ties count one half)."""
    fpr, tpr = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def evaluate_scores(scores, issame, folds, fars=DEFAULT_FARS, name=None, max_roc_points=None):
    """Every verification metric for pair scores, as a :class:`VerificationResult`.

    Args:
        scores: (N,) cosine similarity of each pair.
        issame: (N,) bool ground truth.
        folds: (N,) fold id of each pair for the k-fold accuracy.
        fars: FAR targets for TAR@FAR.
        name: label for summaries and plots.
        max_roc_points: if given, the ROC arrays kept in the result (``fpr``, ``tpr``, for
            plotting) are thinned to at most this many points with :func:`thin_roc`; the AUC is
            always computed on the exact curve. Default: keep every point.
    """
    scores, issame = _check_scores(scores, issame)
    accuracy = verification_accuracy(scores, issame, folds)
    fpr, tpr, _ = roc_curve(scores, issame)
    auc = roc_auc(fpr, tpr)
    if max_roc_points is not None:
        fpr, tpr = thin_roc(fpr, tpr, max_points=max_roc_points)
    return VerificationResult(
        accuracy=accuracy.accuracy,
        accuracy_std=accuracy.accuracy_std,
        threshold=accuracy.threshold,
        tar_at_far=tar_at_far(scores, issame, fars),
        auc=auc,
        num_pairs=len(scores),
        num_genuine=int(np.count_nonzero(issame)),
        num_impostor=int(np.count_nonzero(~issame)),
        fold_accuracies=accuracy.fold_accuracies,
        fpr=fpr,
        tpr=tpr,
        name=name,
    )


def verify_pairs(embed_fn, pairs_path, root=None, flip=False, batch_size=64, fars=DEFAULT_FARS,
                 num_folds=10):
    """Embed the images of a pairs list and compute every verification metric.

    Args:
        embed_fn: a ``keras.Model`` embedding model, or a callable mapping a float32 normalised
            batch ``(B, 112, 112, 3)`` to ``(B, D)`` embeddings.
        pairs_path: a pairs text file (see :func:`read_pairs`) or an insightface ``.bin`` file.
        root: folder the image paths of a text pairs file are relative to (default: the current
            directory); ignored for ``.bin`` files, which hold the images.
        flip: fuse each embedding with that of the mirrored image.
        batch_size: images per call of ``embed_fn``.
        fars: FAR targets for TAR@FAR.
        num_folds: contiguous folds for kerasface text files and ``.bin`` files (LFW-style files
            carry their own folds).

    Returns:
        a :class:`VerificationResult` named after the pairs file.
    """
    import os

    from kerasface.evaluation.bin_file import load_bin
    from kerasface.evaluation.embed_images import embed_images
    from kerasface.evaluation.pairs_file import contiguous_folds, read_pairs

    pairs_path = os.fspath(pairs_path)
    if pairs_path.endswith(".bin"):
        images_bytes, issame = load_bin(pairs_path)
        folds = contiguous_folds(len(issame), num_folds, source=pairs_path)
        names = [f"{pairs_path}: image #{index}" for index in range(len(images_bytes))]
        embeddings = embed_images(embed_fn, images_bytes, batch_size, flip, names=names)
        embeddings_a, embeddings_b = embeddings[0::2], embeddings[1::2]
    else:
        pairs = read_pairs(pairs_path, root="." if root is None else root, num_folds=num_folds)
        issame, folds = pairs.issame, pairs.folds
        embeddings = embed_images(embed_fn, pairs.paths_a + pairs.paths_b, batch_size, flip)
        embeddings_a, embeddings_b = embeddings[:len(pairs)], embeddings[len(pairs):]
    scores = np.sum(embeddings_a.astype(np.float64) * embeddings_b, axis=1)
    return evaluate_scores(scores, issame, folds, fars, name=os.path.basename(pairs_path))


def _fold_index(folds):
    """``(sorted distinct fold ids, index of each pair's fold)``, the index as a small int type."""
    low, high = int(folds.min()), int(folds.max())
    small = np.min_scalar_type(max(high - low, 0))
    if low == 0 and high < 256 and np.bincount(folds.astype(small), minlength=high + 1).all():
        # The usual fold ids 0..k-1: they are their own index.
        return np.arange(high + 1, dtype=folds.dtype), folds.astype(small)
    if high - low <= 4 * len(folds) + 1024:
        # Other compact id ranges are mapped in O(N) too, instead of np.unique's sort.
        present = np.bincount((folds - low).astype(np.int64), minlength=high - low + 1) > 0
        fold_ids = (np.flatnonzero(present) + low).astype(folds.dtype)
        lookup = np.cumsum(present) - 1
        fold_index = lookup[folds - low]
    else:
        fold_ids, fold_index = np.unique(folds, return_inverse=True)
    return fold_ids, fold_index.astype(np.min_scalar_type(max(len(fold_ids) - 1, 0)))


def _sort_with_labels(scores, issame, fold_index, num_folds):
    """Scores sorted ascending with the issame flag and fold index of each, in the same order.

    The order inside runs of tied scores is unspecified (callers only cut between distinct
    values). An argsort of millions of float64 costs ~7x a plain sort, so the labels ride in the
    low mantissa bits of an order-preserving integer image of each score and the keys are sorted
    by value instead. That is exact unless two distinct scores differ only in those bits, which a
    second plain sort detects; then it falls back to the argsort.
    """
    label_bits = 1 + max(int(num_folds) - 1, 0).bit_length()
    if label_bits <= 12 and len(scores) > 1:
        # Adding 0.0 turns -0.0 into 0.0, so equal scores get equal keys. The image flips all
        # bits of negative floats and only the sign bit of the others (done in place: with
        # millions of scores every fresh array costs as much in page faults as its arithmetic).
        keys = (scores + 0.0).view(np.uint64)
        work = keys.view(np.int64) >> 63
        work |= np.int64(-(2**63))
        keys ^= work.view(np.uint64)
        work = work.view(np.uint64)
        keys &= np.uint64(2**64 - 2**label_bits)
        work[:] = fold_index
        work <<= np.uint64(1)
        work |= issame
        keys |= work
        keys.sort()
        sorted_scores = np.sort(scores)
        np.right_shift(keys, np.uint64(label_bits), out=work)
        merged = work[1:] == work[:-1]
        merged &= sorted_scores[1:] != sorted_scores[:-1]
        if not merged.any():
            sorted_same = (keys & np.uint64(1)).astype(bool)
            keys >>= np.uint64(1)
            keys &= np.uint64(2 ** (label_bits - 1) - 1)
            sorted_fold = keys.astype(fold_index.dtype)
            return sorted_scores, sorted_same, sorted_fold
        del keys, work, sorted_scores, merged
    order = np.argsort(scores)
    return scores[order], issame[order], fold_index[order]


def _nearest_training_score(sorted_scores, held_out, cut, before):
    """The training score just below (``before``) or at/above sorted position ``cut``, or -+inf."""
    step = 256
    if before:
        end = cut
        while end > 0:
            start = max(0, end - step)
            found = np.flatnonzero(~held_out[start:end])
            if found.size:
                return float(sorted_scores[start + found[-1]])
            end, step = start, step * 8
        return -np.inf
    start = cut
    while start < len(sorted_scores):
        end = min(len(sorted_scores), start + step)
        found = np.flatnonzero(~held_out[start:end])
        if found.size:
            return float(sorted_scores[start + found[0]])
        start, step = end, step * 8
    return np.inf


def _cut_threshold(below, above):
    if below == -np.inf:
        # Below every training score: the largest float still under the lowest one.
        return float(np.nextafter(above, -np.inf))
    if above == np.inf:
        return float(below)
    # For scores a few ulps apart the midpoint can round onto `above`, which would no longer
    # separate the two; `below` itself still does (a pair is "same" when score > threshold).
    middle = (below + above) / 2
    return float(middle if middle < above else below)


def _check_scores(scores, issame):
    scores = np.asarray(scores, dtype=np.float64)
    issame = np.asarray(issame)
    if scores.ndim != 1 or issame.shape != scores.shape:
        raise ValueError(
            f"`scores` and `issame` must be 1-D of the same length, got shapes {scores.shape} "
            f"and {issame.shape}"
        )
    if issame.dtype != bool:
        if issame.dtype.kind not in "iu" or not np.isin(issame, (0, 1)).all():
            raise ValueError(f"`issame` must be booleans or 0/1, got dtype {issame.dtype}")
        issame = issame.astype(bool)
    if not np.isfinite(scores).all():
        bad = np.flatnonzero(~np.isfinite(scores))
        raise ValueError(
            f"`scores` has {len(bad)} non-finite values (first at pair {bad[0]}: {scores[bad[0]]})"
        )
    num_genuine = int(np.count_nonzero(issame))
    if num_genuine == 0 or num_genuine == len(issame):
        raise ValueError(
            f"verification needs both genuine and impostor pairs, got {num_genuine} genuine of "
            f"{len(issame)}"
        )
    return scores, issame


def _json_float(value):
    value = float(value)
    return None if math.isnan(value) else value
