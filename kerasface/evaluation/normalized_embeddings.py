"""Validate a 2-D embedding array and scale its rows to unit length (cosine scores by dot product)."""

import numpy as np


def normalized_embeddings(embeddings, what="`embeddings`", dtype=np.float32, min_rows=1, rows="N"):
    """``embeddings`` as ``dtype`` with unit-length rows; a clear error for unusable input.

    Args:
        embeddings: a 2-D numeric ``(N, D)`` array.
        what: how the array is named in errors.
        dtype: float dtype of the result.
        min_rows: the fewest rows accepted.
        rows: the name of the row dimension in the shape shown by errors, ``(rows, D)``.

    Raises:
        ValueError: for a wrong shape or dtype, too few rows, or a zero or non-finite row (it
            has no direction, so no cosine score), naming the first such row.
    """
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or embeddings.dtype.kind not in "fiu":
        raise ValueError(
            f"{what} must be a 2-D numeric ({rows}, D) array, got {embeddings.dtype} {embeddings.shape}"
        )
    if len(embeddings) < min_rows:
        raise ValueError(f"{what} needs at least {min_rows} embeddings, got {len(embeddings)}")
    embeddings = embeddings.astype(dtype)
    norms = np.linalg.norm(embeddings, axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
    if bad.size:
        raise ValueError(
            f"{what} has {bad.size} rows that are zero or not finite (first: row {bad[0]}); "
            f"they have no cosine score"
        )
    return embeddings / norms[:, None]
