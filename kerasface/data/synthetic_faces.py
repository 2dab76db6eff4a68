"""Procedurally drawn synthetic identities: a face-recognition dataset that needs no download.

Every identity is a fixed face geometry (face shape, eyes, brows, nose, mouth, hair, skin tone,
sometimes glasses, a beard or a mole); every image of it varies pose (rotation, shift, scale,
a yaw-like turn), expression, lighting, background, noise, blur, JPEG quality and sometimes an
occluding rectangle. The layout follows the usual 112x112 aligned-face template (eyes near
y=52, mouth near y=92), so models trained on it see the same arrangement as on aligned photos.

Everything is drawn from NumPy generators seeded by ``(seed, identity)`` and
``(seed, identity, image)``, so the same seed writes byte-identical files in any order.
"""

import dataclasses
import json
import logging
import math
import os
import shutil

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from kerasface.data.preprocessing import IMAGE_SIZE

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
MARKER_FILE = ".kerasface_synthetic.json"

_SUPERSAMPLE = 2  # drawn at 2x and reduced: cheap anti-aliasing for ImageDraw shapes
_CANVAS = IMAGE_SIZE * _SUPERSAMPLE

_HAIR_COLOURS = np.array(
    [
        (20, 16, 14),  # black
        (55, 35, 22),  # dark brown
        (105, 70, 40),  # brown
        (190, 150, 90),  # blond
        (150, 60, 25),  # red
        (140, 140, 140),  # grey
        (225, 225, 220),  # white
    ],
    np.float64,
)
_HAIR_STYLES = ("bald", "crop", "side_part", "fringe", "long", "puffy", "receding")
_EYE_COLOURS = np.array(
    [(70, 45, 25), (40, 30, 20), (60, 100, 150), (70, 120, 80), (110, 110, 110)], np.float64
)
_BEARDS = ("none", "none", "none", "stubble", "full", "goatee", "moustache")


def synthetic_identity(identity, seed=0):
    """The fixed drawing parameters (a dict) of synthetic identity number ``identity``."""
    rng = np.random.default_rng([seed, identity, 0])
    skin_t = rng.uniform()
    skin = (1 - skin_t) * np.array([236, 200, 176]) + skin_t * np.array([92, 62, 46])
    skin = np.clip(skin + rng.normal(0, 8, 3), 0, 255)
    hair_colour = _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))] + rng.normal(0, 10, 3)
    return {
        "skin": skin,
        "face_half_width": rng.uniform(30, 41),
        "face_half_height": rng.uniform(44, 54),
        "face_center_y": rng.uniform(58, 66),
        "chin_width": rng.uniform(0.3, 0.85),  # lower-face narrowing: pointed .. square jaw
        "roundness": rng.uniform(2.0, 3.4),  # superellipse exponent of the upper face
        "ear_size": rng.uniform(6, 11),
        "eye_half_spacing": rng.uniform(14, 21),
        "eye_y": rng.uniform(47, 56),
        "eye_width": rng.uniform(5.5, 9.5),
        "eye_height": rng.uniform(2.2, 4.8),
        "eye_tilt": rng.uniform(-0.25, 0.25),
        "iris_colour": _EYE_COLOURS[rng.integers(len(_EYE_COLOURS))],
        "iris_ratio": rng.uniform(0.35, 0.6),
        "brow_thickness": rng.uniform(1.2, 4.0),
        "brow_length": rng.uniform(9, 18),
        "brow_gap": rng.uniform(5, 11),
        "brow_arch": rng.uniform(-2, 5),
        "brow_tilt": rng.uniform(-0.3, 0.3),
        "nose_length": rng.uniform(12, 25),
        "nose_width": rng.uniform(5, 14),
        "nose_style": int(rng.integers(3)),
        "mouth_gap": rng.uniform(12, 22),  # nose tip -> mouth
        "mouth_half_width": rng.uniform(8, 18),
        "lip_thickness": rng.uniform(1.5, 6),
        "lip_colour": np.clip(skin * rng.uniform(0.55, 0.85) + [40, 0, 5], 0, 255),
        "smile": rng.uniform(-3, 4),
        "hair_style": _HAIR_STYLES[rng.integers(len(_HAIR_STYLES))],
        "hair_colour": np.clip(hair_colour, 0, 255),
        "hairline": rng.uniform(0.45, 0.8),  # fraction of the upper face covered by hair
        "hair_volume": rng.uniform(2, 12),
        "part_side": float(rng.choice([-1.0, 1.0])),
        "beard": _BEARDS[rng.integers(len(_BEARDS))],
        "glasses": rng.uniform() < 0.25,
        "glasses_round": rng.uniform() < 0.5,
        "glasses_colour": rng.uniform(0, 120, 3) * rng.choice([1, 1, 2]),
        "glasses_dark": rng.uniform() < 0.15,
        "mole": (rng.uniform(-30, 30), rng.uniform(55, 100), rng.uniform(1, 2.5))
        if rng.uniform() < 0.4
        else None,
        "freckles": rng.uniform() < 0.15,
        "freckle_seed": int(rng.integers(1 << 30)),
    }


def synthetic_face(identity, image, seed=0, identity_params=None):
    """Draw image number ``image`` of synthetic identity ``identity``: uint8 (112, 112, 3) RGB."""
    params = identity_params or synthetic_identity(identity, seed)
    rng = np.random.default_rng([seed, identity, image + 1])
    return _render(params, rng)


def write_synthetic_faces(out_dir, num_identities=200, images_per_identity=20, seed=0,
                          first_identity=0, workers=None):
    """Write ``out_dir/id_XXXX/NNN.jpg`` for ``num_identities`` synthetic identities.

    Args:
        out_dir: folder to write into (created).
        num_identities: how many identities.
        images_per_identity: images per identity (at least 2 for verification pairs).
        seed: the dataset seed; same seed, same bytes.
        first_identity: number of the first identity, so that two calls can write disjoint
            identity sets (e.g. train and validation).
        workers: processes to draw with; None uses all CPUs, 1 draws in this process.

    Returns:
        the list of identity folder names written.
    """
    for name, value, low in (
        ("num_identities", num_identities, 1),
        ("images_per_identity", images_per_identity, 1),
        ("first_identity", first_identity, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"`{name}` must be an int >= {low}, got {value!r}")
    os.makedirs(out_dir, exist_ok=True)
    identities = list(range(first_identity, first_identity + num_identities))
    jobs = [(os.fspath(out_dir), i, images_per_identity, seed) for i in identities]
    import multiprocessing

    if workers is None:
        workers = os.cpu_count() or 1
    # fork only: the drawing code is plain NumPy/PIL, while spawned workers would re-import
    # TensorFlow (seconds each). Where fork is unavailable, draw in this process.
    if "fork" not in multiprocessing.get_all_start_methods():
        workers = 1
    if workers > 1 and len(jobs) > 1:
        context = multiprocessing.get_context("fork")
        with context.Pool(min(workers, len(jobs))) as pool:
            names = pool.map(_write_identity, jobs, chunksize=max(1, len(jobs) // (4 * workers)))
    else:
        names = [_write_identity(job) for job in jobs]
    return names


def write_synthetic_pairs(image_dir, pairs_path, num_pairs=600, seed=0, num_folds=10):
    """Write an ``a b issame`` verification pairs file for a folder of identity sub-folders.

    ``num_pairs`` pairs are cut into ``num_folds`` equal contiguous folds; each fold holds a
    block of same-identity pairs followed by a block of different-identity pairs of equal size.
    When there are enough identities the folds use disjoint identities (as in LFW), so a
    threshold chosen on nine folds is tested on people it has not seen.

    Args:
        image_dir: folder of ``<identity>/<image>`` files; pair paths are relative to it.
        pairs_path: the file to write.
        num_pairs: total number of pairs, a multiple of ``2 * num_folds``.
        seed: seed of the pair choice.
        num_folds: number of folds (10 for the LFW protocol).

    Returns:
        ``pairs_path``.
    """
    if num_pairs < 2 * num_folds or num_pairs % (2 * num_folds):
        raise ValueError(
            f"`num_pairs` must be a positive multiple of 2 * num_folds = {2 * num_folds} (each "
            f"fold half same, half different), got {num_pairs}"
        )
    image_dir = os.fspath(image_dir)
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"image folder {image_dir} does not exist")
    images = {}
    for name in sorted(os.listdir(image_dir)):
        folder = os.path.join(image_dir, name)
        if not os.path.isdir(folder) or name.startswith("."):
            continue
        files = sorted(
            f for f in os.listdir(folder)
            if f.lower().endswith((".jpg", ".jpeg", ".png", ".bmp"))
        )
        if any(c.isspace() for c in name + "".join(files)):
            raise ValueError(f"{folder}: names with whitespace cannot go into a pairs file")
        if files:
            images[name] = files
    names = list(images)
    if len(names) < 2 or not any(len(files) >= 2 for files in images.values()):
        raise ValueError(
            f"{image_dir}: need at least 2 identities, one of them with 2+ images, to make "
            f"pairs; found {len(names)} identities"
        )
    rng = np.random.default_rng([seed, 7919])
    per_block = num_pairs // (2 * num_folds)
    order = rng.permutation(len(names))
    disjoint = all(
        _pair_capacity([len(images[names[i]]) for i in order[fold::num_folds]]) >= (
            per_block, per_block)
        for fold in range(num_folds)
    )
    lines = []
    for fold in range(num_folds):
        pool = [names[i] for i in order[fold::num_folds]] if disjoint else names
        same_pool = [n for n in pool if len(images[n]) >= 2]
        seen = set()
        for issame in (True, False):
            made = 0
            for _ in range(100 * per_block):
                if made == per_block:
                    break
                if issame:
                    name = same_pool[rng.integers(len(same_pool))]
                    i, j = rng.choice(len(images[name]), 2, replace=False)
                    a, b = f"{name}/{images[name][i]}", f"{name}/{images[name][j]}"
                else:
                    n1, n2 = rng.choice(len(pool), 2, replace=False)
                    a = f"{pool[n1]}/{images[pool[n1]][rng.integers(len(images[pool[n1]]))]}"
                    b = f"{pool[n2]}/{images[pool[n2]][rng.integers(len(images[pool[n2]]))]}"
                key = (min(a, b), max(a, b))
                if key in seen:
                    continue
                seen.add(key)
                lines.append(f"{a} {b} {int(issame)}")
                made += 1
            if made < per_block:
                raise ValueError(
                    f"{image_dir}: cannot draw {per_block} distinct "
                    f"{'same' if issame else 'different'}-identity pairs for fold {fold + 1}; "
                    "add images or ask for fewer pairs"
                )
    directory = os.path.dirname(os.path.abspath(pairs_path))
    os.makedirs(directory, exist_ok=True)
    with open(pairs_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return pairs_path


def _pair_capacity(counts):
    """Distinct (same, different)-identity pairs that identities with ``counts`` images allow."""
    counts = np.asarray(counts, np.int64)
    same = int((counts * (counts - 1) // 2).sum())
    different = int((counts.sum() ** 2 - (counts ** 2).sum()) // 2)
    return same, different


@dataclasses.dataclass
class SyntheticDataset:
    """Where :func:`make_synthetic_dataset` put things.

    Args:
        root: the dataset folder.
        train_dir: training identities (``id_XXXX/NNN.jpg``).
        val_dir: validation identities, disjoint from the training ones.
        val_pairs: ``a b issame`` pairs among ``val_dir`` images (paths relative to it).
        generated: False when an existing identical dataset was reused.
    """

    root: str
    train_dir: str
    val_dir: str
    val_pairs: str
    generated: bool


def make_synthetic_dataset(out_dir, train_identities=200, val_identities=50,
                           images_per_identity=20, val_images_per_identity=None,
                           num_pairs=600, seed=0, workers=None):
    """Create ``out_dir/train``, ``out_dir/val`` and ``out_dir/val_pairs.txt`` (idempotent).

    Training identities are numbers ``0..train_identities-1`` and validation identities the
    next ``val_identities`` numbers, so the two sets never share a person. A marker file
    records the parameters: calling again with the same parameters reuses the files, with
    other parameters regenerates them. A folder with ``train``/``val`` but no marker was not
    written here and is left alone (error).

    Returns:
        a :class:`SyntheticDataset`.
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    if isinstance(val_identities, bool) or not isinstance(val_identities, int) or (
        val_identities < 2
    ):
        raise ValueError(
            f"`val_identities` must be an int >= 2 to make pairs, got {val_identities!r}"
        )
    val_images_per_identity = val_images_per_identity or images_per_identity
    params = {
        "version": GENERATOR_VERSION,
        "train_identities": train_identities,
        "val_identities": val_identities,
        "images_per_identity": images_per_identity,
        "val_images_per_identity": val_images_per_identity,
        "num_pairs": num_pairs,
        "seed": seed,
    }
    result = SyntheticDataset(
        root=out_dir,
        train_dir=os.path.join(out_dir, "train"),
        val_dir=os.path.join(out_dir, "val"),
        val_pairs=os.path.join(out_dir, "val_pairs.txt"),
        generated=True,
    )
    marker = os.path.join(out_dir, MARKER_FILE)
    if os.path.isfile(marker):
        with open(marker, encoding="utf-8") as f:
            try:
                recorded = json.load(f)
            except json.JSONDecodeError:
                recorded = {}
        if recorded.get("params") == params and recorded.get("complete"):
            return dataclasses.replace(result, generated=False)
        logger.info("%s: parameters changed or earlier run incomplete; regenerating", out_dir)
        for path in (result.train_dir, result.val_dir):
            shutil.rmtree(path, ignore_errors=True)
        if os.path.exists(result.val_pairs):
            os.remove(result.val_pairs)
    else:
        existing = [p for p in (result.train_dir, result.val_dir) if os.path.exists(p)]
        if existing:
            raise FileExistsError(
                f"{out_dir} already holds {', '.join(existing)} but no {MARKER_FILE}; it was "
                "not written by make_synthetic_dataset, so it is left alone: choose another "
                "folder or delete it"
            )
    os.makedirs(out_dir, exist_ok=True)
    _write_marker(marker, params, complete=False)
    write_synthetic_faces(result.train_dir, train_identities, images_per_identity, seed,
                          first_identity=0, workers=workers)
    write_synthetic_faces(result.val_dir, val_identities, val_images_per_identity, seed,
                          first_identity=train_identities, workers=workers)
    write_synthetic_pairs(result.val_dir, result.val_pairs, num_pairs, seed)
    _write_marker(marker, params, complete=True)
    return result


def _write_marker(path, params, complete):
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"params": params, "complete": complete}, f, indent=1)


def _identity_name(identity):
    return f"id_{identity:04d}"


def _write_identity(job):
    out_dir, identity, count, seed = job
    name = _identity_name(identity)
    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    params = synthetic_identity(identity, seed)
    for image in range(count):
        rng = np.random.default_rng([seed, identity, image + 1])
        pixels = _render(params, rng)
        quality = int(rng.integers(70, 96))
        Image.fromarray(pixels).save(os.path.join(folder, f"{image:03d}.jpg"), quality=quality)
    return name


# ---- drawing ---------------------------------------------------------------------------------


def _colour(rgb, alpha=None):
    r, g, b = (int(min(max(c, 0.0), 255.0) + 0.5) for c in rgb)
    return (r, g, b) if alpha is None else (r, g, b, int(alpha))


def _unit_circle(n):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], 1)


_CIRCLE_LARGE = _unit_circle(28)
_CIRCLE_SMALL = _unit_circle(14)


class _Pen:
    """Draws shapes given in 112-pixel face coordinates through the image's pose transform.

    Moving the points instead of warping a drawn layer keeps one image to a few milliseconds:
    ellipses become polygons so that they rotate with the head.
    """

    def __init__(self, image, angle, scale, squeeze, shift):
        self.draw = ImageDraw.Draw(image, "RGBA")
        a = math.radians(angle)
        ca, sa = math.cos(a), math.sin(a)
        s = _SUPERSAMPLE
        # Rotate and scale about the image centre, squeeze horizontally, then shift.
        self.matrix = np.array(
            [[ca * scale * squeeze, -sa * scale * squeeze], [sa * scale, ca * scale]]
        ) * s
        centre = IMAGE_SIZE / 2
        self.offset = (np.array([centre, centre]) + shift) * s - self.matrix @ [centre, centre]
        self.width_scale = scale * s

    def points(self, pts):
        pts = np.asarray(pts, np.float64).reshape(-1, 2) @ self.matrix.T + self.offset
        return [tuple(p) for p in pts.tolist()]

    def polygon(self, pts, fill):
        self.draw.polygon(self.points(pts), fill=fill)

    def line(self, pts, fill, width):
        self.draw.line(self.points(pts), fill=fill, width=max(1, int(width * self.width_scale)),
                       joint="curve")

    def ellipse(self, cx, cy, rx, ry, fill=None, outline=None, width=1.0):
        unit = _CIRCLE_LARGE if max(rx, ry) > 6 else _CIRCLE_SMALL
        pts = unit * (rx, ry) + (cx, cy)
        if fill is not None:
            self.polygon(pts, fill)
        if outline is not None:
            self.line(np.concatenate([pts, pts[:1]]), outline, width)

    def rectangle(self, x0, y0, x1, y1, fill=None, outline=None, width=1.0):
        pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        if fill is not None:
            self.polygon(pts, fill)
        if outline is not None:
            self.line(pts + pts[:1], outline, width)


def _render(p, rng):
    """Draw one image of identity ``p`` with the per-image randomness of ``rng``."""
    # Per-image nuisance factors, drawn first so the stream does not depend on the identity.
    yaw = float(np.clip(rng.normal(0, 0.4), -1, 1))
    pitch = rng.normal(0, 1.5)
    smile = p["smile"] + rng.normal(0, 1.2)
    mouth_open = rng.uniform() < 0.2
    opening = rng.uniform(2, 6)
    eye_open = float(np.clip(rng.normal(1.0, 0.15), 0.25, 1.2))
    gaze = rng.normal(0, 0.12, 2)
    wears_glasses = p["glasses"] and rng.uniform() > 0.15
    hair_jitter = rng.normal(0, 1.2, 3)
    angle = rng.normal(0, 6)
    scale = rng.uniform(0.9, 1.1)
    squeeze = 1.0 - abs(yaw) * rng.uniform(0.05, 0.18)
    shift = rng.normal(0, 2.5, 2)
    shirt = rng.uniform(20, 230, 3)
    skin = p["skin"] * rng.uniform(0.94, 1.06)
    hair = p["hair_colour"] * rng.uniform(0.9, 1.1)

    img = _background(rng)
    pen = _Pen(img, angle, scale, squeeze, shift)
    shade = skin * 0.78
    cx = IMAGE_SIZE / 2
    cy = p["face_center_y"] + pitch
    fw, fh = p["face_half_width"], p["face_half_height"]
    turn = yaw * 5.0  # how far inner features slide sideways with the turn
    eye_y = p["eye_y"] + pitch

    # neck and shoulders
    pen.rectangle(cx + turn * 0.3 - fw * 0.55, cy + fh * 0.4, cx + turn * 0.3 + fw * 0.55,
                  cy + fh * 1.4, fill=_colour(shade))
    pen.ellipse(cx, cy + fh * 1.75, fw * 1.9, fh * 0.75, fill=_colour(shirt))

    # long / puffy hair behind the head
    style = p["hair_style"]
    if style == "long":
        pen.ellipse(cx, cy + fh * 0.05, fw * 1.22, fh * 1.05, fill=_colour(hair))
        pen.rectangle(cx - fw * 1.22, cy, cx + fw * 1.22, cy + fh * 1.0, fill=_colour(hair))
    elif style == "puffy":
        pen.ellipse(cx, cy - fh * 0.35, fw * 1.35, fh * 0.95, fill=_colour(hair))

    # ears, the far one smaller
    for side in (-1, 1):
        size = p["ear_size"] * (1 - 0.35 * max(0.0, side * yaw))
        pen.ellipse(cx + side * fw * (1 - 0.08 * side * yaw) + turn * 0.2, eye_y + 6,
                    size * 0.55, size, fill=_colour(shade))

    # face outline: superellipse on top, narrowing to the chin below
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    c, sn = np.cos(t), np.sin(t)
    n = p["roundness"]
    upper = sn < 0
    x = np.where(upper, fw * np.sign(c) * np.abs(c) ** (2 / n),
                 fw * c * (1 - (1 - p["chin_width"]) * np.clip(sn, 0, 1) ** 1.6))
    y = np.where(upper, -fh * 0.85 * np.abs(sn) ** (2 / n), fh * sn)
    # the half turning away is foreshortened, the near half widened
    x = np.where(x > 0, x * (1 - 0.12 * yaw), x * (1 + 0.12 * yaw))
    outline = np.stack([cx + x + turn * 0.25, cy + y], 1)
    pen.polygon(outline, fill=_colour(skin))

    if p["freckles"]:
        frng = np.random.default_rng(p["freckle_seed"])
        spots = np.stack(
            [frng.uniform(-20, 20, 25) + cx + turn, frng.uniform(60, 80, 25) + pitch], 1
        )
        pen.draw.point(pen.points(spots), fill=_colour(shade * 0.8))

    # beard (below the nose, inside the jaw)
    nose_tip = eye_y + p["nose_length"]
    mouth_y = nose_tip + p["mouth_gap"] * 0.6 + 4
    mw0 = p["mouth_half_width"]
    beard = p["beard"]
    if beard in ("stubble", "full"):
        jaw = outline[outline[:, 1] > nose_tip - 2]
        pen.polygon(jaw, fill=_colour(hair, 90 if beard == "stubble" else 235))
        if beard == "full":  # cheeks above the mouth stay visible
            pen.ellipse(cx + turn, mouth_y - 5, mw0 + 3, 5, fill=_colour(skin, 200))
    if beard in ("goatee", "full"):
        pen.ellipse(cx + turn, mouth_y + 11, mw0 * 0.55, 8, fill=_colour(hair, 240))
    if beard in ("moustache", "full", "goatee"):
        pen.polygon([(cx + turn - mw0 - 1, mouth_y - 1), (cx + turn, mouth_y - 6),
                     (cx + turn + mw0 + 1, mouth_y - 1), (cx + turn, mouth_y - 3)],
                    fill=_colour(hair, 245))

    # hair on top of the head
    top = cy - fh * 0.85
    hairline_y = top + (eye_y - top) * p["hairline"] * 0.55 + hair_jitter[0]
    if style == "receding":
        hairline_y -= 6
    if style != "bald":
        # the upper outline pushed outwards by the hair volume, cut at the hairline
        centre = np.array([cx + turn * 0.25, cy])
        volume = p["hair_volume"] + hair_jitter[1]
        grown = centre + (outline - centre) * (1 + volume / fw, 1 + volume / fh)
        cap = grown[grown[:, 1] <= hairline_y]
        if len(cap) >= 3:
            pen.polygon(cap, fill=_colour(hair))
        if style == "fringe":
            pen.rectangle(cx - fw * 0.8 + turn * 0.3, top, cx + fw * 0.8 + turn * 0.3,
                          hairline_y + 7 + hair_jitter[2], fill=_colour(hair))
        elif style == "side_part":
            side = p["part_side"]
            pen.polygon([(cx + side * fw * 0.2, top), (cx - side * fw * 1.02, hairline_y + 10),
                         (cx - side * fw * 1.02, top)], fill=_colour(hair))
        elif style in ("long", "puffy"):
            for side in (-1, 1):
                pen.rectangle(cx + side * fw * 0.92, top + 8, cx + side * fw * 1.15,
                              cy + fh * 0.6, fill=_colour(hair))

    # eyes and brows
    eye_x = [cx + side * p["eye_half_spacing"] * (1 - 0.15 * side * yaw) + turn
             for side in (-1, 1)]
    for side, ex in zip((-1, 1), eye_x):
        far = max(0.0, side * yaw)
        ey = eye_y + side * p["eye_tilt"] * 3
        ew = p["eye_width"] * (1 - 0.3 * far)
        eh = p["eye_height"] * eye_open
        pen.ellipse(ex, ey, ew, eh, fill=(245, 245, 240, 255))
        iris = p["eye_width"] * p["iris_ratio"] * 0.8
        ix, iy = ex + gaze[0] * ew, ey + gaze[1] * eh
        pen.ellipse(ix, iy, min(iris, ew), min(iris, eh), fill=_colour(p["iris_colour"]))
        pupil = min(iris * 0.45, eh * 0.6)
        pen.ellipse(ix, iy, pupil, pupil, fill=(10, 10, 10, 255))
        lid = np.linspace(np.pi, 2 * np.pi, 9)
        pen.line(np.stack([ex + ew * np.cos(lid), ey + eh * np.sin(lid)], 1),
                 _colour(shade * 0.6), 1.0)
        by = ey - p["brow_gap"]
        half = p["brow_length"] / 2 * (1 - 0.3 * far)
        bx = ex + side * 1.5
        tilt = p["brow_tilt"] * half * side
        pen.line([(bx - half, by + tilt), (bx, by - p["brow_arch"]), (bx + half, by - tilt)],
                 _colour(hair * 0.8), p["brow_thickness"])

    # nose
    nx = cx + turn * 1.5
    nw = p["nose_width"] / 2
    top_y = eye_y + 3
    if p["nose_style"] == 0:
        pen.polygon([(nx, top_y), (nx - nw, nose_tip), (nx + nw, nose_tip)],
                    fill=_colour(shade, 150))
    elif p["nose_style"] == 1:
        pen.line([(nx - yaw * 2, top_y), (nx, nose_tip)], _colour(shade * 0.8), 2.0)
        pen.ellipse(nx, nose_tip - 1, nw, 3, fill=_colour(shade, 200))
    else:
        pen.line([(nx, top_y), (nx - nw * 0.4, nose_tip), (nx + nw * 0.6, nose_tip)],
                 _colour(shade * 0.7), 1.5)
    for side in (-1, 1):
        pen.ellipse(nx + side * nw * 0.55, nose_tip, 1.3, 1.0, fill=_colour(shade * 0.5))

    # mouth: a lip band bent by the smile, open sometimes
    mw = mw0 * (1 + 0.1 * max(smile, 0) / 4)
    mx = cx + turn * 1.1
    lt = p["lip_thickness"]
    u = np.linspace(-1, 1, 9)
    bend = 1 - u * u
    upper_lip = np.stack([mx + mw * u, mouth_y - smile * bend], 1)
    lower_lip = np.stack([mx + mw * u, mouth_y - smile * bend + lt * bend + 0.5], 1)[::-1]
    lips = _colour(p["lip_colour"])
    if mouth_open:
        lower_lip[:, 1] += opening * bend[::-1]
        pen.polygon(np.concatenate([upper_lip, lower_lip]), fill=(60, 20, 25, 255))
        pen.line(upper_lip, lips, lt * 0.6)
        pen.line(lower_lip, lips, lt * 0.6)
    else:
        pen.polygon(np.concatenate([upper_lip, lower_lip]), fill=lips)
        pen.line(upper_lip, _colour(p["lip_colour"] * 0.6), 1.0)

    if p["mole"] is not None:
        mole_x, mole_y, mole_r = p["mole"]
        pen.ellipse(cx + mole_x + turn, mole_y + pitch, mole_r, mole_r, fill=(50, 30, 25, 255))

    if wears_glasses:
        frame = _colour(p["glasses_colour"])
        r = p["eye_width"] + 3
        lens = (15, 15, 20, 225) if p["glasses_dark"] else None
        for side, ex in zip((-1, 1), eye_x):
            rx = r * (1 - 0.3 * max(0.0, side * yaw))
            if p["glasses_round"]:
                pen.ellipse(ex, eye_y, rx, r * 0.75, fill=lens, outline=frame, width=1.5)
            else:
                pen.rectangle(ex - rx, eye_y - r * 0.75, ex + rx, eye_y + r * 0.75, fill=lens,
                              outline=frame, width=1.5)
        pen.line([(eye_x[0] + r, eye_y), (eye_x[1] - r, eye_y)], frame, 1.5)

    img = img.reduce(_SUPERSAMPLE)
    if rng.uniform() < 0.3:
        img = _occlude(img, rng)
    blur = rng.uniform(0, 1.3)
    if blur > 0.35:
        img = img.filter(ImageFilter.BoxBlur(blur))

    pixels = np.asarray(img, np.float32)
    # lighting: contrast about the mean, then gain x a linear gradient in a random direction x
    # a colour cast, all folded into one per-pixel multiplier
    gain = rng.uniform(0.65, 1.25)
    contrast = rng.uniform(0.7, 1.2)
    direction = rng.uniform(0, 2 * math.pi)
    strength = rng.uniform(0, 0.35)
    cast = rng.uniform(0.92, 1.08, 3).astype(np.float32)
    slope_x = np.float32(gain * strength * math.cos(direction))
    slope_y = np.float32(gain * strength * math.sin(direction))
    gradient = np.float32(gain) + slope_x * _RAMP[None, :] + slope_y * _RAMP[:, None]
    multiplier = gradient[..., None] * cast
    pixels = pixels * np.float32(contrast) + np.float32((1 - contrast) * pixels.mean() + 0.5)
    pixels *= multiplier
    # sensor noise: a window of a fixed Gaussian field (drawing fresh normals costs more than
    # the rest of the image)
    sigma = rng.uniform(0, 9)
    y0, x0 = rng.integers(0, IMAGE_SIZE, 2)
    pixels += _noise_field()[y0:y0 + IMAGE_SIZE, x0:x0 + IMAGE_SIZE] * np.float32(sigma)
    np.clip(pixels, 0, 255, out=pixels)
    return pixels.astype(np.uint8)


_RAMP = np.linspace(-1, 1, IMAGE_SIZE, dtype=np.float32)
_NOISE = []


def _noise_field():
    if not _NOISE:
        rng = np.random.default_rng(20240601)
        _NOISE.append(rng.standard_normal((2 * IMAGE_SIZE, 2 * IMAGE_SIZE, 3), dtype=np.float32))
    return _NOISE[0]


def _background(rng):
    """A plain, two-tone or cluttered background, independent of identity."""
    base = rng.uniform(0, 255, 3)
    bg = Image.new("RGB", (_CANVAS, _CANVAS), _colour(base))
    draw = ImageDraw.Draw(bg)
    kind = rng.integers(3)
    if kind == 1:
        other = rng.uniform(0, 255, 3)
        cut = rng.uniform(0.2, 0.8) * _CANVAS
        draw.rectangle([0, 0, cut, _CANVAS], fill=_colour(other))
    elif kind == 2:
        for _ in range(5):
            x0, y0 = rng.uniform(0, _CANVAS, 2)
            w, h = rng.uniform(10, 90, 2)
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=_colour(rng.uniform(0, 255, 3)))
    return bg


def _occlude(img, rng):
    """Cover a random rectangle (10%..25% of the image area) with a flat or noisy patch."""
    area = rng.uniform(0.1, 0.25) * IMAGE_SIZE * IMAGE_SIZE
    aspect = rng.uniform(0.5, 2.0)
    w = int(min(IMAGE_SIZE, math.sqrt(area * aspect)))
    h = int(min(IMAGE_SIZE, area / max(w, 1)))
    x0 = int(rng.integers(0, IMAGE_SIZE - w + 1))
    y0 = int(rng.integers(0, IMAGE_SIZE - h + 1))
    pixels = np.array(img)
    if rng.uniform() < 0.5:
        pixels[y0:y0 + h, x0:x0 + w] = rng.uniform(0, 255, 3).astype(np.uint8)
    else:
        pixels[y0:y0 + h, x0:x0 + w] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(pixels)
