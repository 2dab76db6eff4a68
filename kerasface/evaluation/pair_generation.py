"""Make verification sets: LFW-style pairs from a folder of identities, and insightface ``.bin`` files."""

import dataclasses
import logging
import numbers
import os

import numpy as np

from kerasface.evaluation.pairs_file import read_pairs, write_pairs

logger = logging.getLogger(__name__)

_MAX_SHOWN = 5
# Past this many candidate different-identity pairs in one fold, random draws are always
# enough and the exhaustive fallback is not attempted.
_MAX_ENUMERATED = 5_000_000


@dataclasses.dataclass
class GeneratedPairs:
    """Verification pairs drawn by :func:`make_pairs`, fold after fold.

    Each fold holds ``pairs_per_fold / 2`` same-identity pairs followed by as many
    different-identity pairs, so :func:`kerasface.evaluation.read_pairs` recovers the folds
    by position from the file :meth:`write` writes.

    Args:
        root: the image folder the paths are relative to.
        paths_a: first image of each pair (``identity/file``, relative to ``root``).
        paths_b: second image of each pair.
        issame: bool array (N,).
        folds: int array (N,), the fold of each pair (contiguous blocks).
        fold_identities: the identities each fold draws from (disjoint lists when
            ``disjoint``; every identity in each fold otherwise).
        disjoint: whether every identity appears in one fold only.
        seed: the seed the pairs were drawn with.
        skipped: ``[(path, reason)]`` of folder entries left out (names with whitespace, or
            starting with ``#``, cannot go into a pairs file).
    """

    root: str
    paths_a: list
    paths_b: list
    issame: np.ndarray
    folds: np.ndarray
    fold_identities: list
    disjoint: bool
    seed: int
    skipped: list

    def __len__(self):
        return len(self.issame)

    @property
    def num_folds(self):
        return len(self.fold_identities)

    @property
    def pairs_per_fold(self):
        return len(self) // self.num_folds

    def summary(self):
        """One line describing the pairs."""
        identities = sum(len(names) for names in self.fold_identities) if self.disjoint else len(
            self.fold_identities[0]
        )
        return (
            f"{self.num_folds} folds x {self.pairs_per_fold} pairs ({self.pairs_per_fold // 2} same, "
            f"{self.pairs_per_fold // 2} different identity) from {identities} identities, "
            + ("disjoint across folds" if self.disjoint else "identities shared across folds")
            + f", seed {self.seed}"
        )

    def write(self, path):
        """Write the pairs as a kerasface ``a b issame`` file; returns ``path``."""
        comment = f"kerasface make-pairs {self.root}: {self.summary()}"
        return write_pairs(path, self.paths_a, self.paths_b, self.issame, comment=comment)


def make_pairs(root, num_folds=10, pairs_per_fold=300, seed=0, disjoint=True):
    """Draw LFW-style verification pairs from ``root/<identity>/<image>``.

    As in LFW View 2, the identities are first split into ``num_folds`` folds (dealt in
    order of how many same-identity pairs they allow, so the folds are balanced), then each
    fold's pairs come from its own identities only: a threshold picked on nine folds is
    tested on people it has never seen. Same-identity pairs are spread as evenly as possible
    over the fold's identities with 2+ images (each a distinct pair of its images);
    different-identity pairs join two distinct identities of the fold drawn uniformly, with
    a random image of each. No pair (in either order) appears twice in the result. The same
    folder and seed give the same pairs.

    Args:
        root: folder of identity sub-folders (``kerasface.data.ImageFolder`` layout).
        num_folds: number of cross-validation folds, >= 2 (10 for the LFW protocol).
        pairs_per_fold: pairs per fold, even: half same, half different identity.
        seed: seed of the fold split and of the pair draws.
        disjoint: keep every identity in one fold. When there are too few identities for
            that, the error says so; ``disjoint=False`` then lets every fold draw from all
            identities (pairs still unique across the whole set).

    Returns:
        a :class:`GeneratedPairs`; ``.write(path)`` writes the pairs file.
    """
    from kerasface.data.folder_source import _index_folder

    for label, value, low in (("num_folds", num_folds, 2), ("pairs_per_fold", pairs_per_fold, 2)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"`{label}` must be an int >= {low}, got {value!r}")
    if pairs_per_fold % 2:
        raise ValueError(
            f"`pairs_per_fold` must be even (half same-identity, half different-identity pairs), "
            f"got {pairs_per_fold}"
        )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"`seed` must be an int, got {seed!r}")
    root = os.fspath(root)
    indexed, _ = _index_folder(root)
    images, skipped = _usable_images(indexed)
    if skipped:
        shown = ", ".join(f"{path} ({reason})" for path, reason in skipped[:_MAX_SHOWN])
        logger.warning(
            "%s: left %d entries out of the pairs: %s%s",
            root, len(skipped), shown, ", ..." if len(skipped) > _MAX_SHOWN else "",
        )
    names = sorted(images)
    per_block = pairs_per_fold // 2
    counts = np.array([len(images[name]) for name in names], np.int64)
    with_pairs = int(np.sum(counts >= 2))
    if len(names) < 2 or with_pairs == 0:
        raise ValueError(
            f"{root}: need at least 2 identity folders, one with 2+ images, to make same- and "
            f"different-identity pairs; found {len(names)} identities, {with_pairs} of them with "
            "2+ images"
        )
    rng = np.random.default_rng(seed)

    if disjoint:
        if len(names) < 2 * num_folds:
            raise ValueError(
                f"{root}: {len(names)} identities cannot be split into {num_folds} disjoint folds "
                f"(each fold needs at least 2 identities, so at least {2 * num_folds}); use fewer "
                "folds, or let folds share identities (disjoint=False, `--shared-identities`)"
            )
        fold_members = _deal_into_folds(counts, num_folds, rng)
        for fold, members in enumerate(fold_members):
            same, different = _capacity(counts[members])
            if same < per_block or different < per_block:
                raise ValueError(
                    f"{root}: split into {num_folds} disjoint folds, fold {fold + 1} has "
                    f"{len(members)} identities ({int(np.sum(counts[members] >= 2))} with 2+ images) "
                    f"allowing {same} distinct same-identity and {different} different-identity "
                    f"pairs, but {per_block} of each are needed per fold ({len(names)} identities, "
                    f"{with_pairs} with 2+ images in all); use fewer folds or pairs per fold, or let "
                    "folds share identities (disjoint=False, `--shared-identities`)"
                )
        fold_names = [[names[i] for i in members] for members in fold_members]
        blocks = [_draw_block(names_k, images, per_block, rng) for names_k in fold_names]
    else:
        total = per_block * num_folds
        same, different = _capacity(counts)
        if same < total or different < total:
            raise ValueError(
                f"{root}: {len(names)} identities ({with_pairs} with 2+ images) allow {same} "
                f"distinct same-identity and {different} different-identity pairs, but "
                f"{num_folds} folds x {per_block} need {total} of each; use fewer folds or pairs "
                "per fold"
            )
        positives, negatives = _draw_block(names, images, total, rng)
        blocks = [
            (positives[k * per_block:(k + 1) * per_block], negatives[k * per_block:(k + 1) * per_block])
            for k in range(num_folds)
        ]
        fold_names = [list(names) for _ in range(num_folds)]

    paths_a, paths_b, issame = [], [], []
    for positives, negatives in blocks:
        for pairs, same in ((positives, True), (negatives, False)):
            for a, b in pairs:
                paths_a.append(a)
                paths_b.append(b)
                issame.append(same)
    return GeneratedPairs(
        root=root,
        paths_a=paths_a,
        paths_b=paths_b,
        issame=np.asarray(issame, bool),
        folds=np.repeat(np.arange(num_folds), pairs_per_fold),
        fold_identities=fold_names,
        disjoint=bool(disjoint),
        seed=int(seed),
        skipped=skipped,
    )


def folder_to_bin(root, pairs_path, bin_path, num_folds=10, check_images=True):
    """Build an insightface verification ``.bin`` from an image folder and a pairs file.

    The ``.bin`` holds the encoded bytes of the files as they are (pair ``i`` = images
    ``2i``, ``2i + 1``), so the images should already be aligned 112x112 faces; an image
    used by several pairs is stored once per use, as insightface does.

    Args:
        root: the folder the pairs file's paths are relative to.
        pairs_path: an ``a b issame`` file (e.g. from :func:`make_pairs`) or an LFW
            ``pairs.txt``, read with :func:`kerasface.evaluation.read_pairs`.
        bin_path: the ``.bin`` file to write.
        num_folds: folds of the ``a b issame`` file (its pair count must be a multiple).
        check_images: decode every distinct image first and refuse to write a ``.bin``
            that an evaluation would fail on; the error lists the bad files.

    Returns:
        ``bin_path``.
    """
    from kerasface.data.bad_record_tracker import diagnose_image_bytes
    from kerasface.evaluation.bin_file import write_bin

    pairs = read_pairs(pairs_path, root=root, num_folds=num_folds)
    contents, bad = {}, []
    images = []
    for a, b in zip(pairs.paths_a, pairs.paths_b):
        for path in (a, b):
            if path not in contents:
                with open(path, "rb") as f:
                    contents[path] = f.read()
                if check_images:
                    reason = diagnose_image_bytes(contents[path], what="file")
                    if reason is not None:
                        bad.append(f"{path} ({reason})")
            images.append(contents[path])
    if bad:
        raise ValueError(
            f"{pairs_path}: {len(bad)} of the {len(contents)} images cannot be decoded, so no .bin "
            f"was written: {', '.join(bad[:_MAX_SHOWN])}{', ...' if len(bad) > _MAX_SHOWN else ''}"
        )
    write_bin(bin_path, images, pairs.issame)
    return bin_path


def _usable_images(indexed):
    """``{identity: [file names]}`` of entries a pairs file can name, and what was left out."""
    images, skipped = {}, []
    for name, paths in indexed.items():
        if _unwritable(name):
            skipped.append((os.path.dirname(paths[0]), "identity name has whitespace or starts with '#'"))
            continue
        files = []
        for path in paths:
            file_name = os.path.basename(path)
            if any(c.isspace() for c in file_name):
                skipped.append((path, "file name has whitespace"))
            else:
                files.append(file_name)
        if files:
            images[name] = files
    return images, skipped


def _unwritable(name):
    return name.startswith("#") or any(c.isspace() for c in name)


def _capacity(counts):
    """Distinct (same, different)-identity pairs that identities with ``counts`` images allow."""
    counts = np.asarray(counts, np.int64)
    same = int(np.sum(counts * (counts - 1) // 2))
    different = int((np.sum(counts) ** 2 - np.sum(counts ** 2)) // 2)
    return same, different


def _deal_into_folds(counts, num_folds, rng):
    """Identity indices of each fold: shuffled, sorted by pair capacity, dealt like cards."""
    order = rng.permutation(len(counts))
    capacity = counts[order] * (counts[order] - 1) // 2
    # Stable sort: identities with the same capacity stay in their shuffled order.
    order = order[np.argsort(-capacity, kind="stable")]
    folds = [[] for _ in range(num_folds)]
    for position, identity in enumerate(order):
        lap, offset = divmod(position, num_folds)
        # Snake order (0..K-1, K-1..0, ...): every fold gets as many identities (+-1) and
        # one of the largest and one of the smallest of each group of 2K.
        fold = offset if lap % 2 == 0 else num_folds - 1 - offset
        folds[fold].append(int(identity))
    return [sorted(members) for members in folds]


def _spread(total, capacities, rng):
    """Split ``total`` over identities as evenly as their capacities allow (random leftovers)."""
    quotas = np.zeros(len(capacities), np.int64)
    order = rng.permutation(len(capacities))
    remaining = total
    while remaining > 0:
        active = [i for i in order if quotas[i] < capacities[i]]
        share = remaining // len(active)
        if share == 0:
            for i in active[:remaining]:
                quotas[i] += 1
            break
        for i in active:
            add = min(share, capacities[i] - quotas[i])
            quotas[i] += add
            remaining -= add
    return quotas


def _pair_of_index(k, n):
    """The ``k``-th pair ``(i, j)``, ``i < j``, of ``n`` items in row-major order."""
    starts = np.arange(n) * n - np.arange(n) * (np.arange(n) + 1) // 2
    i = np.searchsorted(starts, k, side="right") - 1
    return i, k - starts[i] + i + 1


def _draw_block(names, images, count, rng):
    """``count`` distinct same- and ``count`` distinct different-identity pairs among ``names``."""
    multi = [name for name in names if len(images[name]) >= 2]
    capacities = np.array([len(images[n]) * (len(images[n]) - 1) // 2 for n in multi], np.int64)
    positives = []
    for name, quota, capacity in zip(multi, _spread(count, capacities, rng), capacities):
        if quota == 0:
            continue
        files = images[name]
        picks = rng.choice(int(capacity), size=int(quota), replace=False)
        first, second = _pair_of_index(picks, len(files))
        positives.extend((f"{name}/{files[i]}", f"{name}/{files[j]}") for i, j in zip(first, second))
    positives = [positives[i] for i in rng.permutation(len(positives))]

    negatives, seen = [], set()
    attempts, max_attempts = 0, 20 * count + 1000
    while len(negatives) < count and attempts < max_attempts:
        attempts += 1
        x = int(rng.integers(len(names)))
        y = int(rng.integers(len(names) - 1))
        y += y >= x
        files_x, files_y = images[names[x]], images[names[y]]
        a = f"{names[x]}/{files_x[rng.integers(len(files_x))]}"
        b = f"{names[y]}/{files_y[rng.integers(len(files_y))]}"
        key = (a, b) if a < b else (b, a)
        if key not in seen:
            seen.add(key)
            negatives.append((a, b))
    if len(negatives) < count:
        negatives.extend(_remaining_negatives(names, images, seen, count - len(negatives), rng))
    return positives, negatives


def _remaining_negatives(names, images, seen, needed, rng):
    """Exhaustive fallback when random draws keep hitting used pairs (nearly exhausted folds)."""
    _, capacity = _capacity([len(images[n]) for n in names])
    if capacity > _MAX_ENUMERATED:
        raise ValueError(
            f"could not draw {needed} more distinct different-identity pairs by random draws among "
            f"{len(names)} identities ({capacity} possible); ask for fewer pairs"
        )
    candidates = []
    for x, name_x in enumerate(names):
        for name_y in names[x + 1:]:
            for file_x in images[name_x]:
                for file_y in images[name_y]:
                    a, b = f"{name_x}/{file_x}", f"{name_y}/{file_y}"
                    if (min(a, b), max(a, b)) not in seen:
                        candidates.append((a, b))
    picks = rng.choice(len(candidates), size=needed, replace=False)
    return [candidates[i] for i in picks]
