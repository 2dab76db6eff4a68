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
