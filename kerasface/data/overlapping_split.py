"""Split one identity folder into two datasets whose identities overlap (DAIL Fig. 2)."""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from kerasface.data.folder_source import FolderSource


@dataclasses.dataclass
class OverlappingSplit:
    """Two identity folders made from one, sharing some identities under separate labels.

    Attributes:
        roots: the two dataset folders ``(A, B)``.
        shared: identity names present in both (their images split between A and B).
        only_a, only_b: identity names in one dataset only.
        num_images: images in A and in B.
        dropped: ``{identity: reason}`` for shared identities that could not go to both
            datasets (fewer than 2 images): they stay in A only and are counted here.
    """

    roots: tuple
    shared: list
    only_a: list
    only_b: list
    num_images: tuple
    dropped: dict

    def to_json(self):
        data = dataclasses.asdict(self)
        data["roots"] = [str(root) for root in self.roots]
        return json.dumps(data, indent=2)


def split_overlapping(root, out_dir, shared_fraction=1 / 3, seed=0, names=("A", "B")):
    """Write datasets A and B (symbolic links to ``root``'s images) with overlapping identities.

    The sorted identities of ``root`` are laid out as ``[only A | shared | only B]``, with
    ``round(shared_fraction * n)`` shared and the rest halved (150 identities, 1/3: A = 1-100,
    B = 51-150). Each shared identity's images are shuffled (seeded) and split in two
    disjoint halves, one per dataset, so the same person appears in both datasets with
    different images: the ID-overlap case a naive combination mislabels as two people.
    ``out_dir/split.json`` records the layout. Rerunning with the same arguments rebuilds
    the same split.

    Args:
        root: folder with one sub-folder of images per identity.
        out_dir: where ``A/`` and ``B/`` (``names``) are written; must not already hold them.
        shared_fraction: share of identities in both datasets, in [0, 1).
        seed: seed of the image split of shared identities.
        names: the two dataset folder names.

    Returns:
        :class:`OverlappingSplit`.
    """
    root, out_dir = Path(root), Path(out_dir)
    if not 0.0 <= float(shared_fraction) < 1.0:
        raise ValueError(f"`shared_fraction` must be in [0, 1), got {shared_fraction!r}")
    if len(names) != 2 or names[0] == names[1]:
        raise ValueError(f"`names` must be two different folder names, got {names!r}")
    source = FolderSource(root)
    identities = {name: [] for name in source.class_names}
    for path, label in zip(source.file_paths, source.labels):
        identities[source.class_names[label]].append(path)
    if len(identities) < 3:
        raise ValueError(f"{root}: need at least 3 identity folders to split, found {len(identities)}")
    ordered = sorted(identities)
    n = len(ordered)
    num_shared = int(round(float(shared_fraction) * n))
    num_only_a = (n - num_shared) // 2
    only_a = ordered[:num_only_a]
    shared = ordered[num_only_a:num_only_a + num_shared]
    only_b = ordered[num_only_a + num_shared:]

    roots = tuple(out_dir / name for name in names)
    for dataset_root in roots:
        if dataset_root.exists():
            raise FileExistsError(f"{dataset_root}: already exists; remove it or choose another `out_dir`")
    rng = np.random.default_rng(seed)
    plan_a = {identity: identities[identity] for identity in only_a}
    plan_b = {identity: identities[identity] for identity in only_b}
    dropped = {}
    for identity in shared:
        files = sorted(identities[identity])
        if len(files) < 2:
            plan_a[identity] = files
            dropped[identity] = f"{len(files)} image(s): kept in {names[0]} only"
            continue
        order = rng.permutation(len(files))
        half = len(files) // 2
        plan_a[identity] = [files[i] for i in sorted(order[:half])]
        plan_b[identity] = [files[i] for i in sorted(order[half:])]
    for dataset_root, plan in zip(roots, (plan_a, plan_b)):
        for identity, files in plan.items():
            folder = dataset_root / identity
            folder.mkdir(parents=True)
            for path in files:
                os.symlink(Path(path).resolve(), folder / Path(path).name)
    split = OverlappingSplit(
        roots=roots,
        shared=[identity for identity in shared if identity not in dropped],
        only_a=only_a,
        only_b=only_b,
        num_images=(sum(map(len, plan_a.values())), sum(map(len, plan_b.values()))),
        dropped=dropped,
    )
    (out_dir / "split.json").write_text(split.to_json())
    return split
