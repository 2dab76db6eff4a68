"""Exact top-k cosine search of probe embeddings in a gallery, in bounded memory."""

import warnings

import numpy as np

from kerasface.infer.search_result import SearchResult

# Scores held at once (float32): 2**22 is 16 MiB, whatever the gallery size.
DEFAULT_MAX_SCORES = 1 << 22


def top_k_search(gallery, probes, k=5, max_scores=DEFAULT_MAX_SCORES):
    """The ``k`` gallery rows of highest cosine similarity to each probe.

    The gallery is read in blocks and the probes in chunks so that at most ``max_scores``
    similarities exist at once: a 1M-row gallery (even a memory-mapped ``.npy``) is searched
    without a probes x gallery matrix. Each block keeps its own top k (``argpartition``) and
    the candidates are merged, so the answer is exact. Rows are L2-normalised block by block,
    so unnormalised embeddings give cosines too.

    Args:
        gallery: float ``(G, D)`` embeddings (a NumPy array or memmap).
        probes: float ``(P, D)`` or one ``(D,)`` embedding.
        k: matches per probe, >= 1. More than ``G`` is clamped to ``G`` with a warning and
            a ``note`` on the result.
        max_scores: similarities computed at once (memory bound, in float32 values).

    Returns:
        :class:`SearchResult`: ``indices`` int64 ``(P, k)`` and ``scores`` float32 ``(P, k)``,
        best first; ties go to the lower gallery row.
    """
    gallery = _matrix("gallery", gallery)
    probes = _matrix("probes", probes)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"`k` must be an int >= 1, got {k!r}")
    if isinstance(max_scores, bool) or not isinstance(max_scores, (int, np.integer)) or max_scores < 1:
        raise ValueError(f"`max_scores` must be an int >= 1, got {max_scores!r}")
    if gallery.shape[1] != probes.shape[1]:
        raise ValueError(
            f"embedding sizes differ: gallery rows have {gallery.shape[1]} values, probes "
            f"{probes.shape[1]}"
        )
    num_gallery = len(gallery)
    if num_gallery == 0:
        raise ValueError("the gallery is empty: nothing to search")
    note = ""
    requested_k = int(k)
    if k > num_gallery:
        note = f"k={requested_k} clamped to the gallery size {num_gallery}"
        warnings.warn(note, stacklevel=2)
        k = num_gallery
    block = int(min(num_gallery, max(k, max_scores)))
    chunk = max(1, int(max_scores) // block)
    indices = np.empty((len(probes), k), np.int64)
    scores = np.empty((len(probes), k), np.float32)
    for start in range(0, len(probes), chunk):
        probe_chunk = _normalized(probes[start:start + chunk])
        best_scores = np.full((len(probe_chunk), 0), -np.inf, np.float32)
        best_indices = np.empty((len(probe_chunk), 0), np.int64)
        for offset in range(0, num_gallery, block):
            rows = _normalized(gallery[offset:offset + block])
            block_scores = probe_chunk @ rows.T
            keep = min(k, len(rows))
            if keep < len(rows):
                top = np.argpartition(-block_scores, keep - 1, axis=1)[:, :keep]
            else:
                top = np.broadcast_to(np.arange(len(rows)), block_scores.shape)
            best_scores = np.concatenate(
                [best_scores, np.take_along_axis(block_scores, top, axis=1)], axis=1
            )
            best_indices = np.concatenate([best_indices, top + offset], axis=1)
            best_scores, best_indices = _sorted_top(best_scores, best_indices, k)
        scores[start:start + len(probe_chunk)] = best_scores
        indices[start:start + len(probe_chunk)] = best_indices
    return SearchResult(indices, scores, requested_k, note)


def _sorted_top(scores, indices, k):
    # Descending score, then ascending row: deterministic under ties.
    order = np.lexsort((indices, -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(indices, order, axis=1)


def _matrix(name, values):
    array = values if isinstance(values, np.ndarray) else np.asarray(values)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"`{name}` must be float embeddings, got dtype {array.dtype}")
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2:
        raise ValueError(f"`{name}` must be (N, D) embeddings or one (D,), got shape {array.shape}")
    return array


def _normalized(rows):
    rows = np.asarray(rows, np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, np.float32(1e-12))
