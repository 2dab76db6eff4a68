"""Set (video) verification pairs: ``set_a set_b issame`` lines over folders of frame images."""

import dataclasses
import logging
import os

import numpy as np

from kerasface.evaluation.pairs_file import contiguous_folds, parse_pair_fields

logger = logging.getLogger(__name__)

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
_MAX_SHOWN = 5


@dataclasses.dataclass
class SetPairs:
    """Pairs of frame sets (videos) to verify, with ground truth and cross-validation folds.

    Args:
        path: the set-pairs file.
        root: the folder the set names are relative to (absolute).
        set_names: the distinct sets, in order of first appearance in the file.
        frame_paths: per set, the absolute paths of its frame images, sorted by file name.
        pairs: int64 ``(N, 2)`` indices into ``set_names``.
        issame: bool ``(N,)``, True where both sets show the same person.
        folds: int64 ``(N,)``, the fold of each pair (contiguous blocks).
        skipped: ``[(path, reason)]`` of entries inside set folders that are not frames
            (other extensions, sub-folders); logged when reading, never silently dropped.
    """

    path: str
    root: str
    set_names: list
    frame_paths: list
    pairs: np.ndarray
    issame: np.ndarray
    folds: np.ndarray
    skipped: list = dataclasses.field(default_factory=list)

    def __len__(self):
        return len(self.issame)

    @property
    def num_sets(self):
        return len(self.set_names)

    @property
    def num_frames(self):
        return sum(len(frames) for frames in self.frame_paths)

    @property
    def num_folds(self):
        return int(self.folds.max()) + 1 if len(self.folds) else 0

    def summary(self):
        """One line describing the pairs and sets."""
        sizes = [len(frames) for frames in self.frame_paths]
        return (
            f"{os.path.basename(self.path)}: {len(self)} set pairs "
            f"({int(np.count_nonzero(self.issame))} genuine, "
            f"{int(np.count_nonzero(~self.issame))} impostor), {self.num_folds} folds, "
            f"{self.num_sets} sets of {min(sizes)}-{max(sizes)} frames ({self.num_frames} in all)"
        )


def read_set_pairs(path, root, num_folds=10):
    """Read a set-pairs file and list the frames of every set.

    Format: one pair per line, ``set_a set_b issame``, where a set is a folder of frame images
    (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``) relative to ``root`` (it may be nested, e.g.
    ``7201/v00``) and ``issame`` is one of 0/1/true/false. Blank lines and lines starting with
    ``#`` are ignored; names cannot contain whitespace. The pairs are split by position into
    ``num_folds`` equal contiguous folds, as for image pairs files
    (:func:`kerasface.evaluation.read_pairs`).

    Args:
        path: the set-pairs file.
        root: the folder holding the set folders.
        num_folds: number of contiguous folds (the pair count must be a multiple of it).

    Returns:
        a :class:`SetPairs`.

    Raises:
        FileNotFoundError: the file, the root, or set folders are missing (all missing sets are
            counted, the first few named).
        ValueError: a malformed line (named by its number), a set name leaving ``root``, a pair
            count that is not a multiple of ``num_folds``, or set folders without frames.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"set-pairs file {path} does not exist")
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{path}: set root folder {root} does not exist")

    set_index, pairs, issame = {}, [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.split()
            *_, same = parse_pair_fields(path, number, fields, names=("set_a", "set_b"))
            issame.append(same)
            pair = []
            for name in fields[:2]:
                normalised = os.path.normpath(name)
                if (os.path.isabs(name) or normalised in (os.curdir, os.pardir)
                        or normalised.startswith(os.pardir + os.sep)):
                    raise ValueError(
                        f"{path}: line {number}: set {name!r} must be a folder relative to the "
                        f"root and inside it"
                    )
                pair.append(set_index.setdefault(normalised, len(set_index)))
            pairs.append(pair)
    if not issame:
        raise ValueError(f"{path}: no set pairs found (the file is empty or only has comments)")
    folds = contiguous_folds(len(issame), num_folds, source=path)

    set_names = list(set_index)
    frame_paths, skipped, missing, empty = [], [], [], []
    for name in set_names:
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            missing.append(name)
            frame_paths.append([])
            continue
        frames = []
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.is_dir():
                    skipped.append((entry.path, "sub-folder inside a set folder (not searched)"))
                elif os.path.splitext(entry.name)[1].lower() in FRAME_EXTENSIONS:
                    frames.append(entry.path)
                else:
                    skipped.append((entry.path, "not a frame image extension"))
        if not frames:
            empty.append(name)
        frame_paths.append(frames)
    if missing:
        raise FileNotFoundError(
            f"{path}: {len(missing)} of {len(set_names)} set folders are missing under {root}: "
            f"{_shown(missing)}"
        )
    if empty:
        raise ValueError(
            f"{path}: {len(empty)} of {len(set_names)} set folders under {root} contain no "
            f"{'/'.join(e.lstrip('.') for e in FRAME_EXTENSIONS)} frames: {_shown(empty)}"
        )
    if skipped:
        logger.warning(
            "%s: %d entries in set folders are not frames and are left out: %s",
            path, len(skipped), _shown([f"{p} ({reason})" for p, reason in skipped]),
        )
    return SetPairs(
        path=path,
        root=root,
        set_names=set_names,
        frame_paths=frame_paths,
        pairs=np.asarray(pairs, np.int64).reshape(-1, 2),
        issame=np.asarray(issame, bool),
        folds=folds.astype(np.int64),
        skipped=skipped,
    )


def _shown(names):
    more = f", ... ({len(names) - _MAX_SHOWN} more)" if len(names) > _MAX_SHOWN else ""
    return ", ".join(names[:_MAX_SHOWN]) + more
