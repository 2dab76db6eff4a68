"""Copy an identity folder with a known share of its images filed under the wrong identity."""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from kerasface.data.folder_source import FolderSource


@dataclasses.dataclass
class NoisyLabels:
    """An identity folder whose labels are partly wrong, and the record of which ones.

    Attributes:
        root: the noisy identity folder (symbolic links to the original images).
        fraction: the share of images moved to another identity.
        seed: the seed that chose them and their new identities.
        num_images: images in the folder (the same as the original).
        moved: ``{relative path in root: true identity}`` for every mislabelled image; its
            folder is the (wrong) identity it is filed under.
    """

    root: Path
    fraction: float
    seed: int
    num_images: int
    moved: dict

    def is_noisy(self, path):
        """True when ``path`` (under ``root``, or relative to it) is a mislabelled image."""
        path = Path(path)
        relative = path.relative_to(self.root) if path.is_absolute() else path
        return relative.as_posix() in self.moved

    def to_json(self):
        data = dataclasses.asdict(self)
        data["root"] = str(self.root)
        return json.dumps(data, indent=2)

    @classmethod
    def load(cls, out_dir):
        """The record written by :func:`inject_label_noise` into ``out_dir``."""
        path = Path(out_dir) / "noise.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no label-noise record (made by inject_label_noise)")
        data = json.loads(path.read_text())
        return cls(Path(data["root"]), data["fraction"], data["seed"], data["num_images"], data["moved"])


def inject_label_noise(root, out_dir, fraction=0.2, seed=0):
    """Write ``out_dir/train``: ``root`` with ``fraction`` of its images under a wrong identity.

    Symmetric ("label mess") noise, the first kind LATSE Sec. 3.3 describes: exactly
    ``round(fraction * N)`` images, drawn uniformly without replacement (seeded), are each
    filed under an identity drawn uniformly from the *other* identities. Every identity keeps
    at least one correctly labelled image. Files are symbolic links; a moved file is named
    ``<true identity>__<file name>`` so names stay unique. ``out_dir/noise.json`` lists the
    moved images with their true identity. The same arguments rebuild the same folder.

    Args:
        root: folder with one sub-folder of images per identity (at least 2).
        out_dir: where ``train/`` and ``noise.json`` go; ``train/`` must not exist yet.
        fraction: share of mislabelled images, in [0, 1).
        seed: seed of the choice of images and of their wrong identities.

    Returns:
        :class:`NoisyLabels`.
    """
    root, out_dir = Path(root), Path(out_dir)
    if not 0.0 <= float(fraction) < 1.0:
        raise ValueError(f"`fraction` must be in [0, 1), got {fraction!r}")
    source = FolderSource(root)
    names = list(source.class_names)
    if len(names) < 2:
        raise ValueError(f"{root}: label noise needs at least 2 identity folders, found {len(names)}")
    noisy_root = out_dir / "train"
    if noisy_root.exists():
        raise FileExistsError(f"{noisy_root}: already exists; remove it or choose another `out_dir`")
    paths = [Path(path) for path in source.file_paths]
    labels = np.asarray(source.labels)
    rng = np.random.default_rng(seed)
    # One image per identity stays put, so no identity is left with only wrong images.
    keepers = {int(rng.choice(np.flatnonzero(labels == c))) for c in range(len(names)) if np.any(labels == c)}
    candidates = np.array([i for i in range(len(paths)) if i not in keepers])
    count = int(round(float(fraction) * len(paths)))
    if count > len(candidates):
        raise ValueError(
            f"`fraction={fraction}` asks for {count} mislabelled images, but {root} has only "
            f"{len(candidates)} that are not the last image of their identity"
        )
    chosen = set(rng.choice(candidates, size=count, replace=False).tolist()) if count else set()
    moved = {}
    for index, (path, label) in enumerate(zip(paths, labels)):
        true_name = names[label]
        if index in chosen:
            # Uniform over the other identities: shift by 1..C-1.
            wrong = (int(label) + 1 + int(rng.integers(len(names) - 1))) % len(names)
            relative = Path(names[wrong]) / f"{true_name}__{path.name}"
            moved[relative.as_posix()] = true_name
        else:
            relative = Path(true_name) / path.name
        target = noisy_root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(path.resolve(), target)
    noise = NoisyLabels(noisy_root, float(fraction), int(seed), len(paths), moved)
    (out_dir / "noise.json").write_text(noise.to_json())
    return noise
