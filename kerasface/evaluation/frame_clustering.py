"""Outlier frames of a video: Union-Find clustering of frame embeddings (LFRC, sec. 4.2).

The frames of one video (or any set of face images meant to show one person) are linked when
the cosine similarity of their embeddings exceeds a threshold; the connected components of
that graph are the clusters, and only the largest one is kept. Frames of a second person,
non-face frames and heavily occluded faces fall into small clusters of their own and are
dropped before the frame embeddings are averaged into one embedding of the set.
"""

import math
import numbers

import numpy as np

from kerasface.evaluation.union_find import UnionFind

_CENTRALITY_TOLERANCE = 1e-9


def cluster_frames(embeddings, threshold):
    """Union-Find cluster label of each frame.

    Args:
        embeddings: ``(n, D)`` frame embeddings (any scale: rows are L2-normalised here).
        threshold: frames ``i`` and ``j`` are linked when ``cosine(i, j) > threshold``. None, or a
            value <= -1, links every frame (one cluster).

    Returns:
        int64 ``(n,)`` labels ``0 .. k-1``, numbered in order of each cluster's first frame.
    """
    unit = _unit_rows(embeddings)
    threshold = _check_threshold(threshold)
    if threshold is None:
        return np.zeros(len(unit), np.int64)
    return _union_find(unit, threshold).component_labels()


def largest_cluster(embeddings, threshold):
    """Indices of the frames in the largest Union-Find cluster (LFRC's outlier removal).

    Two frames are linked when the cosine similarity of their embeddings is strictly greater
    than ``threshold`` (LFRC uses 0.3 to 0.6 on iQIYI-VID); clusters are the connected
    components, so two frames can share a cluster through a chain of links without being
    similar themselves.

    Ties between equally large clusters are broken deterministically: first the cluster whose
    frames are on average most similar to the frames *outside* it (the most central one: the
    true identity of a video still resembles its own occluded, blurred or split-off frames,
    while a tight group of intruder or non-face frames resembles nothing else in the video),
    then, among clusters within 1e-9 of the most central, the one holding the lowest frame
    index. With ``threshold >= 1`` nothing is linked and this keeps the single most central
    frame (the one with the highest mean similarity to the others).

    Args:
        embeddings: ``(n, D)`` frame embeddings, ``n >= 1`` (rows are L2-normalised here; a zero
            or non-finite row is an error naming the frame).
        threshold: the cosine link threshold. None, or a value <= -1, keeps every frame.

    Returns:
        sorted int64 array of the kept frame indices (never empty).
    """
    unit = _unit_rows(embeddings)
    threshold = _check_threshold(threshold)
    if threshold is None:
        return np.arange(len(unit), dtype=np.int64)
    similarity = unit @ unit.T
    labels = _union_find(unit, threshold, similarity).component_labels()
    sizes = np.bincount(labels)
    candidates = np.flatnonzero(sizes == sizes.max())
    if len(candidates) > 1:
        centrality = np.array([
            similarity[np.ix_(labels == label, labels != label)].mean() for label in candidates
        ])
        # Centralities equal up to rounding (always so for two frames) count as a tie; the first
        # candidate is then the cluster with the lowest first frame.
        tied = centrality >= centrality.max() - _CENTRALITY_TOLERANCE
        winner = candidates[int(np.argmax(tied))]
    else:
        winner = candidates[0]
    return np.flatnonzero(labels == winner).astype(np.int64)


def aggregate_set(embeddings, threshold=None):
    """One embedding for a set of frames: the mean of the frames kept by :func:`largest_cluster`.

    Each frame embedding is L2-normalised before averaging (so every frame weighs the same, as
    for the cosine links), and the mean is L2-normalised again.

    Args:
        embeddings: ``(n, D)`` frame embeddings of one set, ``n >= 1``.
        threshold: cosine link threshold of the outlier removal; None (or <= -1) averages every
            frame.

    Returns:
        ``(embedding, kept)``: float32 ``(D,)`` unit-norm set embedding, and the sorted int64
        indices of the frames it averages.
    """
    unit = _unit_rows(embeddings)
    kept = largest_cluster(unit, threshold)
    mean = unit[kept].mean(axis=0)
    norm = np.linalg.norm(mean)
    if norm < 1e-12:
        # Only possible when kept frames cancel out exactly (e.g. x and -x with no removal).
        raise ValueError(
            f"the mean of the {len(kept)} kept frame embeddings is zero; cannot normalise it"
        )
    return (mean / norm).astype(np.float32), kept


def _union_find(unit, threshold, similarity=None):
    if similarity is None:
        similarity = unit @ unit.T
    # Upper triangle only: each undirected link once, no self links.
    rows, cols = np.nonzero(np.triu(similarity > threshold, k=1))
    forest = UnionFind(len(unit))
    forest.union_pairs(np.stack([rows, cols], axis=1))
    return forest


def _unit_rows(embeddings):
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or embeddings.shape[0] < 1 or embeddings.shape[1] < 1:
        raise ValueError(
            f"frame embeddings must be a non-empty (n, D) array, got shape {embeddings.shape}"
        )
    finite = np.isfinite(embeddings).all(axis=1)
    if not finite.all():
        raise ValueError(f"frame {int(np.flatnonzero(~finite)[0])} has a non-finite embedding")
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    if (norms[:, 0] < 1e-12).any():
        raise ValueError(
            f"frame {int(np.flatnonzero(norms[:, 0] < 1e-12)[0])} has a zero embedding; its "
            "cosine similarity is undefined"
        )
    return embeddings / norms


def _check_threshold(threshold):
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"`threshold` must be a number or None, got {threshold!r}")
    threshold = float(threshold)
    if math.isnan(threshold):
        raise ValueError("`threshold` must be a number or None, got nan")
    return None if threshold <= -1 else threshold
