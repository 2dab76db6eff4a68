"""LATSE's SimLoss: (1 - SSIM) / 2 between a generated face and its target image."""

import keras
import numpy as np
from keras import ops


# Registered: compiled models log it as a metric, and their .keras files name it.
@keras.saving.register_keras_serializable(package="kerasface")
def structural_similarity(y_true, y_pred, max_val=1.0, filter_size=11, sigma=1.5):
    """Per-image SSIM (Wang et al. 2004) of two (B, H, W, C) batches, float32 (B,).

    The same quantity as ``tf.image.ssim`` (Gaussian window ``filter_size`` with ``sigma``,
    K1 = 0.01, K2 = 0.03, valid positions only, mean over pixels then channels; the tests hold
    the two within 1e-5), computed differently: the separable Gaussian filter is two matrix
    products with banded (H', H) and (W', W) matrices. ``tf.image.ssim`` filters with an
    11 x 11 depthwise convolution, whose backward pass took 16 s per 64-image 112 x 112 batch
    on 2 CPU cores (docs/latse.md); matrix products are fast on every device.
    """
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    height, width = int(y_pred.shape[1]), int(y_pred.shape[2])
    rows = ops.convert_to_tensor(_gaussian_band(height, filter_size, sigma))
    cols = ops.convert_to_tensor(_gaussian_band(width, filter_size, sigma))

    def blur(x):
        return ops.einsum("qw,bpwc->bpqc", cols, ops.einsum("ph,bhwc->bpwc", rows, x))

    c1 = (0.01 * max_val) ** 2
    c2 = (0.03 * max_val) ** 2
    mean_true, mean_pred = blur(y_true), blur(y_pred)
    both = 2.0 * mean_true * mean_pred
    squares = ops.square(mean_true) + ops.square(mean_pred)
    luminance = (both + c1) / (squares + c1)
    # 2 cov / (var + var) from the blurred products, as tf.image.ssim does.
    structure = (2.0 * blur(y_true * y_pred) - both + c2) / (blur(ops.square(y_true) + ops.square(y_pred)) - squares + c2)
    return ops.mean(luminance * structure, axis=(1, 2, 3))


def _gaussian_band(size, filter_size, sigma):
    """(size - filter_size + 1, size) float32: row i is the normalised 1-D Gaussian at i..i+filter_size-1."""
    taps = np.arange(filter_size, dtype="float64") - (filter_size - 1) / 2.0
    gaussian = np.exp(-np.square(taps) / (2.0 * sigma**2))
    gaussian /= gaussian.sum()
    band = np.zeros((size - filter_size + 1, size), "float32")
    for i in range(band.shape[0]):
        band[i, i:i + filter_size] = gaussian
    return band


@keras.saving.register_keras_serializable(package="kerasface")
class StructuralSimilarityLoss(keras.losses.Loss):
    """SimLoss = (1 - SSIM(generated, target)) / 2, in [0, 1]; 0 for identical images.

    LATSE (Huang et al., ICML 2020), eq. 13. Images are compared in ``[0, max_val]``
    (kerasface: [0, 1]). SSIM is :func:`structural_similarity`, equal to ``tf.image.ssim``.

    Args:
        max_val: the dynamic range of the pixels (1.0 for images in [0, 1]).
        filter_size: side of SSIM's Gaussian window; images must be at least this large.
        **kwargs: passed to ``keras.losses.Loss`` (``reduction``, ``name``).

    Call arguments:
        y_true: (B, H, W, C) target images.
        y_pred: (B, H, W, C) generated images.

    Returns:
        The reduced loss (per-image values with ``reduction=None``).
    """

    def __init__(self, max_val=1.0, filter_size=11, name="ssim_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if not max_val > 0:
            raise ValueError(f"`max_val` must be > 0, got {max_val}")
        if int(filter_size) < 1:
            raise ValueError(f"`filter_size` must be >= 1, got {filter_size}")
        self.max_val = float(max_val)
        self.filter_size = int(filter_size)

    def call(self, y_true, y_pred):
        _check_images(y_true, y_pred, self.filter_size)
        return (1.0 - structural_similarity(y_true, y_pred, self.max_val, self.filter_size)) / 2.0

    def get_config(self):
        return {**super().get_config(), "max_val": self.max_val, "filter_size": self.filter_size}


def _check_images(y_true, y_pred, filter_size):
    if len(y_pred.shape) != 4 or tuple(y_true.shape[1:]) != tuple(y_pred.shape[1:]):
        raise ValueError(
            f"expected two (B, H, W, C) image batches of one shape, got {tuple(y_true.shape)} and {tuple(y_pred.shape)}"
        )
    if any(size is not None and size < filter_size for size in y_pred.shape[1:3]):
        raise ValueError(f"images of {tuple(y_pred.shape[1:3])} are smaller than the SSIM window {filter_size}")
