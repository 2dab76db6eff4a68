"""Set (video) verification: one embedding per set of frames, with and without outlier removal.

Each set is reduced to the L2-normalised mean of its frame embeddings, optionally after LFRC's
outlier removal (keep the largest Union-Find cluster of frames at a cosine threshold, see
:func:`kerasface.evaluation.frame_clustering.largest_cluster`); pairs of sets are scored by the
cosine of their embeddings and evaluated like image pairs (k-fold accuracy, ROC, TAR@FAR).
"""

import dataclasses
import math
import numbers
import os

import numpy as np

from kerasface.evaluation.frame_clustering import aggregate_set
from kerasface.evaluation.verification import DEFAULT_FARS, evaluate_scores

# None (no removal) first, then LFRC's Table 5 thresholds.
DEFAULT_CLUSTER_THRESHOLDS = (None, 0.3, 0.4, 0.5, 0.6)


@dataclasses.dataclass
class SetVerificationResult:
    """Set-pair verification metrics at each outlier-removal threshold.

    Args:
        name: what was evaluated (e.g. the set-pairs file).
        thresholds: the cluster thresholds, ``None`` (every frame kept) first.
        results: one :class:`~kerasface.evaluation.VerificationResult` per threshold.
        kept: per threshold, per set, the sorted int64 indices of the frames averaged.
        frames_total: int64 ``(S,)`` number of frames of each set.
        scores: per threshold, the float64 ``(N,)`` cosine score of each pair.
        set_names: the name of each set, or None.
        frame_embeddings: per set, its float32 ``(n_i, D)`` frame embeddings (to re-score
            without embedding again), or None.
    """

    name: str
    thresholds: list
    results: list
    kept: list
    frames_total: np.ndarray
    scores: list = dataclasses.field(default=None, repr=False)
    set_names: list = dataclasses.field(default=None, repr=False)
    frame_embeddings: list = dataclasses.field(default=None, repr=False)

    def _position(self, threshold):
        key = _threshold_key(threshold)
        for position, value in enumerate(self.thresholds):
            if _threshold_key(value) == key:
                return position
        have = [_label(t) for t in self.thresholds]
        raise KeyError(f"threshold {threshold!r} was not evaluated; have {have}")

    def result(self, threshold):
        """The :class:`VerificationResult` at ``threshold`` (None: no removal)."""
        return self.results[self._position(threshold)]

    def frames_kept(self, threshold):
        """int64 ``(S,)`` frames kept in each set at ``threshold``."""
        return np.array([len(k) for k in self.kept[self._position(threshold)]], np.int64)

    def summary(self):
        """A table ``threshold | accuracy +- std | AUC | TAR@FAR ... | frames kept``."""
        first = self.results[0]
        total = int(self.frames_total.sum())
        fars = list(first.tar_at_far)
        header = (
            f"{'threshold':<11}{'accuracy':<18}{'AUC':<8}"
            + "".join(f"{'TAR@FAR=' + format(far, '.0e'):<15}" for far in fars)
            + "frames kept (sets reduced)"
        )
        title = f"{self.name}: " if self.name else ""
        lines = [
            f"{title}{first.num_pairs} set pairs ({first.num_genuine} genuine, "
            f"{first.num_impostor} impostor), {len(self.frames_total)} sets, {total} frames",
            header,
        ]
        for threshold, result, kept in zip(self.thresholds, self.results, self.kept):
            sizes = np.array([len(k) for k in kept])
            reduced = int(np.count_nonzero(sizes < self.frames_total))
            cells = [
                f"{_label(threshold):<11}",
                f"{f'{100 * result.accuracy:.2f}% +- {100 * result.accuracy_std:.2f}':<18}",
                f"{result.auc:<8.4f}",
            ]
            for far in fars:
                point = result.tar_at_far[far]
                cells.append(f"{'n/a' if point.reason else f'{100 * point.tar:.2f}%':<15}")
            cells.append(f"{sizes.sum()}/{total} ({100 * sizes.sum() / total:.1f}%) ({reduced})")
            lines.append("".join(cells))
        unavailable = {far: p.reason for far, p in first.tar_at_far.items() if p.reason}
        for far, reason in unavailable.items():
            lines.append(f"TAR@FAR={far:.0e} n/a: {reason}")
        return "\n".join(lines)

    def to_dict(self):
        """JSON-ready dict: one row per cluster threshold (None = no removal), NaN as None.

        Each row holds ``cluster_threshold``, frame counts and the
        :meth:`VerificationResult.to_dict` fields (whose ``threshold`` is the verification one).
        """
        rows = []
        for threshold, result, kept in zip(self.thresholds, self.results, self.kept):
            sizes = np.array([len(k) for k in kept])
            rows.append({
                "cluster_threshold": threshold,
                "frames_kept": int(sizes.sum()),
                "frames_total": int(self.frames_total.sum()),
                "sets_reduced": int(np.count_nonzero(sizes < self.frames_total)),
                **result.to_dict(),
            })
        return {
            "name": self.name,
            "num_sets": len(self.frames_total),
            "num_frames": int(self.frames_total.sum()),
            "rows": rows,
        }


def evaluate_set_embeddings(frame_embeddings_per_set, pair_index, issame, folds,
                            thresholds=DEFAULT_CLUSTER_THRESHOLDS, fars=DEFAULT_FARS, name=None,
                            set_names=None):
    """Verification of set pairs from frame embeddings, at each outlier-removal threshold.

    Args:
        frame_embeddings_per_set: one ``(n_i, D)`` array per set, ``n_i >= 1``, same ``D``.
        pair_index: ``(N, 2)`` integer indices of the two sets of each pair.
        issame: ``(N,)`` bool ground truth.
        folds: ``(N,)`` fold of each pair for the k-fold accuracy.
        thresholds: cosine link thresholds of :func:`largest_cluster`; None (or <= -1) is the
            plain mean of every frame and is always evaluated, as the first row.
        fars: FAR targets for TAR@FAR.
        name: label for summaries.
        set_names: optional name of each set, kept in the result and used in error messages.

    Returns:
        a :class:`SetVerificationResult`.
    """
    sets = _check_sets(frame_embeddings_per_set, set_names)
    pair_index = np.asarray(pair_index)
    if pair_index.ndim != 2 or pair_index.shape[1] != 2 or pair_index.dtype.kind not in "iu":
        raise ValueError(
            f"`pair_index` must be integers of shape (N, 2), got {pair_index.dtype} "
            f"{pair_index.shape}"
        )
    if pair_index.size and (pair_index.min() < 0 or pair_index.max() >= len(sets)):
        raise ValueError(
            f"`pair_index` refers to sets {int(pair_index.min())}..{int(pair_index.max())}, but "
            f"there are {len(sets)} sets"
        )
    thresholds = _normalise_thresholds(thresholds)

    results, kept_all, scores_all = [], [], []
    for threshold in thresholds:
        set_embeddings = np.empty((len(sets), sets[0].shape[1]), np.float64)
        kept = []
        for index, frames in enumerate(sets):
            set_embeddings[index], kept_frames = aggregate_set(frames, threshold)
            kept.append(kept_frames)
        scores = np.sum(set_embeddings[pair_index[:, 0]] * set_embeddings[pair_index[:, 1]], axis=1)
        label = _label(threshold)
        results.append(evaluate_scores(
            scores, issame, folds, fars,
            name=f"{name or 'sets'} (cluster threshold {label})",
        ))
        kept_all.append(kept)
        scores_all.append(scores)
    return SetVerificationResult(
        name=name,
        thresholds=thresholds,
        results=results,
        kept=kept_all,
        frames_total=np.array([len(frames) for frames in sets], np.int64),
        scores=scores_all,
        set_names=None if set_names is None else list(set_names),
        frame_embeddings=[frames.astype(np.float32) for frames in sets],
    )


def evaluate_set_pairs(embed_fn, set_pairs, thresholds=DEFAULT_CLUSTER_THRESHOLDS, batch_size=64,
                       flip=False, fars=DEFAULT_FARS, embedding_cache=None, name=None):
    """Embed the frames of set pairs and verify the pairs with and without outlier removal.

    Every distinct frame file (by its real path, so symlinked frames count once) is embedded
    once with :func:`kerasface.evaluation.embed_images`; each set is aggregated at every
    threshold by :func:`evaluate_set_embeddings`.

    Args:
        embed_fn: a ``keras.Model`` embedding model, or a callable mapping a float32 normalised
            batch ``(B, 112, 112, 3)`` to ``(B, D)`` embeddings.
        set_pairs: a :class:`~kerasface.evaluation.set_pairs.SetPairs` from
            :func:`~kerasface.evaluation.set_pairs.read_set_pairs`.
        thresholds: cosine link thresholds; None (no removal) is always the first row.
        batch_size: frames per call of ``embed_fn``.
        flip: fuse each frame embedding with that of its mirror image.
        fars: FAR targets for TAR@FAR.
        embedding_cache: optional dict ``{real frame path: embedding}`` for one model and flip
            setting: frames found there are not embedded again, new ones are added (to share
            work between set-pairs files over the same frames).
        name: label for summaries (default: the set-pairs file name).

    Returns:
        a :class:`SetVerificationResult`.
    """
    from kerasface.evaluation.embed_images import embed_images

    cache = {} if embedding_cache is None else embedding_cache
    real = [[os.path.realpath(p) for p in frames] for frames in set_pairs.frame_paths]
    todo = {}
    for frames, paths in zip(real, set_pairs.frame_paths):
        for real_path, path in zip(frames, paths):
            if real_path not in cache:
                todo.setdefault(real_path, path)
    if todo:
        embeddings = embed_images(embed_fn, list(todo), batch_size, flip, names=list(todo.values()))
        cache.update(zip(todo, embeddings))
    per_set = [np.stack([cache[p] for p in frames]) for frames in real]
    return evaluate_set_embeddings(
        per_set, set_pairs.pairs, set_pairs.issame, set_pairs.folds, thresholds, fars,
        name=name or os.path.basename(set_pairs.path), set_names=set_pairs.set_names,
    )


def _check_sets(frame_embeddings_per_set, set_names):
    sets = [np.asarray(frames, dtype=np.float64) for frames in frame_embeddings_per_set]
    if not sets:
        raise ValueError("`frame_embeddings_per_set` is empty")
    if set_names is not None and len(set_names) != len(sets):
        raise ValueError(f"`set_names` has {len(set_names)} entries for {len(sets)} sets")
    dim = None
    for index, frames in enumerate(sets):
        label = f"set {index}" + ("" if set_names is None else f" ({set_names[index]})")
        if frames.ndim != 2 or len(frames) == 0:
            raise ValueError(
                f"{label}: frame embeddings must be a non-empty (n, D) array, got shape "
                f"{frames.shape}"
            )
        if dim is None:
            dim = frames.shape[1]
        elif frames.shape[1] != dim:
            raise ValueError(f"{label}: {frames.shape[1]}-d frame embeddings, set 0 has {dim}-d")
    return sets


def _normalise_thresholds(thresholds):
    values, seen = [], set()
    for threshold in thresholds:
        if threshold is not None:
            if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) \
                    or math.isnan(threshold):
                raise ValueError(f"cluster thresholds must be numbers or None, got {threshold!r}")
            threshold = None if threshold <= -1 else float(threshold)
        if threshold in seen:
            raise ValueError(
                f"cluster threshold {_label(threshold)} is given twice (None and values <= -1 "
                "both mean no removal)"
            )
        seen.add(threshold)
        values.append(threshold)
    if None in values:
        values.remove(None)
    return [None] + values


def _threshold_key(threshold):
    return None if threshold is None or threshold <= -1 else float(threshold)


def _label(threshold):
    return "none" if threshold is None else f"{threshold:g}"
