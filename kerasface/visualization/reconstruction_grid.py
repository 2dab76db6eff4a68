"""LATSE Fig. 1/5-style grid: input faces, their decoded faces and the absolute differences."""

from pathlib import Path

import numpy as np

_LABEL_WIDTH = 110


def reconstruction_grid(inputs, decoded, stage_names):
    """One uint8 RGB image: a row of inputs, then per stage a row of decoded faces and one of |diff|.

    Args:
        inputs: (N, H, W, 3) faces, uint8 or float in [0, 1].
        decoded: one (N, H, W, 3) array per stage (e.g. early / mid / late checkpoint).
        stage_names: a label per stage, written at the left of its rows.

    Returns:
        uint8 (rows x H, label + N x W, 3) image.
    """
    from PIL import Image, ImageDraw

    inputs = _as_uint8(inputs)
    if inputs.ndim != 4 or inputs.shape[-1] != 3:
        raise ValueError(f"`inputs` must be (N, H, W, 3), got shape {inputs.shape}")
    if len(decoded) != len(stage_names):
        raise ValueError(f"got {len(decoded)} decoded stages but {len(stage_names)} names")
    rows = [("input", inputs)]
    for name, images in zip(stage_names, decoded):
        images = _as_uint8(images)
        if images.shape != inputs.shape:
            raise ValueError(f"stage {name!r}: decoded shape {images.shape} differs from the inputs' {inputs.shape}")
        difference = np.abs(images.astype("int16") - inputs.astype("int16")).astype("uint8")
        rows += [(f"{name}\ndecoded", images), (f"{name}\n|difference|", difference)]
    n, h, w, _ = inputs.shape
    canvas = np.full((len(rows) * h, _LABEL_WIDTH + n * w, 3), 255, "uint8")
    for r, (_, images) in enumerate(rows):
        for i in range(n):
            canvas[r * h:(r + 1) * h, _LABEL_WIDTH + i * w:_LABEL_WIDTH + (i + 1) * w] = images[i]
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for r, (label, _) in enumerate(rows):
        draw.multiline_text((6, r * h + h // 2 - 12), label, fill=(0, 0, 0))
    return np.asarray(picture)


def save_reconstruction_grid(path, inputs, decoded, stage_names):
    """Write :func:`reconstruction_grid` to the PNG ``path``; returns the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(reconstruction_grid(inputs, decoded, stage_names)).save(path)
    return path


def _as_uint8(images):
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return np.clip(np.round(images.astype("float32") * 255.0), 0, 255).astype("uint8")
