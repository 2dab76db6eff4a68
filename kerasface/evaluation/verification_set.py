"""One verification benchmark (a pairs file or an insightface ``.bin``) as distinct images + pairs."""

import hashlib
import os

import numpy as np


class VerificationSet:
    """The distinct images of a verification benchmark, the pairs over them, truth and folds.

    Text pairs lists name the same image in many pairs; here every distinct image appears once
    in ``images`` and ``pairs`` indexes them, so each image is embedded (and cached) once.

    Args:
        name: short label for summaries, plots and cache files (e.g. ``"lfw"``).
        source: the file the set was read from.
        images: distinct absolute image paths, or encoded JPEG/PNG ``bytes`` (``.bin`` files).
        pairs: ``(N, 2)`` indices into ``images``.
        issame: ``(N,)`` bool, True for same-person pairs.
        folds: ``(N,)`` fold of each pair for k-fold accuracy.
        root: folder the image paths were resolved against (None for ``.bin`` files).
    """

    def __init__(self, name, source, images, pairs, issame, folds, root=None):
        self.name = str(name)
        self.source = os.fspath(source)
        self.images = list(images)
        self.pairs = np.asarray(pairs, np.int64)
        self.issame = np.asarray(issame, bool)
        self.folds = np.asarray(folds, np.int64)
        self.root = None if root is None else os.fspath(root)
        if self.pairs.ndim != 2 or self.pairs.shape[1] != 2:
            raise ValueError(f"{self.source}: `pairs` must have shape (N, 2), got {self.pairs.shape}")
        if self.issame.shape != (len(self.pairs),) or self.folds.shape != (len(self.pairs),):
            raise ValueError(
                f"{self.source}: {len(self.pairs)} pairs but `issame` has shape {self.issame.shape} "
                f"and `folds` {self.folds.shape}"
            )
        if len(self.pairs) and (self.pairs.min() < 0 or self.pairs.max() >= len(self.images)):
            raise ValueError(
                f"{self.source}: pair indices must be in [0, {len(self.images)}), got "
                f"[{self.pairs.min()}, {self.pairs.max()}]"
            )
        self._decoded = None
        self._fingerprint = None

    @classmethod
    def load(cls, spec, root=None, num_folds=10, name=None):
        """Read a set from a spec: ``lfw.bin``, ``pairs.txt`` or ``pairs.txt:ROOT``.

        Args:
            spec: the pairs file; ``FILE:ROOT`` also names the folder its image paths are relative
                to (the suffix is only taken as a root when ``spec`` itself is not a file).
                ``NAME=SPEC`` sets the name shown in reports.
            root: image folder when ``spec`` has none (default: the pairs file's folder).
            num_folds: contiguous folds for kerasface text files and ``.bin`` files.
            name: label (default: the file name without its extension).
        """
        from kerasface.evaluation.bin_file import load_bin
        from kerasface.evaluation.pairs_file import contiguous_folds, read_pairs

        path, spec_root, spec_name = parse_set_spec(spec)
        name = name or spec_name or os.path.splitext(os.path.basename(path))[0]
        if path.endswith(".bin"):
            if spec_root is not None or root is not None:
                raise ValueError(f"{path}: a .bin file holds its images; it takes no image root")
            images_bytes, issame = load_bin(path)
            folds = contiguous_folds(len(issame), num_folds, source=path)
            pairs = np.arange(len(images_bytes)).reshape(-1, 2)
            return cls(name, path, images_bytes, pairs, issame, folds)
        root = spec_root if spec_root is not None else root
        if root is None:
            root = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(root):
            raise FileNotFoundError(f"{spec}: image root {root} is not a folder")
        pairs_file = read_pairs(path, root=root, num_folds=num_folds)
        position = {}
        for image in pairs_file.paths_a + pairs_file.paths_b:
            position.setdefault(image, len(position))
        pairs = np.array(
            [[position[a], position[b]] for a, b in zip(pairs_file.paths_a, pairs_file.paths_b)],
            np.int64,
        ).reshape(-1, 2)
        return cls(name, path, list(position), pairs, pairs_file.issame, pairs_file.folds,
                   root=os.path.abspath(root))

    def __len__(self):
        return len(self.pairs)

    def __repr__(self):
        return (f"VerificationSet({self.name!r}, {len(self)} pairs, {len(self.images)} images, "
                f"{self.num_folds} folds, source={self.source!r})")

    @property
    def num_folds(self):
        return len(np.unique(self.folds))

    @property
    def from_bin(self):
        """True when the images are encoded bytes held by a ``.bin`` file."""
        return bool(self.images) and isinstance(self.images[0], bytes)

    def image_name(self, index):
        """How image ``index`` is named in errors and reports: its path, or ``lfw.bin#12``."""
        if self.from_bin:
            return f"{os.path.basename(self.source)}#{index}"
        return self.images[index]

    def image_names(self):
        return [self.image_name(index) for index in range(len(self.images))]

    def image_bytes(self, index):
        """Encoded content of image ``index`` (read from disk for path sets)."""
        if self.from_bin:
            return self.images[index]
        with open(self.images[index], "rb") as f:
            return f.read()

    def decoded(self):
        """uint8 ``(M, 112, 112, 3)`` RGB pixels of every image, decoded once and kept."""
        if self._decoded is None:
            from kerasface.evaluation.embed_images import decode_images

            self._decoded = decode_images(self.images, names=self.image_names())
        return self._decoded

    def pair_scores(self, embeddings):
        """float64 ``(N,)`` cosine score of each pair from ``(M, D)`` L2-normalised embeddings."""
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or len(embeddings) != len(self.images):
            raise ValueError(
                f"{self.source}: expected one embedding per image, ({len(self.images)}, D), got "
                f"shape {embeddings.shape}"
            )
        return np.einsum("nd,nd->n", embeddings[self.pairs[:, 0]].astype(np.float64),
                         embeddings[self.pairs[:, 1]])

    @property
    def fingerprint(self):
        """Hash of what the embeddings depend on: the set file, the root, the images' stats."""
        if self._fingerprint is None:
            digest = hashlib.sha1()
            with open(self.source, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            digest.update(repr((self.root, len(self.images))).encode())
            if not self.from_bin:
                # An image replaced under the same name must not be served from a stale cache.
                from kerasface.evaluation.embedding_cache import images_key

                digest.update(images_key(self.images).encode())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint


def parse_set_spec(spec):
    """``[NAME=]FILE[:ROOT]`` -> ``(file, root or None, name or None)``."""
    spec = os.fspath(spec)
    name = None
    head, sep, rest = spec.partition("=")
    if sep and head and os.sep not in head and not os.path.exists(spec):
        name, spec = head, rest
    if os.path.isfile(spec):
        return spec, None, name
    path, sep, root = spec.rpartition(":")
    if sep and path and os.path.isfile(path):
        return path, root or None, name
    if sep and path:
        raise FileNotFoundError(f"set {spec!r}: pairs file {path} does not exist")
    raise FileNotFoundError(f"set {spec!r}: pairs file {spec} does not exist")
