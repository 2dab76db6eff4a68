"""Cosine score and ground truth of every unordered pair of a labelled embedding set."""

import numpy as np

from kerasface.evaluation.normalized_embeddings import normalized_embeddings


def all_pair_scores(embeddings, labels, chunk_size=1024):
    """Score every pair ``i < j`` of a labelled embedding set, block of rows by block of rows.

    The all-pairs verification protocol (every genuine and every impostor pair, as IJB-style
    TAR@FAR uses) over ``M`` images gives ``M (M - 1) / 2`` pairs: 5,500 embeddings give 15.1M.
    The output is allocated once and filled from matrix products of ``chunk_size`` rows against
    the rows after them, so the largest temporary is ``chunk_size x M`` float64 scores, never the
    ``M x M`` matrix.

    Args:
        embeddings: ``(M, D)`` embeddings, M >= 2. Rows are L2-normalised here (in float64), so
            the score is the cosine similarity even for unnormalised input.
        labels: ``(M,)`` identity of each row (integers or strings).
        chunk_size: rows per matrix product; memory is about ``chunk_size * M * 8`` bytes on top
            of the ``M (M - 1) / 2 * 9`` bytes of output.

    Returns:
        ``(scores, issame)``: float64 ``(P,)`` cosine scores and bool ``(P,)`` same-identity
        flags, ``P = M (M - 1) / 2``, pairs in row-major upper-triangle order
        ``(0, 1), (0, 2), ..., (0, M-1), (1, 2), ...``; :func:`pair_from_index` maps a position
        back to ``(i, j)``.
    """
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be an integer >= 1, got {chunk_size}")
    chunk_size = int(chunk_size)
    embeddings = normalized_embeddings(embeddings, dtype=np.float64, min_rows=2, rows="M")
    num = len(embeddings)
    labels = np.asarray(labels)
    if labels.shape != (num,):
        raise ValueError(
            f"`labels` must have shape ({num},) to match `embeddings` {embeddings.shape}, got "
            f"{labels.shape}"
        )
    # Integer codes compare faster than strings and are safe for any label type.
    _, codes = np.unique(labels, return_inverse=True)
    codes = codes.reshape(-1)

    num_pairs = num * (num - 1) // 2
    scores = np.empty(num_pairs, np.float64)
    issame = np.empty(num_pairs, bool)
    position = 0
    for start in range(0, num - 1, chunk_size):
        stop = min(start + chunk_size, num - 1)
        # Rows start..stop-1 against every later row: row i's pairs are the columns past i.
        block = embeddings[start:stop] @ embeddings[start + 1:].T
        for row in range(start, stop):
            offset = row - start
            count = num - 1 - row
            scores[position:position + count] = block[offset, offset:]
            np.equal(codes[row + 1:], codes[row], out=issame[position:position + count])
            position += count
    return scores, issame


def pair_from_index(index, num_embeddings):
    """The rows ``(i, j)``, ``i < j``, of positions in :func:`all_pair_scores`' output.

    Args:
        index: int or integer array of pair positions in ``[0, M (M - 1) / 2)``.
        num_embeddings: ``M``, the number of embeddings that were paired.

    Returns:
        ``(i, j)`` as ints, or int64 arrays shaped like ``index``.
    """
    num = int(num_embeddings)
    scalar = np.ndim(index) == 0
    index = np.asarray(index, np.int64)
    num_pairs = num * (num - 1) // 2
    if index.size and (index.min() < 0 or index.max() >= num_pairs):
        raise ValueError(
            f"pair positions must be in [0, {num_pairs}) for {num} embeddings, got values in "
            f"[{index.min()}, {index.max()}]"
        )
    # Row i starts at i*M - i*(i+1)/2; invert the quadratic, then fix float rounding by one.
    row = np.floor(((2 * num - 1) - np.sqrt((2.0 * num - 1) ** 2 - 8.0 * index)) / 2)
    row = row.astype(np.int64)
    row_start = row * num - row * (row + 1) // 2
    row -= row_start > index
    row_start = row * num - row * (row + 1) // 2
    next_start = (row + 1) * num - (row + 1) * (row + 2) // 2
    row += next_start <= index
    row_start = row * num - row * (row + 1) // 2
    column = index - row_start + row + 1
    if scalar:
        return int(row), int(column)
    return row, column
