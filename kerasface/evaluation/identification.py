"""Face identification: rank of the true match among distractors (MegaFace, closed-set), CMC.

Every search ranks the probe's true match among other gallery images and distractors by cosine
similarity. The rank is ``1 + (number of other images scoring >= the true match)``: a tie
counts against the true match, so a model that gives everything the same score gets no credit.

Distractor sets are large (MegaFace: 1M x 512 float32 = 2 GB), so they are read in chunks of
rows, scored against all probes with one matrix product per chunk, and reduced on the spot:
per probe only the ``max_rank`` highest distractor scores are kept, which is all the ranks up
to ``max_rank`` depend on. Memory is one chunk of scores (``chunk rows x probes``), never the
``probes x distractors`` matrix. Ranks beyond ``max_rank`` are reported as ``max_rank + 1``.
Scores are computed in float32 (the storage type of distractor embeddings).
"""

import dataclasses
import logging
import math
import mmap
import os

import numpy as np

from kerasface.evaluation.normalized_embeddings import normalized_embeddings

logger = logging.getLogger(__name__)

PROTOCOLS = ("megaface", "closed-set")
# Bytes of score temporaries per chunk: picks the default number of distractor rows per chunk.
_CHUNK_BYTES = 2**26


@dataclasses.dataclass
class IdentificationResult:
    """Identification rates at ranks 1..max_rank (the CMC curve) of one model on one protocol.

    Args:
        name: what was evaluated, shown in summaries and plots.
        protocol: ``"megaface"`` or ``"closed-set"``.
        cmc: float ``(max_rank,)``; ``cmc[k-1]`` is the fraction of searches whose true match is
            within rank ``k``.
        num_probes: number of searches.
        num_distractors: distractor images added to every gallery.
        num_gallery: images each search ranks, its true match(es) included
            (MegaFace: 1 + distractors; closed-set: gallery images + distractors).
        num_identities: identities searched for.
        num_skipped_images: probe images that gave no search (MegaFace: identities with a single
            image), reported rather than dropped silently.
        ranks: int ``(num_probes,)`` rank of each search's true match, ``max_rank + 1`` meaning
            "beyond ``max_rank``".
        searches: int ``(num_probes, 2)``: per search, the probe image and its true match
            (MegaFace: both positions in the probe set; closed-set: probe position, position of
            the best-scoring gallery image of its identity), e.g. to show the worst failures.
    """

    name: str
    protocol: str
    cmc: np.ndarray
    num_probes: int
    num_distractors: int
    num_gallery: int
    num_identities: int = None
    num_skipped_images: int = 0
    ranks: np.ndarray = dataclasses.field(default=None, repr=False)
    searches: np.ndarray = dataclasses.field(default=None, repr=False)

    @property
    def max_rank(self):
        """The largest rank the CMC curve covers."""
        return len(self.cmc)

    @property
    def rank1(self):
        """Fraction of searches whose true match ranks first."""
        return self.identification_rate(1)

    @property
    def rank5(self):
        """Fraction of searches whose true match is in the top 5 (NaN if max_rank < 5)."""
        return self.identification_rate(5)

    def identification_rate(self, rank):
        """Fraction of searches whose true match is within ``rank`` (NaN beyond max_rank)."""
        if int(rank) != rank or rank < 1:
            raise ValueError(f"`rank` must be an integer >= 1, got {rank}")
        return float(self.cmc[rank - 1]) if rank <= len(self.cmc) else math.nan

    def summary(self):
        """Short human-readable multi-line report."""
        title = f"{self.name}: " if self.name else ""
        identities = "" if self.num_identities is None else f" of {self.num_identities} identities"
        lines = [
            f"{title}{self.protocol} identification, {self.num_probes} searches{identities}, "
            f"{self.num_gallery} gallery images each ({self.num_distractors} distractors)"
        ]
        if self.num_skipped_images:
            lines.append(
                f"  {self.num_skipped_images} probe images gave no search (identity with a "
                "single image)"
            )
        for rank in sorted({1, 5, 10, self.max_rank}):
            if rank <= self.max_rank:
                lines.append(f"  rank-{rank:<3d} {100 * self.identification_rate(rank):.2f}%")
        return "\n".join(lines)

    def to_dict(self):
        """JSON-ready dict (NaN becomes None; per-search ranks are left out)."""
        return {
            "name": self.name,
            "protocol": self.protocol,
            "rank1": _json_float(self.rank1),
            "rank5": _json_float(self.rank5),
            "cmc": [_json_float(value) for value in self.cmc],
            "max_rank": int(self.max_rank),
            "num_probes": int(self.num_probes),
            "num_distractors": int(self.num_distractors),
            "num_gallery": int(self.num_gallery),
            "num_identities": None if self.num_identities is None else int(self.num_identities),
            "num_skipped_images": int(self.num_skipped_images),
        }


def true_match_ranks(probe_embeddings, true_scores, distractors, max_rank=10, chunk_size=None,
                     probe_index=None):
    """Rank of each search's true match among distractors, capped at ``max_rank + 1``.

    A search is a probe embedding and the score of its true match; its rank is
    ``1 + (number of distractors scoring >= the true score)`` (ties count against). The
    distractors are scored in chunks of rows; per probe only the ``max_rank`` highest distractor
    scores are kept, so the counts, and the ranks, are exact up to ``max_rank`` and every rank
    beyond it is reported as ``max_rank + 1``.

    Args:
        probe_embeddings: ``(P, D)`` probe embeddings (L2-normalised here).
        true_scores: ``(S,)`` cosine score of each search's true match, computed like the
            distractor scores (float32 dot products of L2-normalised embeddings) so that
            exact duplicates tie.
        distractors: ``(N, D)`` array or ``np.memmap`` of distractor embeddings (normalised
            chunk by chunk), or None for no distractors.
        max_rank: the largest rank reported exactly.
        chunk_size: distractor rows per matrix product (default: as many as keep one chunk's
            scores and float32 rows near 64 MB).
        probe_index: ``(S,)`` the probe row each search uses; default one search per probe,
            in order (``S == P``).

    Returns:
        int64 ``(S,)`` ranks in ``1 .. max_rank + 1``.
    """
    max_rank = _check_max_rank(max_rank)
    probes = normalized_embeddings(probe_embeddings, "`probe_embeddings`")
    true_scores = np.asarray(true_scores)
    if true_scores.ndim != 1 or true_scores.dtype.kind not in "fiu":
        raise ValueError(
            f"`true_scores` must be a 1-D numeric array, got {true_scores.dtype} "
            f"{true_scores.shape}"
        )
    if not np.isfinite(true_scores).all():
        bad = np.flatnonzero(~np.isfinite(true_scores))
        raise ValueError(
            f"`true_scores` has {bad.size} non-finite values (first at search {bad[0]}: "
            f"{true_scores[bad[0]]})"
        )
    if probe_index is None:
        if len(true_scores) != len(probes):
            raise ValueError(
                f"`true_scores` has {len(true_scores)} entries for {len(probes)} probes; pass "
                "`probe_index` to map several searches to one probe"
            )
        probe_index = np.arange(len(probes))
    else:
        probe_index = np.asarray(probe_index)
        if probe_index.shape != true_scores.shape or probe_index.dtype.kind not in "iu":
            raise ValueError(
                f"`probe_index` must be integers of shape {true_scores.shape}, got "
                f"{probe_index.dtype} {probe_index.shape}"
            )
        if probe_index.size and (probe_index.min() < 0 or probe_index.max() >= len(probes)):
            raise ValueError(
                f"`probe_index` values must be in [0, {len(probes)}), got "
                f"[{probe_index.min()}, {probe_index.max()}]"
            )
    distractors = _check_distractors(distractors, probes.shape[1])
    return _ranks(probes, true_scores, probe_index, distractors, max_rank, chunk_size)


def megaface_identification(probe_embeddings, probe_labels, distractors, max_rank=10,
                            chunk_size=None, name=None):
    """MegaFace-style identification: each probe image searches one image of its identity
    hidden among distractors.

    For every identity with at least two probe images, every ordered pair ``(g, p)`` of its
    images is one search: the gallery is ``{g}`` plus all distractors and the rank is that of
    ``g`` for probe ``p`` (ties count against ``g``). Each probe is scored against the
    distractors once; all its searches reuse its top ``max_rank`` distractor scores.

    Args:
        probe_embeddings: ``(P, D)`` probe embeddings (e.g. FaceScrub in MegaFace).
        probe_labels: ``(P,)`` identity of each probe (integers or strings).
        distractors: ``(N, D)`` array or ``np.memmap`` of distractor embeddings, or None.
        max_rank: the CMC covers ranks 1..max_rank.
        chunk_size: distractor rows per matrix product (default: as many as keep one chunk's
            scores and float32 rows near 64 MB).
        name: label for summaries and plots.

    Returns:
        an :class:`IdentificationResult` with protocol ``"megaface"``.
    """
    max_rank = _check_max_rank(max_rank)
    probes = normalized_embeddings(probe_embeddings, "`probe_embeddings`")
    codes = _label_codes(probe_labels, len(probes), "`probe_labels`")
    distractors = _check_distractors(distractors, probes.shape[1])
    order = np.argsort(codes, kind="stable")
    boundaries = np.flatnonzero(np.diff(codes[order])) + 1
    groups = [group for group in np.split(order, boundaries) if len(group) >= 2]
    num_skipped = len(probes) - sum(len(group) for group in groups)
    if not groups:
        raise ValueError(
            f"MegaFace identification needs an identity with >= 2 probe images, got "
            f"{len(probes)} images of {len(np.unique(codes))} identities, one image each"
        )
    if num_skipped:
        logger.warning("%d probe images are the only image of their identity: no search uses "
                       "them", num_skipped)
    searchers, galleries, true_scores = [], [], []
    for members in groups:
        similarity = probes[members] @ probes[members].T
        # Row: the searching probe p; column: the gallery image g; the diagonal is no search.
        searcher, gallery = np.nonzero(~np.eye(len(members), dtype=bool))
        searchers.append(members[searcher])
        galleries.append(members[gallery])
        true_scores.append(similarity[searcher, gallery])
    searchers = np.concatenate(searchers)
    galleries = np.concatenate(galleries)
    true_scores = np.concatenate(true_scores)
    ranks = _ranks(probes, true_scores, searchers, distractors, max_rank, chunk_size)
    num_distractors = 0 if distractors is None else len(distractors)
    return IdentificationResult(
        name=name,
        protocol="megaface",
        cmc=_cmc(ranks, max_rank),
        num_probes=len(ranks),
        num_distractors=num_distractors,
        num_gallery=1 + num_distractors,
        num_identities=len(groups),
        num_skipped_images=num_skipped,
        ranks=ranks,
        searches=np.stack([searchers, galleries], axis=1).astype(np.int64),
    )


def closed_set_identification(gallery_embeddings, gallery_labels, probe_embeddings, probe_labels,
                              distractors=None, max_rank=10, chunk_size=None, name=None):
    """Closed-set identification: each probe searches a gallery of enrolled identities.

    The true match of a probe is the best-scoring gallery image of its identity; its rank is 1
    plus the number of gallery images of other identities and distractors scoring at least as
    high (ties count against). Every probe identity must be enrolled in the gallery.

    Args:
        gallery_embeddings: ``(G, D)`` enrolled images.
        gallery_labels: ``(G,)`` their identities (integers or strings).
        probe_embeddings: ``(P, D)`` probe images.
        probe_labels: ``(P,)`` their identities.
        distractors: optional ``(N, D)`` array or ``np.memmap`` of extra gallery images of
            nobody searched for.
        max_rank: the CMC covers ranks 1..max_rank.
        chunk_size: gallery/distractor rows per matrix product (default: ~64 MB of scores).
        name: label for summaries and plots.

    Returns:
        an :class:`IdentificationResult` with protocol ``"closed-set"``.
    """
    max_rank = _check_max_rank(max_rank)
    gallery = normalized_embeddings(gallery_embeddings, "`gallery_embeddings`")
    probes = normalized_embeddings(probe_embeddings, "`probe_embeddings`")
    if gallery.shape[1] != probes.shape[1]:
        raise ValueError(
            f"`gallery_embeddings` are {gallery.shape[1]}-d but `probe_embeddings` are "
            f"{probes.shape[1]}-d"
        )
    gallery_labels = _labels(gallery_labels, len(gallery), "`gallery_labels`")
    probe_labels = _labels(probe_labels, len(probes), "`probe_labels`")
    distractors = _check_distractors(distractors, probes.shape[1])
    enrolled, gallery_codes = np.unique(gallery_labels, return_inverse=True)
    gallery_codes = gallery_codes.reshape(-1)
    position = np.searchsorted(enrolled, probe_labels)
    position = np.minimum(position, len(enrolled) - 1)
    missing = enrolled[position] != probe_labels
    if missing.any():
        unknown = np.unique(probe_labels[missing])
        shown = ", ".join(str(label) for label in unknown[:10])
        raise ValueError(
            f"closed-set identification needs every probe identity in the gallery: "
            f"{missing.sum()} probes of {len(unknown)} identities are not enrolled: {shown}"
            + (", ..." if len(unknown) > 10 else "")
        )
    probe_codes = position

    rows = _chunk_rows(chunk_size, len(probes), probes.shape[1])
    top = _TopScores(len(probes), max_rank)
    true_scores = np.full(len(probes), -np.inf, np.float32)
    true_match = np.zeros(len(probes), np.int64)
    for start, block in _blocks(gallery, rows, "`gallery_embeddings`"):
        scores = probes @ block.T
        same = probe_codes[:, None] == gallery_codes[None, start:start + len(block)]
        own = np.where(same, scores, -np.inf)
        best = own.argmax(axis=1)
        better = own[np.arange(len(probes)), best] > true_scores
        true_scores[better] = own[better, best[better]]
        true_match[better] = start + best[better]
        scores[same] = -np.inf
        top.add(scores)
    if distractors is not None:
        # The true scores are known now: distractors below them can never count.
        top.set_floor(true_scores)
        for _, block in _blocks(distractors, rows, "`distractors`"):
            top.add(probes @ block.T)
    ranks = 1 + top.count_at_least(np.arange(len(probes)), true_scores)
    num_distractors = 0 if distractors is None else len(distractors)
    return IdentificationResult(
        name=name,
        protocol="closed-set",
        cmc=_cmc(ranks, max_rank),
        num_probes=len(probes),
        num_distractors=num_distractors,
        num_gallery=len(gallery) + num_distractors,
        num_identities=len(np.unique(probe_codes)),
        ranks=ranks,
        searches=np.stack([np.arange(len(probes)), true_match], axis=1),
    )


def split_gallery_probe(labels, gallery_per_identity=1, seed=None):
    """Split a labelled image set into gallery and probe images for closed-set identification.

    Each identity's first ``gallery_per_identity`` images (in the given order, or chosen at
    random with ``seed``) are enrolled in the gallery and the rest are probes. Identities with no
    image left over stay in the gallery as identities nobody searches for.

    Args:
        labels: ``(N,)`` identity of each image.
        gallery_per_identity: images enrolled per identity, >= 1.
        seed: None to take the first images, or an int to pick them at random reproducibly.

    Returns:
        ``(gallery_index, probe_index)``: sorted int64 arrays of image positions.
    """
    if int(gallery_per_identity) != gallery_per_identity or gallery_per_identity < 1:
        raise ValueError(
            f"`gallery_per_identity` must be an integer >= 1, got {gallery_per_identity}"
        )
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"`labels` must be a non-empty 1-D array, got shape {labels.shape}")
    _, codes = np.unique(labels, return_inverse=True)
    codes = codes.reshape(-1)
    if seed is None:
        order = np.argsort(codes, kind="stable")
    else:
        shuffled = np.random.default_rng(seed).permutation(len(codes))
        order = shuffled[np.argsort(codes[shuffled], kind="stable")]
    sorted_codes = codes[order]
    group_start = np.searchsorted(sorted_codes, sorted_codes, side="left")
    in_gallery = np.arange(len(order)) - group_start < gallery_per_identity
    gallery = np.sort(order[in_gallery])
    probes = np.sort(order[~in_gallery])
    if probes.size == 0:
        raise ValueError(
            f"no probe images left: every identity has <= {gallery_per_identity} images"
        )
    return gallery.astype(np.int64), probes.astype(np.int64)


def identify_folder(embed_fn, probe_root, distractors=None, protocol="megaface", max_rank=10,
                    batch_size=64, flip=False, name=None, chunk_size=None, cache=None,
                    progress=False):
    """Embed an identity-folder tree of probes and run an identification protocol on it.

    Args:
        embed_fn: a ``keras.Model`` embedding model or a callable float32 normalised
            ``(B, 112, 112, 3)`` -> ``(B, D)``.
        probe_root: folder of ``<identity>/<image>`` probe faces (see ``FolderSource``).
        distractors: None; a folder of distractor face images in any layout (all images under
            it, recursively, are embedded); a ``.npy`` file of precomputed L2-normalised
            ``(N, D)`` embeddings (memory-mapped, read in chunks); or an ``(N, D)`` array.
        protocol: ``"megaface"`` (every image pair of an identity is a gallery/probe search)
            or ``"closed-set"`` (each identity's first image is enrolled, the rest search).
        max_rank: the CMC covers ranks 1..max_rank.
        batch_size: images per call of ``embed_fn``.
        flip: fuse each embedding with that of the mirrored image.
        name: label for summaries (default: the folder name and distractor count).
        chunk_size: distractor rows per matrix product.
        cache: an :class:`EmbeddingCache` for the probe and distractor-folder embeddings (the
            distractors' ``.npy`` is then reusable as ``distractors=`` directly).
        progress: show a progress bar while embedding.

    Returns:
        an :class:`IdentificationResult`.
    """
    from kerasface.data.folder_source import FolderSource

    if protocol not in PROTOCOLS:
        raise ValueError(f"`protocol` must be one of {PROTOCOLS}, got {protocol!r}")
    source = FolderSource(probe_root)
    embeddings = _embed_files(embed_fn, source.file_paths, f"{source.name}-probes", batch_size,
                              flip, cache, progress)
    labels = np.asarray(source.labels)
    distractors = _distractor_embeddings(embed_fn, distractors, embeddings.shape[1], batch_size,
                                         flip, cache, progress)
    if name is None:
        name = os.path.basename(os.path.abspath(os.fspath(probe_root)).rstrip(os.sep))
        if distractors is not None:
            name += f" + {len(distractors)} distractors"
    if protocol == "megaface":
        return megaface_identification(embeddings, labels, distractors, max_rank, chunk_size,
                                       name=name)
    gallery, probes = split_gallery_probe(labels, 1)
    return closed_set_identification(
        embeddings[gallery], labels[gallery], embeddings[probes], labels[probes], distractors,
        max_rank, chunk_size, name=name,
    )


# ----------------------------------------------------------------------------- internals


class _TopScores:
    """Per probe, the ``k`` highest scores seen so far among those >= an optional floor."""

    # Above this fraction of a chunk's scores passing the cut-off, a per-row partial sort of the
    # whole chunk is cheaper than gathering and sorting the passing scores.
    _DENSE_FRACTION = 1 / 64

    def __init__(self, num_probes, k):
        self.k = k
        self.values = np.full((num_probes, k), -np.inf, np.float32)
        self.floor = np.full(num_probes, -np.inf, np.float32)
        self.cutoff = np.full(num_probes, -np.finfo(np.float32).max, np.float32)

    def set_floor(self, floor):
        """Scores below ``floor`` (per probe) will never be counted: stop keeping them."""
        floor = np.asarray(floor, np.float64)
        rounded = floor.astype(np.float32)
        # Round down, so no float32 score >= the float64 floor is cut off.
        self.floor = np.where(rounded > floor, np.nextafter(rounded, np.float32(-np.inf)),
                              rounded).astype(np.float32)
        self._update_cutoff(slice(None))

    def add(self, scores):
        """Merge a ``(num_probes, n)`` float32 block of scores."""
        passing = scores >= self.cutoff[:, None]
        count = int(np.count_nonzero(passing))
        if count == 0:
            return
        if count > self._DENSE_FRACTION * scores.size:
            self._add_dense(scores)
        else:
            rows, columns = np.nonzero(passing)
            self._add_sparse(rows, scores[rows, columns])

    def count_at_least(self, rows, thresholds):
        """For each (row, threshold): how many kept scores are >= threshold (at most ``k``)."""
        kept = self.values[rows].astype(np.float64)
        return np.count_nonzero(kept >= np.asarray(thresholds, np.float64)[:, None], axis=1)

    def _add_dense(self, scores):
        k = self.k
        if scores.shape[1] > k:
            scores = np.partition(scores, scores.shape[1] - k, axis=1)[:, -k:]
        merged = np.concatenate([self.values, scores], axis=1)
        top = np.partition(merged, merged.shape[1] - k, axis=1)[:, -k:]
        self.values = np.ascontiguousarray(top)
        self._update_cutoff(slice(None))

    def _add_sparse(self, rows, values):
        k = self.k
        touched = np.unique(rows)
        rows = np.concatenate([rows, np.repeat(touched, k)])
        values = np.concatenate([values, self.values[touched].ravel()])
        order = np.lexsort((-values, rows))
        rows, values = rows[order], values[order]
        # Position of each value within its row, highest first; every touched row has >= k.
        place = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
        keep = place < k
        self.values[rows[keep], place[keep]] = values[keep]
        self._update_cutoff(touched)

    def _update_cutoff(self, rows):
        # A score enters only if it beats the k-th kept one (an equal one changes nothing) and
        # reaches the floor.
        kth = self.values[rows].min(axis=1)
        self.cutoff[rows] = np.maximum(np.nextafter(kth, np.float32(np.inf)), self.floor[rows])


def _ranks(probes, true_scores, probe_index, distractors, max_rank, chunk_size):
    """``1 + min(max_rank, distractors >= true score)`` for each search (probes normalised)."""
    true_scores = np.asarray(true_scores, np.float64)
    if distractors is None or len(distractors) == 0 or len(true_scores) == 0:
        return np.ones(len(true_scores), np.int64)
    # Only probes that search are scored; each search's floor is its probe's lowest true score.
    used, search_row = np.unique(probe_index, return_inverse=True)
    search_row = search_row.reshape(-1)
    floor = np.full(len(used), np.inf)
    np.minimum.at(floor, search_row, true_scores)
    used_probes = np.ascontiguousarray(probes[used])
    top = _TopScores(len(used), max_rank)
    top.set_floor(floor)
    rows = _chunk_rows(chunk_size, len(used), probes.shape[1])
    for _, block in _blocks(distractors, rows, "`distractors`"):
        top.add(used_probes @ block.T)
    return 1 + top.count_at_least(search_row, true_scores).astype(np.int64)


def _blocks(embeddings, rows, what):
    """Yield ``(start, float32 L2-normalised copy of rows start..start+rows)``."""
    release = _page_releaser(embeddings)
    for start in range(0, len(embeddings), rows):
        block = np.array(embeddings[start:start + rows], dtype=np.float32)
        release(start, start + len(block))
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
        if bad.size:
            raise ValueError(
                f"{what} row {start + bad[0]} is zero or not finite ({bad.size} such rows in "
                f"rows {start}..{start + len(block) - 1})"
            )
        block /= norms[:, None]
        yield start, block


def _page_releaser(embeddings):
    """For a memory-mapped array, a function dropping the pages of rows already copied.

    Pages of a file mapping stay resident (and count in the process RSS) once read, so scanning
    a 2 GB distractor file would look like a 2 GB process. Dropping them after each chunk keeps
    the resident size at one chunk; the data stays in the OS page cache. Best effort: anything
    unexpected (no mapping, non-contiguous rows, no madvise) leaves the pages alone.
    """
    # Read-only mappings only: in a copy-on-write one ("c") dropping pages loses the changes.
    mapping = getattr(embeddings, "_mmap", None)
    if (not isinstance(embeddings, np.memmap) or getattr(embeddings, "mode", None) != "r"
            or mapping is None or not hasattr(mapping, "madvise")
            or not hasattr(mmap, "MADV_DONTNEED") or not embeddings.flags.c_contiguous):
        return lambda start, stop: None
    try:
        base = np.frombuffer(mapping, np.uint8).ctypes.data
    except (TypeError, ValueError, BufferError):
        return lambda start, stop: None
    first_byte = embeddings.ctypes.data - base
    row_bytes = embeddings.strides[0]

    def release(start, stop):
        begin = first_byte + start * row_bytes
        begin -= begin % mmap.PAGESIZE
        end = first_byte + stop * row_bytes
        if end > begin:
            try:
                mapping.madvise(mmap.MADV_DONTNEED, begin, end - begin)
            except (OSError, ValueError):
                pass

    return release


def _chunk_rows(chunk_size, num_probes, dim):
    if chunk_size is None:
        # Scores, their pass mask and the normalised block of one chunk within ~64 MB.
        return int(np.clip(_CHUNK_BYTES // (5 * max(num_probes, 1) + 4 * dim), 256, 65536))
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be an integer >= 1, got {chunk_size}")
    return int(chunk_size)


def _cmc(ranks, max_rank):
    counts = np.bincount(np.minimum(ranks, max_rank + 1), minlength=max_rank + 2)[1:max_rank + 1]
    return np.cumsum(counts) / max(len(ranks), 1)


def _check_max_rank(max_rank):
    if int(max_rank) != max_rank or max_rank < 1:
        raise ValueError(f"`max_rank` must be an integer >= 1, got {max_rank}")
    return int(max_rank)


def _labels(labels, num, what):
    labels = np.asarray(labels)
    if labels.shape != (num,):
        raise ValueError(f"{what} must have shape ({num},) to match the embeddings, got "
                         f"{labels.shape}")
    return labels


def _label_codes(labels, num, what):
    _, codes = np.unique(_labels(labels, num, what), return_inverse=True)
    return codes.reshape(-1)


def _check_distractors(distractors, dim):
    if distractors is None:
        return None
    if not hasattr(distractors, "shape") or not hasattr(distractors, "dtype"):
        distractors = np.asarray(distractors)
    source = getattr(distractors, "filename", None)
    what = f"distractors ({source})" if source else "`distractors`"
    if len(distractors.shape) != 2 or np.dtype(distractors.dtype).kind not in "fiu":
        raise ValueError(
            f"{what} must be a 2-D numeric (N, D) array, got {distractors.dtype} "
            f"{tuple(distractors.shape)}"
        )
    if distractors.shape[1] != dim:
        raise ValueError(
            f"{what} are {distractors.shape[1]}-d but the probes are {dim}-d embeddings"
        )
    return distractors


def _embed_files(embed_fn, files, label, batch_size, flip, cache, progress):
    from kerasface.evaluation.embed_images import embed_images

    if cache is None:
        return embed_images(embed_fn, files, batch_size, flip, progress=progress)
    embeddings, path, from_cache = cache.embed(embed_fn, files, label, flip=flip,
                                               batch_size=batch_size, progress=progress)
    logger.info("%s embeddings %s %s", label, "read from" if from_cache else "written to", path)
    return embeddings


def _distractor_embeddings(embed_fn, distractors, dim, batch_size, flip, cache=None,
                           progress=False):
    """None, an array, a ``.npy`` file (memory-mapped) or an image folder -> (N, D) array."""
    if distractors is None or isinstance(distractors, np.ndarray):
        return _check_distractors(distractors, dim)
    path = os.fspath(distractors)
    if os.path.isdir(path):
        files, skipped = _image_files(path)
        if skipped:
            logger.warning("%s: %d files are not images by their extension and are not used as "
                           "distractors (first: %s)", path, len(skipped), skipped[0])
        if not files:
            raise ValueError(f"{path}: no distractor images found (searched recursively)")
        label = os.path.basename(os.path.abspath(path).rstrip(os.sep)) + "-distractors"
        return _embed_files(embed_fn, files, label, batch_size, flip, cache, progress)
    if not os.path.exists(path):
        raise FileNotFoundError(f"distractors {path} does not exist")
    if not path.endswith(".npy"):
        raise ValueError(
            f"{path}: distractors must be a folder of images or a .npy file of embeddings"
        )
    try:
        embeddings = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:
        raise ValueError(f"{path}: cannot read as a .npy array: {error}") from None
    if embeddings.ndim != 2 or embeddings.dtype.kind != "f":
        raise ValueError(
            f"{path}: distractor embeddings must be a 2-D float (N, D) array, got "
            f"{embeddings.dtype} {embeddings.shape}"
        )
    if embeddings.shape[1] != dim:
        raise ValueError(
            f"{path}: distractor embeddings are {embeddings.shape[1]}-d but the model gives "
            f"{dim}-d embeddings"
        )
    return embeddings


def _image_files(root):
    from kerasface.data.folder_source import IMAGE_EXTENSIONS

    files, skipped = [], []
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        for file_name in sorted(names):
            path = os.path.join(folder, file_name)
            if os.path.splitext(file_name)[1].lower() in IMAGE_EXTENSIONS:
                files.append(path)
            else:
                skipped.append(path)
    return files, skipped


def _json_float(value):
    value = float(value)
    return None if math.isnan(value) else value
