"""Face-verification metrics on cosine scores: k-fold accuracy (LFW protocol), ROC, AUC, TAR@FAR.

Scores are similarities: higher means more likely the same person, and a pair is predicted
"same" when ``score > threshold``. Everything is vectorised NumPy: scores are sorted once and
every candidate threshold is evaluated at the same time through cumulative counts.
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

    def summary(self):
        """Short human-readable multi-line report."""
        folds = "" if self.fold_accuracies is None else f", {len(self.fold_accuracies)} folds"
        title = f"{self.name}: " if self.name else ""
        lines = [
            f"{title}{self.num_pairs} pairs ({self.num_genuine} genuine, "
            f"{self.num_impostor} impostor){folds}",
            f"  accuracy      {100 * self.accuracy:.2f}% +- {100 * self.accuracy_std:.2f} "
            f"(threshold {self.threshold:.4f})",
            f"  AUC           {self.auc:.4f}",
        ]
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
    fold_ids, fold_index = np.unique(folds, return_inverse=True)
    if len(fold_ids) < 2:
        raise ValueError(
            f"k-fold accuracy needs at least 2 folds, got fold ids {fold_ids.tolist()}"
        )

    order = np.argsort(scores, kind="stable")
    sorted_scores, sorted_same, sorted_fold = scores[order], issame[order], fold_index[order]
    fold_accuracies = np.empty(len(fold_ids))
    fold_thresholds = np.empty(len(fold_ids))
    for k in range(len(fold_ids)):
        train = sorted_fold != k
        # Cut c predicts "different" for the c lowest scores: its training accuracy is the
        # impostors below the cut plus the genuine pairs at or above it.
        genuine_below = np.concatenate([[0], np.cumsum(train & sorted_same)])
        impostor_below = np.concatenate([[0], np.cumsum(train & ~sorted_same)])
        correct = impostor_below + genuine_below[-1] - genuine_below
        # A cut is realisable by a threshold only where it does not split tied training scores.
        below = np.concatenate(
            [[-np.inf], np.maximum.accumulate(np.where(train, sorted_scores, -np.inf))]
        )
        above = np.concatenate(
            [np.minimum.accumulate(np.where(train, sorted_scores, np.inf)[::-1])[::-1], [np.inf]]
        )
        best = int(np.argmax(np.where(below < above, correct, -1)))
        threshold = _cut_threshold(below[best], above[best])
        test = ~train
        fold_accuracies[k] = np.mean((sorted_scores[test] > threshold) == sorted_same[test])
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
    genuine = np.sort(scores[issame])
    impostors = np.sort(scores[~issame])[::-1]
    num_impostors = len(impostors)
    points = {}
    for far in fars:
        far = float(far)
        if not 0.0 < far < 1.0:
            raise ValueError(f"FAR targets must be in (0, 1), got {far}")
        # The tiny relative slack stops far * I = 29.999999999999996 from losing an impostor.
        allowed = int(math.floor(far * num_impostors * (1 + 1e-9)))
        if allowed < 1:
            points[far] = OperatingPoint(
                far, math.nan, math.nan, math.nan,
                reason=f"needs >= {math.ceil(1 / far - 1e-9)} impostor pairs, have {num_impostors}",
            )
            continue
        if allowed >= num_impostors:
            threshold = float(np.nextafter(scores.min(), -np.inf))
        else:
            threshold = float(impostors[allowed])
        accepted = len(genuine) - np.searchsorted(genuine, threshold, side="right")
        false_accepts = np.count_nonzero(impostors > threshold)
        points[far] = OperatingPoint(
            far, accepted / len(genuine), threshold, false_accepts / num_impostors
        )
    return points


def roc_curve(scores, issame):
    """Exact ROC: one point per distinct score, predicting "same" when ``score >= threshold``.

    Args:
        scores: (N,) similarity of each pair.
        issame: (N,) bool ground truth.

    Returns:
        ``(fpr, tpr, thresholds)``, thresholds decreasing from ``+inf`` (the (0, 0) point).
    """
    scores, issame = _check_scores(scores, issame)
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_same = scores[order], issame[order]
    last_of_value = np.concatenate(
        [np.flatnonzero(np.diff(sorted_scores) != 0), [len(sorted_scores) - 1]]
    )
    true_positives = np.cumsum(sorted_same)[last_of_value]
    false_positives = last_of_value + 1 - true_positives
    fpr = np.concatenate([[0.0], false_positives / np.count_nonzero(~issame)])
    tpr = np.concatenate([[0.0], true_positives / np.count_nonzero(issame)])
    thresholds = np.concatenate([[np.inf], sorted_scores[last_of_value]])
    return fpr, tpr, thresholds


def roc_auc(fpr, tpr):
    """Area under a ROC curve by the trapezoid rule (ties count one half)."""
    fpr, tpr = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def evaluate_scores(scores, issame, folds, fars=DEFAULT_FARS, name=None):
    """Every verification metric for pair scores, as a :class:`VerificationResult`.

    Args:
        scores: (N,) cosine similarity of each pair.
        issame: (N,) bool ground truth.
        folds: (N,) fold id of each pair for the k-fold accuracy.
        fars: FAR targets for TAR@FAR.
        name: label for summaries and plots.
    """
    scores, issame = _check_scores(scores, issame)
    accuracy = verification_accuracy(scores, issame, folds)
    fpr, tpr, _ = roc_curve(scores, issame)
    return VerificationResult(
        accuracy=accuracy.accuracy,
        accuracy_std=accuracy.accuracy_std,
        threshold=accuracy.threshold,
        tar_at_far=tar_at_far(scores, issame, fars),
        auc=roc_auc(fpr, tpr),
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


def _cut_threshold(below, above):
    if below == -np.inf:
        # Below every training score: the largest float still under the lowest one.
        return float(np.nextafter(above, -np.inf))
    if above == np.inf:
        return float(below)
    return float((below + above) / 2)


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
