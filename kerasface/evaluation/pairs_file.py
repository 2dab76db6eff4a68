"""Face-verification pair lists: kerasface `a b issame` files and the official LFW View-2 format."""

import dataclasses
import os

import numpy as np

_TRUE_TOKENS = {"1", "true"}
_FALSE_TOKENS = {"0", "false"}
_MAX_MISSING_SHOWN = 5


@dataclasses.dataclass
class PairsFile:
    """Image pairs to verify, with ground truth and cross-validation folds.

    Args:
        path: the pairs file the pairs were read from.
        paths_a: first image of each pair (absolute when a root was given).
        paths_b: second image of each pair.
        issame: bool array (N,), True where both images show the same person.
        folds: int array (N,), the cross-validation fold of each pair (0..num_folds-1).
    """

    path: str
    paths_a: list
    paths_b: list
    issame: np.ndarray
    folds: np.ndarray

    def __len__(self):
        return len(self.issame)

    @property
    def num_folds(self):
        return int(self.folds.max()) + 1 if len(self.folds) else 0


def read_pairs(path, root=None, num_folds=10):
    """Read a verification pairs file in either supported format.

    Two formats are recognised from the first non-comment line:

    * kerasface: one pair per line, ``a b issame`` with ``issame`` one of 0/1/true/false; the
      pairs are split by position into ``num_folds`` equal contiguous folds.
    * LFW View-2 (``pairs.txt``): a header ``num_sets pairs_per_set`` (or just ``pairs_per_set``
      for the single-set View-1 files), then per set ``pairs_per_set`` matched lines
      ``name n1 n2`` followed by ``pairs_per_set`` mismatched lines ``name1 n1 name2 n2``; image
      paths are ``name/name_%04d.jpg`` and each set is one fold.

    Blank lines and lines starting with ``#`` are ignored. Paths cannot contain whitespace.

    Args:
        path: the pairs file.
        root: folder the image paths are relative to. When given, paths are made absolute and
            every image must exist (the error lists the first missing ones and their count).
        num_folds: number of contiguous folds for the kerasface format (10 for the LFW protocol).

    Returns:
        a :class:`PairsFile`.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pairs file {path} does not exist")
    with open(path, encoding="utf-8") as f:
        lines = [
            (number, line.split())
            for number, line in enumerate(f, start=1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    if not lines:
        raise ValueError(f"{path}: no pairs found (the file is empty or only has comments)")

    first_fields = lines[0][1]
    if len(first_fields) in (1, 2) and all(_is_int(token) for token in first_fields):
        paths_a, paths_b, issame, folds = _parse_lfw(path, lines)
    else:
        paths_a, paths_b, issame, folds = _parse_plain(path, lines, num_folds)

    if root is not None:
        root = os.path.abspath(os.fspath(root))
        paths_a = [os.path.join(root, p) for p in paths_a]
        paths_b = [os.path.join(root, p) for p in paths_b]
        _check_files_exist(path, root, paths_a + paths_b)
    return PairsFile(path, paths_a, paths_b, np.asarray(issame, bool), np.asarray(folds, np.int64))


def contiguous_folds(num_pairs, num_folds=10, source="pairs"):
    """Fold of each of ``num_pairs`` pairs cut into ``num_folds`` equal contiguous blocks."""
    if num_folds < 2:
        raise ValueError(f"`num_folds` must be >= 2, got {num_folds}")
    if num_pairs == 0 or num_pairs % num_folds:
        raise ValueError(
            f"{source}: {num_pairs} pairs cannot be split into {num_folds} equal contiguous folds; "
            f"the cross-validation protocol needs a multiple of {num_folds}"
        )
    return np.repeat(np.arange(num_folds), num_pairs // num_folds)


def _is_int(token):
    return token.isascii() and token.isdigit()


def parse_pair_fields(path, number, fields, names=("a", "b")):
    """One ``a b issame`` line, split: ``(a, b, issame)``; errors name the file and line.

    Args:
        path: the file, for error messages.
        number: the 1-based line number.
        fields: the whitespace-split line.
        names: what the two items are called in the error (``("set_a", "set_b")`` for sets).
    """
    if len(fields) != 3:
        raise ValueError(
            f"{path}: line {number}: expected 3 fields `{names[0]} {names[1]} issame`, got "
            f"{len(fields)}: {' '.join(fields)!r}"
        )
    token = fields[2].lower()
    if token not in _TRUE_TOKENS and token not in _FALSE_TOKENS:
        raise ValueError(
            f"{path}: line {number}: `issame` must be one of 0/1/true/false, got {fields[2]!r}"
        )
    return fields[0], fields[1], token in _TRUE_TOKENS


def _parse_plain(path, lines, num_folds):
    paths_a, paths_b, issame = [], [], []
    for number, fields in lines:
        a, b, same = parse_pair_fields(path, number, fields)
        paths_a.append(a)
        paths_b.append(b)
        issame.append(same)
    folds = contiguous_folds(len(issame), num_folds, source=path)
    return paths_a, paths_b, issame, folds


def _lfw_image(name, number):
    return f"{name}/{name}_{int(number):04d}.jpg"


def _parse_lfw(path, lines):
    header_number, header = lines[0]
    if len(header) == 2:
        num_sets, per_set = int(header[0]), int(header[1])
    else:
        num_sets, per_set = 1, int(header[0])
    if num_sets < 1 or per_set < 1:
        raise ValueError(
            f"{path}: line {header_number}: LFW header `num_sets pairs_per_set` must be positive, "
            f"got {' '.join(header)!r}"
        )
    body = lines[1:]
    expected = num_sets * 2 * per_set
    if len(body) != expected:
        raise ValueError(
            f"{path}: LFW header (line {header_number}) announces {num_sets} sets of {per_set} "
            f"matched + {per_set} mismatched pairs = {expected} pair lines, got {len(body)}"
        )
    paths_a, paths_b, issame, folds = [], [], [], []
    for index, (number, fields) in enumerate(body):
        fold, position = divmod(index, 2 * per_set)
        matched = position < per_set
        if matched and len(fields) != 3:
            raise ValueError(
                f"{path}: line {number}: expected a matched pair `name n1 n2` (3 fields, set "
                f"{fold + 1}), got {len(fields)}: {' '.join(fields)!r}"
            )
        if not matched and len(fields) != 4:
            raise ValueError(
                f"{path}: line {number}: expected a mismatched pair `name1 n1 name2 n2` (4 fields, "
                f"set {fold + 1}), got {len(fields)}: {' '.join(fields)!r}"
            )
        names = [fields[0], fields[0]] if matched else [fields[0], fields[2]]
        numbers = [fields[1], fields[2]] if matched else [fields[1], fields[3]]
        if not all(_is_int(token) and int(token) > 0 for token in numbers):
            raise ValueError(
                f"{path}: line {number}: image numbers must be positive integers, got "
                f"{' '.join(fields)!r}"
            )
        paths_a.append(_lfw_image(names[0], numbers[0]))
        paths_b.append(_lfw_image(names[1], numbers[1]))
        issame.append(matched)
        folds.append(fold)
    return paths_a, paths_b, issame, folds


def _check_files_exist(path, root, image_paths):
    missing = [p for p in dict.fromkeys(image_paths) if not os.path.isfile(p)]
    if missing:
        shown = ", ".join(os.path.relpath(p, root) for p in missing[:_MAX_MISSING_SHOWN])
        more = ", ..." if len(missing) > _MAX_MISSING_SHOWN else ""
        raise FileNotFoundError(
            f"{path}: {len(missing)} of {len(set(image_paths))} images are missing under {root}: "
            f"{shown}{more}"
        )


def write_pairs(path, paths_a, paths_b, issame, comment=None):
    """Write pairs as a kerasface ``a b issame`` file that :func:`read_pairs` reads back.

    :func:`read_pairs` cuts the lines into equal contiguous folds by position, so write the
    pairs fold after fold (as :func:`kerasface.evaluation.make_pairs` returns them). The file
    is written to a temporary name and renamed, so a crash never leaves half a pairs file.

    Args:
        path: the file to write (parent folders are created).
        paths_a: first image of each pair, usually relative to the image root.
        paths_b: second image of each pair.
        issame: booleans (or 0/1), one per pair.
        comment: optional text written first as ``#`` lines (ignored by :func:`read_pairs`).

    Returns:
        ``path``.
    """
    paths_a, paths_b = list(paths_a), list(paths_b)
    issame = list(issame)
    if not len(paths_a) == len(paths_b) == len(issame):
        raise ValueError(
            f"{path}: `paths_a`, `paths_b` and `issame` must have the same length, got "
            f"{len(paths_a)}, {len(paths_b)} and {len(issame)}"
        )
    if not issame:
        raise ValueError(f"{path}: no pairs to write")
    lines = []
    if comment:
        lines.extend(f"# {line}".rstrip() for line in str(comment).splitlines())
    for number, (a, b, same) in enumerate(zip(paths_a, paths_b, issame)):
        for image in (a, b):
            if not isinstance(image, str) or not image or any(c.isspace() for c in image):
                raise ValueError(
                    f"{path}: pair #{number}: image paths must be non-empty strings without "
                    f"whitespace (the format splits on it), got {image!r}"
                )
        if a.startswith("#"):
            raise ValueError(
                f"{path}: pair #{number}: an image path may not start with '#' (the line would "
                f"read as a comment), got {a!r}"
            )
        if isinstance(same, (bool, np.bool_)) or (
            isinstance(same, (int, np.integer)) and same in (0, 1)
        ):
            lines.append(f"{a} {b} {int(bool(same))}")
        else:
            raise ValueError(f"{path}: pair #{number}: `issame` must be a boolean or 0/1, got {same!r}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(temporary, path)
    return path
