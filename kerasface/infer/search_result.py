"""What :meth:`FaceEmbedder.search` returns: the k best gallery rows of every probe."""

import numpy as np


class SearchResult:
    """Top-k gallery matches per probe, best first.

    Args:
        indices: int64 ``(P, k)`` gallery row numbers, by descending score (ties: lower row first).
        scores: float32 ``(P, k)`` cosine similarities matching ``indices``.
        requested_k: the ``k`` asked for; ``k`` is smaller when the gallery has fewer rows.
        note: why ``k`` differs from ``requested_k`` ("" when it does not).
    """

    def __init__(self, indices, scores, requested_k, note=""):
        self.indices = np.asarray(indices, np.int64)
        self.scores = np.asarray(scores, np.float32)
        if self.indices.shape != self.scores.shape or self.indices.ndim != 2:
            raise ValueError(
                f"`indices` and `scores` must both be (P, k), got {self.indices.shape} and "
                f"{self.scores.shape}"
            )
        self.requested_k = int(requested_k)
        self.note = note

    @property
    def k(self):
        """Matches kept per probe."""
        return self.indices.shape[1]

    def __len__(self):
        return len(self.indices)

    def to_dict(self):
        """Plain lists, for JSON."""
        return {
            "indices": self.indices.tolist(),
            "scores": self.scores.tolist(),
            "k": self.k,
            "requested_k": self.requested_k,
            "note": self.note,
        }

    def __repr__(self):
        note = f", note={self.note!r}" if self.note else ""
        return f"SearchResult(probes={len(self)}, k={self.k}{note})"
