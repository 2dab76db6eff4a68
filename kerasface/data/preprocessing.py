"""Pixel normalisation shared by training, evaluation and export (insightface convention)."""

import tensorflow as tf

IMAGE_SIZE = 112
PIXEL_MEAN = 127.5
PIXEL_SCALE = 128.0


def normalize_images(images):
    """uint8 or float RGB pixels in [0, 255] -> float32 ``(x - 127.5) / 128``."""
    return (tf.cast(images, tf.float32) - PIXEL_MEAN) / PIXEL_SCALE


def normalize_numpy(images):
    """NumPy twin of :func:`normalize_images` for runtimes without TensorFlow."""
    import numpy as np

    return (np.asarray(images, dtype=np.float32) - PIXEL_MEAN) / PIXEL_SCALE


def decode_rgb(data):
    """Encoded image bytes -> uint8 (H, W, 3) RGB, in-graph.

    JPEGs use libjpeg's accurate integer IDCT, as PIL and OpenCV do: TensorFlow's default
    fast IDCT is off by up to ~16 grey levels, so training, evaluation, int8 calibration and
    third-party runtimes would otherwise see different pixels for the same file.
    """
    return tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8),
    )
