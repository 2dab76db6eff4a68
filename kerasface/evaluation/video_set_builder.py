"""A noisy set (video) verification benchmark built from a folder of identity sub-folders.

There is no video face data in the project, so "videos" are made from still face images: each
set holds frames of one identity plus injected noise frames of the three kinds LFRC (sec. 4.2,
Fig. 3) found in iQIYI-VID test videos:

* ``other_identity``: frames of a second person ("two identities in one video"), all from one
  intruder identity per set;
* ``non_face``: frames without a face: a corner crop of a real photo blown up to 112x112
  (background texture), or smooth random colour noise;
* ``occluded``: a face frame of the set's own identity with a big grey block over it.

A manifest records which frames are noise, so the outlier removal can be scored against it
(:func:`frame_kinds`, :func:`removal_stats`).
"""

import dataclasses
import json
import logging
import numbers
import os
import shutil

import numpy as np

from kerasface.evaluation.pairs_file import write_pairs

logger = logging.getLogger(__name__)

NOISE_KINDS = ("other_identity", "non_face", "occluded")
FACE = "face"
MANIFEST_FORMAT = "kerasface video sets v1"
_IMAGE_SIZE = 112
_GREY = 128
_JPEG_QUALITY = 95
_MAX_SHOWN = 5
# Past this many set pairs, impostor pairs are drawn by rejection instead of enumerated.
_MAX_ENUMERATED = 2_000_000


@dataclasses.dataclass
class VideoSets:
    """What :func:`build_video_sets` wrote.

    Args:
        out_dir: the output folder.
        root: the folder holding the set folders (``out_dir/sets``); the set-pairs root.
        pairs_path: the set-pairs file (``out_dir/set_pairs.txt``).
        manifest_path: the JSON manifest naming the kind and source of every frame.
        set_names: every set written, ``identity/vNN``.
        num_pairs: number of pairs in the pairs file (half genuine, half impostor).
        num_frames: frames written in all.
        noise_counts: ``{kind: frames}`` for the face frames and each noise kind.
        seed: the seed the benchmark was drawn with.
        skipped: ``[(path, reason)]`` of entries of the identity folder left out.
    """

    out_dir: str
    root: str
    pairs_path: str
    manifest_path: str
    set_names: list
    num_pairs: int
    num_frames: int
    noise_counts: dict
    seed: int
    skipped: list

    def summary(self):
        """One line describing the benchmark."""
        noise = sum(count for kind, count in self.noise_counts.items() if kind != FACE)
        kinds = ", ".join(
            f"{count} {kind}" for kind, count in self.noise_counts.items() if kind != FACE
        )
        return (
            f"{len(self.set_names)} sets, {self.num_frames} frames ({noise} noise: {kinds}), "
            f"{self.num_pairs} set pairs, seed {self.seed}"
        )


def build_video_sets(identity_root, out_dir, frames_per_set=8, noise_fraction=0.25,
                     num_pairs=None, seed=0, noise_kinds=NOISE_KINDS, num_folds=10,
                     linked_impostors=0.0, background_root=None, link=True, overwrite=False):
    """Write noisy frame sets and a balanced set-pairs file built from identity folders.

    Each identity's images are shuffled and cut into disjoint sets (two sets of one person
    never share a face image, like two different videos). A set draws its number of noise
    frames ``k ~ Binomial(frames_per_set, noise_fraction)``, capped at
    ``(frames_per_set - 1) // 2`` so its own identity keeps a strict majority; it then holds
    ``frames_per_set - k`` face images and ``k`` noise frames whose kinds are drawn uniformly
    from ``noise_kinds``. Intruder frames come from one other identity per set, taken from the
    images no set uses as a face frame (an identity's leftovers after cutting); only when there
    are no such images are other identities' face images used. Occluded frames are copies of
    the set's own face frames with a grey block. Frames are written in random order as
    ``frame_NN.<ext>``: real images as symlinks (or copies), generated ones as JPEG.

    Pairs: see :func:`write_set_pairs` (``linked_impostors`` makes impostor pairs where one
    video's intruder is the other video's person). The same inputs and seed give the same
    files.

    Layout: ``out_dir/sets/<identity>/vNN/frame_NN.jpg``, ``out_dir/set_pairs.txt``
    (:func:`~kerasface.evaluation.set_pairs.read_set_pairs` with root ``out_dir/sets``) and
    ``out_dir/manifest.json``.

    Args:
        identity_root: folder of identity sub-folders of aligned 112x112 faces.
        out_dir: output folder.
        frames_per_set: frames of every set, >= 2.
        noise_fraction: expected fraction of noise frames, in [0, 1).
        num_pairs: pairs to write, a multiple of ``2 * num_folds``; None writes as many as the
            sets allow (the largest such multiple of genuine pairs available).
        seed: seed of every random choice.
        noise_kinds: the noise kinds to inject, a non-empty subset of :data:`NOISE_KINDS`.
        num_folds: cross-validation folds.
        linked_impostors: fraction of the impostor pairs drawn among "linked" pairs, see
            :func:`write_set_pairs`.
        background_root: optional folder of arbitrary photos (searched recursively) to crop the
            background-texture frames from, e.g. the raw photos of the faces; default: the
            corners of the identity images.
        link: symlink the real frames (False: copy them).
        overwrite: replace an earlier benchmark in ``out_dir``.

    Returns:
        a :class:`VideoSets`.
    """
    from kerasface.data.folder_source import _index_folder
    from kerasface.evaluation.pair_generation import _usable_images

    frames_per_set = _check_int("frames_per_set", frames_per_set, 2)
    num_folds = _check_int("num_folds", num_folds, 2)
    seed = _check_int("seed", seed, None)
    if isinstance(noise_fraction, bool) or not isinstance(noise_fraction, numbers.Real) \
            or not 0 <= noise_fraction < 1:
        raise ValueError(f"`noise_fraction` must be in [0, 1), got {noise_fraction!r}")
    noise_kinds = tuple(noise_kinds)
    unknown = [kind for kind in noise_kinds if kind not in NOISE_KINDS]
    if not noise_kinds or unknown or len(set(noise_kinds)) != len(noise_kinds):
        raise ValueError(
            f"`noise_kinds` must be distinct kinds among {NOISE_KINDS}, got {noise_kinds}"
        )
    num_pairs = _check_num_pairs(num_pairs, num_folds)
    linked_impostors = _check_fraction(linked_impostors)

    identity_root = os.path.abspath(os.fspath(identity_root))
    out_dir = os.path.abspath(os.fspath(out_dir))
    indexed, _ = _index_folder(identity_root)
    images, skipped = _usable_images(indexed)
    if skipped:
        logger.warning(
            "%s: left %d entries out of the sets: %s", identity_root, len(skipped),
            ", ".join(f"{path} ({reason})" for path, reason in skipped[:_MAX_SHOWN]),
        )
    if background_root is not None:
        background_root = os.path.abspath(os.fspath(background_root))
        textures = _TextureSources(background_root, _background_images(background_root))
    else:
        textures = _TextureSources(
            identity_root, [f"{name}/{f}" for name in sorted(images) for f in images[name]]
        )

    rng = np.random.default_rng(seed)
    max_noise = (frames_per_set - 1) // 2
    sets, leftovers = [], {}
    for identity in sorted(images):
        remaining = [images[identity][i] for i in rng.permutation(len(images[identity]))]
        count = 0
        while True:
            k = min(int(rng.binomial(frames_per_set, noise_fraction)), max_noise)
            need = frames_per_set - k
            if len(remaining) < need:
                break
            sets.append({"identity": identity, "name": f"{identity}/v{count:02d}",
                         "faces": remaining[:need], "noise": k})
            remaining = remaining[need:]
            count += 1
        leftovers[identity] = remaining
    if len(sets) < 2:
        raise ValueError(
            f"{identity_root}: {sum(map(len, images.values()))} images of {len(images)} identities "
            f"make {len(sets)} set(s) of {frames_per_set} frames; at least 2 sets of different "
            "and 2 of the same identity are needed"
        )

    # Every random choice is made before any file is written: a benchmark that cannot get its
    # pairs leaves no files behind.
    for entry in sets:
        frames = [{"kind": FACE, "source": f"{entry['identity']}/{name}"}
                  for name in entry["faces"]]
        kinds = [noise_kinds[i] for i in rng.integers(len(noise_kinds), size=entry["noise"])]
        frames += _noise_frames(entry, kinds, leftovers, images, textures, rng)
        entry["frames"] = [frames[index] for index in rng.permutation(len(frames))]
    intruders = [{f["identity"] for f in entry["frames"] if f["kind"] == "other_identity"}
                 for entry in sets]
    set_a, set_b, issame = _draw_pairs(
        [entry["name"] for entry in sets], [entry["identity"] for entry in sets], intruders,
        num_pairs, num_folds, linked_impostors, rng, identity_root,
    )

    sets_root = os.path.join(out_dir, "sets")
    pairs_path = os.path.join(out_dir, "set_pairs.txt")
    manifest_path = os.path.join(out_dir, "manifest.json")
    if os.path.exists(sets_root):
        if not overwrite:
            raise FileExistsError(
                f"{sets_root} already exists; pass overwrite=True to replace it"
            )
        shutil.rmtree(sets_root)
    os.makedirs(sets_root)

    counts = {FACE: 0, **{kind: 0 for kind in noise_kinds}}
    manifest_sets = {}
    for entry in sets:
        folder = os.path.join(sets_root, entry["name"])
        os.makedirs(folder)
        written = []
        for position, frame in enumerate(entry["frames"]):
            if "render" in frame:
                name = f"frame_{position:02d}.jpg"
                _save_jpeg(_render(frame, identity_root, textures.root), os.path.join(folder, name))
                frame = {key: value for key, value in frame.items() if key != "render"}
            else:
                extension = os.path.splitext(frame["source"])[1].lower()
                name = f"frame_{position:02d}{extension}"
                _link_or_copy(os.path.join(identity_root, frame["source"]),
                              os.path.join(folder, name), link)
            counts[frame["kind"]] += 1
            written.append({"file": name, **frame})
        manifest_sets[entry["name"]] = {"identity": entry["identity"], "frames": written}

    noise_total = sum(count for kind, count in counts.items() if kind != FACE)
    comment = (
        f"kerasface video sets from {identity_root}: {len(sets)} sets of {frames_per_set} frames, "
        f"noise fraction {noise_fraction} ({noise_total} noise frames: {', '.join(noise_kinds)}), "
        f"{len(issame)} pairs in {num_folds} folds, linked impostors {linked_impostors}, seed "
        f"{seed}; root: the sets/ folder beside this file"
    )
    write_pairs(pairs_path, set_a, set_b, issame, comment=comment)
    manifest = {
        "format": MANIFEST_FORMAT,
        "identity_root": identity_root,
        "background_root": background_root,
        "frames_per_set": frames_per_set,
        "noise_fraction": float(noise_fraction),
        "noise_kinds": list(noise_kinds),
        "num_folds": num_folds,
        "seed": seed,
        "num_pairs": len(issame),
        "frame_counts": counts,
        "sets": manifest_sets,
    }
    temporary = f"{manifest_path}.tmp{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    os.replace(temporary, manifest_path)
    return VideoSets(
        out_dir=out_dir,
        root=sets_root,
        pairs_path=pairs_path,
        manifest_path=manifest_path,
        set_names=[entry["name"] for entry in sets],
        num_pairs=len(issame),
        num_frames=sum(counts.values()),
        noise_counts=counts,
        seed=seed,
        skipped=skipped,
    )


def load_manifest(path):
    """Read a :func:`build_video_sets` manifest (checks its format tag)."""
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path}: not a kerasface video-sets manifest ({MANIFEST_FORMAT!r})")
    return manifest


def write_set_pairs(manifest_path, pairs_path, num_pairs=None, num_folds=10,
                    linked_impostors=0.0, seed=0):
    """Draw another set-pairs file over the sets of a :func:`build_video_sets` benchmark.

    Genuine pairs join two sets of one identity, impostor pairs two sets of different
    identities, each drawn uniformly without repeats (in either order); ``num_pairs / 2`` of
    each are dealt into ``num_folds`` contiguous folds, each fold half genuine then half
    impostor (identities are shared across folds).

    A fraction ``linked_impostors`` of the impostor pairs is drawn among *linked* pairs, where
    one set holds intruder frames of the other set's identity (the co-star of a video is the
    star of another). Averaging every frame makes such pairs look alike, so they are where the
    outlier removal matters most; the rest are drawn among the remaining impostor pairs.

    Args:
        manifest_path: the benchmark's ``manifest.json``.
        pairs_path: the set-pairs file to write (its root is the benchmark's ``sets`` folder).
        num_pairs: pairs to write, a multiple of ``2 * num_folds``; None: as many as possible.
        num_folds: cross-validation folds.
        linked_impostors: fraction of linked impostor pairs, in [0, 1].
        seed: seed of the draws.

    Returns:
        the number of pairs written.
    """
    num_folds = _check_int("num_folds", num_folds, 2)
    num_pairs = _check_num_pairs(num_pairs, num_folds)
    linked_impostors = _check_fraction(linked_impostors)
    manifest = load_manifest(manifest_path)
    names = sorted(manifest["sets"])
    identities = [manifest["sets"][name]["identity"] for name in names]
    intruders = [{f["identity"] for f in manifest["sets"][name]["frames"]
                  if f["kind"] == "other_identity"} for name in names]
    set_a, set_b, issame = _draw_pairs(
        names, identities, intruders, num_pairs, num_folds, linked_impostors,
        np.random.default_rng(_check_int("seed", seed, None)), os.fspath(manifest_path),
    )
    comment = (
        f"kerasface video sets {os.path.abspath(os.fspath(manifest_path))}: {len(issame)} pairs "
        f"in {num_folds} folds, linked impostors {linked_impostors}, seed {seed}"
    )
    write_pairs(pairs_path, set_a, set_b, issame, comment=comment)
    return len(issame)


def frame_kinds(manifest, set_pairs):
    """Per set of ``set_pairs``, the manifest kind of each frame (``"face"`` or a noise kind).

    Args:
        manifest: a dict from :func:`load_manifest`.
        set_pairs: a :class:`~kerasface.evaluation.set_pairs.SetPairs` over the same sets.

    Returns:
        one ``(n_i,)`` array of kind strings per set, aligned with ``set_pairs.frame_paths``.
    """
    kinds = []
    for name, paths in zip(set_pairs.set_names, set_pairs.frame_paths):
        entry = manifest["sets"].get(name)
        if entry is None:
            raise ValueError(f"set {name} of {set_pairs.path} is not in the manifest")
        by_file = {frame["file"]: frame["kind"] for frame in entry["frames"]}
        files = [os.path.basename(p) for p in paths]
        unknown = [f for f in files if f not in by_file]
        if unknown or len(files) != len(by_file):
            raise ValueError(
                f"set {name}: frames on disk {files} do not match the manifest's {sorted(by_file)}"
            )
        kinds.append(np.array([by_file[f] for f in files]))
    return kinds


def removal_stats(kinds_per_set, kept_per_set):
    """How well an outlier removal dropped the injected noise frames.

    Args:
        kinds_per_set: per set, the kind of each frame (:func:`frame_kinds`).
        kept_per_set: per set, the indices of the frames kept.

    Returns:
        dict with ``frames``, ``noise_frames``, ``removed``, ``noise_removed``,
        ``faces_removed``, ``precision`` (noise among removed frames; None when nothing was
        removed), ``recall`` (removed among noise frames; None without noise) and ``per_kind``
        ``{kind: {"frames", "removed", "removed_fraction"}}``.
    """
    if len(kinds_per_set) != len(kept_per_set):
        raise ValueError(
            f"{len(kinds_per_set)} sets of frame kinds but {len(kept_per_set)} sets of kept frames"
        )
    per_kind = {}
    for kinds, kept in zip(kinds_per_set, kept_per_set):
        removed = np.ones(len(kinds), bool)
        removed[np.asarray(kept, np.int64)] = False
        for kind in np.unique(kinds):
            stats = per_kind.setdefault(str(kind), {"frames": 0, "removed": 0})
            stats["frames"] += int(np.count_nonzero(kinds == kind))
            stats["removed"] += int(np.count_nonzero(removed & (kinds == kind)))
    for stats in per_kind.values():
        stats["removed_fraction"] = stats["removed"] / stats["frames"]
    frames = sum(s["frames"] for s in per_kind.values())
    noise = sum(s["frames"] for kind, s in per_kind.items() if kind != FACE)
    removed = sum(s["removed"] for s in per_kind.values())
    noise_removed = sum(s["removed"] for kind, s in per_kind.items() if kind != FACE)
    return {
        "frames": frames,
        "noise_frames": noise,
        "removed": removed,
        "noise_removed": noise_removed,
        "faces_removed": removed - noise_removed,
        "precision": noise_removed / removed if removed else None,
        "recall": noise_removed / noise if noise else None,
        "per_kind": dict(sorted(per_kind.items())),
    }


def _noise_frames(entry, kinds, leftovers, images, texture_sizes, rng):
    """Manifest records of one set's noise frames; generated ones carry a ``render`` recipe.

    Only the random choices are made here (sources, boxes, seeds); pixels are rendered from
    the recipe when the frame is written, so a big benchmark is never held in memory.
    """
    frames = []
    intruders = kinds.count("other_identity")
    if intruders:
        others = [name for name in sorted(leftovers) if name != entry["identity"]]
        enough = [name for name in others if len(leftovers[name]) >= intruders]
        some = [name for name in others if leftovers[name]]
        if enough or some:
            pool_of, candidates = leftovers, enough or some
        else:
            # No unused images anywhere: fall back to other identities' face images.
            pool_of, candidates = images, others
        intruder = candidates[int(rng.integers(len(candidates)))]
        pool = pool_of[intruder]
        chosen = rng.choice(len(pool), size=intruders, replace=len(pool) < intruders)
        frames += [{"kind": "other_identity", "source": f"{intruder}/{pool[i]}",
                    "identity": intruder} for i in chosen]
    for kind in kinds:
        if kind == "occluded":
            face = entry["faces"][int(rng.integers(len(entry["faces"])))]
            box = _occlusion_box(rng)
            frames.append({"kind": kind, "source": f"{entry['identity']}/{face}",
                           "detail": f"grey block {box}", "render": ("occluded", box)})
        elif kind == "non_face":
            if rng.random() < 0.5:
                source = texture_sizes.sources[int(rng.integers(len(texture_sizes.sources)))]
                box, flip = _texture_box(texture_sizes.size(source), rng)
                frames.append({"kind": kind, "source": source,
                               "detail": f"texture crop {box}{', mirrored' if flip else ''}",
                               "render": ("texture", box, flip)})
            else:
                grid, noise_seed = int(rng.integers(3, 17)), int(rng.integers(2**62))
                frames.append({"kind": kind, "source": None,
                               "detail": f"random noise {grid}x{grid}, seed {noise_seed}",
                               "render": ("noise", grid, noise_seed)})
    return frames


class _TextureSources:
    """Photos to cut texture frames from, with their sizes read (from the header) on demand."""

    def __init__(self, root, sources):
        self.root = root
        self.sources = sources
        self._sizes = {}

    def size(self, source):
        from PIL import Image

        if source not in self._sizes:
            path = os.path.join(self.root, source)
            try:
                with Image.open(path) as image:
                    self._sizes[source] = image.size
            except OSError as error:
                raise ValueError(f"{path}: cannot read image: {error}") from None
        return self._sizes[source]


def _render(frame, identity_root, texture_root):
    """uint8 (112, 112, 3) pixels of a generated frame, from its ``render`` recipe."""
    recipe = frame["render"]
    if recipe[0] == "occluded":
        x0, y0, x1, y1 = recipe[1]
        pixels = _load_rgb(identity_root, frame["source"], resize=True).copy()
        pixels[y0:y1, x0:x1] = _GREY
        return pixels
    if recipe[0] == "texture":
        from PIL import Image

        x0, y0, x1, y1 = recipe[1]
        photo = _load_rgb(texture_root, frame["source"], resize=False)
        crop = Image.fromarray(photo[y0:y1, x0:x1])
        pixels = np.asarray(crop.resize((_IMAGE_SIZE, _IMAGE_SIZE), Image.BICUBIC), np.uint8)
        return np.ascontiguousarray(pixels[:, ::-1] if recipe[2] else pixels)
    return _smooth_noise(*recipe[1:])


def _load_rgb(root, relative, resize):
    from PIL import Image

    path = os.path.join(root, relative)
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if resize and image.size != (_IMAGE_SIZE, _IMAGE_SIZE):
                image = image.resize((_IMAGE_SIZE, _IMAGE_SIZE), Image.BICUBIC)
            return np.asarray(image, np.uint8)
    except OSError as error:
        raise ValueError(f"{path}: cannot read image: {error}") from None


def _occlusion_box(rng):
    """``[x0, y0, x1, y1]`` of a grey block over 45-70% of the height, 60-100% of the width."""
    height = int(round(_IMAGE_SIZE * rng.uniform(0.45, 0.7)))
    width = int(round(_IMAGE_SIZE * rng.uniform(0.6, 1.0)))
    # Centred on the eyes-to-mouth region of an aligned crop, with some jitter.
    centre_y = _IMAGE_SIZE * rng.uniform(0.35, 0.7)
    centre_x = _IMAGE_SIZE * rng.uniform(0.4, 0.6)
    y0 = int(np.clip(round(centre_y - height / 2), 0, _IMAGE_SIZE - height))
    x0 = int(np.clip(round(centre_x - width / 2), 0, _IMAGE_SIZE - width))
    return [x0, y0, x0 + width, y0 + height]


def _texture_box(size, rng):
    """A corner square (22-35% of the short side) of a ``(width, height)`` photo, and a flip."""
    w, h = size
    side = min(max(8, int(round(min(h, w) * rng.uniform(0.22, 0.35)))), h, w)
    corner = int(rng.integers(4))
    y0 = 0 if corner < 2 else h - side
    x0 = 0 if corner % 2 == 0 else w - side
    return [x0, y0, x0 + side, y0 + side], bool(rng.random() < 0.5)


def _smooth_noise(grid, noise_seed):
    """Random colour blobs: a ``grid x grid`` random image upsampled, plus fine grain."""
    from PIL import Image

    rng = np.random.default_rng(noise_seed)
    coarse = rng.integers(0, 256, size=(grid, grid, 3), dtype=np.uint8)
    smooth = np.asarray(
        Image.fromarray(coarse).resize((_IMAGE_SIZE, _IMAGE_SIZE), Image.BICUBIC), np.float32
    )
    grain = rng.normal(0.0, 8.0, size=smooth.shape)
    return np.clip(np.rint(smooth + grain), 0, 255).astype(np.uint8)


def _save_jpeg(pixels, path):
    from PIL import Image

    Image.fromarray(pixels).save(path, format="JPEG", quality=_JPEG_QUALITY)


def _link_or_copy(source, destination, link):
    if link:
        try:
            os.symlink(source, destination)
            return
        except OSError:
            pass  # e.g. a file system without symlinks: fall back to a copy.
    shutil.copyfile(source, destination)


def _background_images(root):
    from kerasface.data.folder_source import IMAGE_EXTENSIONS

    if not os.path.isdir(root):
        raise FileNotFoundError(f"background folder {root} does not exist")
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        for name in sorted(files):
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(os.path.relpath(os.path.join(folder, name), root))
    if not found:
        raise ValueError(f"background folder {root} holds no {'/'.join(IMAGE_EXTENSIONS)} images")
    return found


def _draw_pairs(names, identities, intruders, num_pairs, num_folds, linked_impostors, rng,
                source):
    """``(set_a, set_b, issame)`` name lists, fold after fold (half genuine, half impostor)."""
    identities = np.asarray(identities)
    members = {}
    for index, identity in enumerate(identities.tolist()):
        members.setdefault(identity, []).append(index)
    genuine_candidates = [
        (group[i], group[j]) for group in members.values()
        for i in range(len(group)) for j in range(i + 1, len(group))
    ]
    linked_candidates = sorted({
        (min(a, b), max(a, b))
        for a, others in enumerate(intruders) for other in sorted(others)
        for b in members.get(other, [])
    })
    total_pairs = len(names) * (len(names) - 1) // 2
    impostor_capacity = total_pairs - len(genuine_candidates)
    available = min(len(genuine_candidates), impostor_capacity)
    if num_pairs is None:
        half = available // num_folds * num_folds
        if linked_impostors > 0:
            most_linked = int(len(linked_candidates) / linked_impostors)
            half = min(half, most_linked // num_folds * num_folds)
        if half == 0:
            raise ValueError(
                f"{source}: {len(names)} sets allow {len(genuine_candidates)} genuine, "
                f"{impostor_capacity} impostor ({len(linked_candidates)} linked) pairs, fewer than "
                f"the {num_folds} of each that {num_folds} folds need; use fewer frames per set "
                "or folds"
            )
    else:
        half = num_pairs // 2
        if half > available:
            most = available // num_folds * num_folds * 2
            raise ValueError(
                f"{source}: {len(names)} sets allow {len(genuine_candidates)} genuine and "
                f"{impostor_capacity} impostor pairs, so at most {most} balanced pairs in "
                f"{num_folds} folds; got num_pairs={num_pairs}"
            )
    num_linked = int(round(half * linked_impostors))
    if num_linked > len(linked_candidates):
        raise ValueError(
            f"{source}: {num_linked} linked impostor pairs wanted ({linked_impostors} of {half}), "
            f"but the sets allow only {len(linked_candidates)} (pairs where one set's intruder "
            "is the other set's identity); lower `linked_impostors` or `num_pairs`"
        )
    chosen = rng.choice(len(genuine_candidates), size=half, replace=False)
    genuine = [genuine_candidates[i] for i in chosen]
    chosen = rng.choice(len(linked_candidates), size=num_linked, replace=False)
    impostor = [linked_candidates[i] for i in chosen]
    taken = set(impostor)
    if total_pairs <= _MAX_ENUMERATED:
        a, b = np.triu_indices(len(names), k=1)
        keep = identities[a] != identities[b]
        a, b = a[keep], b[keep]
        if taken:
            keep = np.array([(x, y) not in taken for x, y in zip(a.tolist(), b.tolist())])
            a, b = a[keep], b[keep]
        chosen = rng.choice(len(a), size=half - num_linked, replace=False)
        impostor += [(int(a[i]), int(b[i])) for i in chosen]
    else:
        while len(impostor) < half:
            a, b = (int(x) for x in rng.choice(len(names), size=2, replace=False))
            key = (min(a, b), max(a, b))
            if identities[a] != identities[b] and key not in taken:
                taken.add(key)
                impostor.append(key)
    # Linked and unlinked impostors are mixed so every fold gets its share of both.
    impostor = [impostor[i] for i in rng.permutation(len(impostor))]

    per_fold = half // num_folds
    set_a, set_b, issame = [], [], []
    for fold in range(num_folds):
        for block, same in ((genuine, True), (impostor, False)):
            for a, b in block[fold * per_fold:(fold + 1) * per_fold]:
                set_a.append(names[a])
                set_b.append(names[b])
                issame.append(same)
    return set_a, set_b, issame


def _check_int(label, value, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"`{label}` must be an int, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"`{label}` must be >= {low}, got {value}")
    return int(value)


def _check_num_pairs(num_pairs, num_folds):
    if num_pairs is None:
        return None
    num_pairs = _check_int("num_pairs", num_pairs, 2 * num_folds)
    if num_pairs % (2 * num_folds):
        raise ValueError(
            f"`num_pairs` must be a multiple of 2 * num_folds = {2 * num_folds} (each fold "
            f"half genuine, half impostor), got {num_pairs}"
        )
    return num_pairs


def _check_fraction(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"`linked_impostors` must be in [0, 1], got {value!r}")
    return float(value)
