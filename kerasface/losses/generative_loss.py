"""LATSE's GLoss: L1 + (1 - SSIM) / 2 between a decoded face and its identity's mean image."""

import keras
from keras import ops

from kerasface.losses.structural_similarity_loss import _check_images, structural_similarity


@keras.saving.register_keras_serializable(package="kerasface")
class GenerativeLoss(keras.losses.Loss):
    """GLoss = l1_weight * mean|generated - target| + ssim_weight * (1 - SSIM) / 2, per image.

    LATSE (Huang et al., ICML 2020), eq. 13-14, with both weights 1 as in the paper. The L1
    term pushes information into the embedding; the SSIM term makes the decoded face look
    like the identity's (momentum-mean) face. Images are compared in ``[0, max_val]``.

    Args:
        l1_weight: weight of the mean absolute pixel error.
        ssim_weight: weight of SimLoss = (1 - SSIM) / 2.
        max_val: the dynamic range of the pixels (1.0 for images in [0, 1]).
        filter_size: side of SSIM's Gaussian window.
        **kwargs: passed to ``keras.losses.Loss`` (``reduction``, ``name``).

    Call arguments:
        y_true: (B, H, W, C) target images (the identity mean images).
        y_pred: (B, H, W, C) decoded images.

    Returns:
        The reduced loss (per-image values with ``reduction=None``).
    """

    def __init__(self, l1_weight=1.0, ssim_weight=1.0, max_val=1.0, filter_size=11, name="generative_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        for key, value in (("l1_weight", l1_weight), ("ssim_weight", ssim_weight)):
            if not value >= 0:
                raise ValueError(f"`{key}` must be >= 0, got {value}")
        if not max_val > 0:
            raise ValueError(f"`max_val` must be > 0, got {max_val}")
        self.l1_weight = float(l1_weight)
        self.ssim_weight = float(ssim_weight)
        self.max_val = float(max_val)
        self.filter_size = int(filter_size)

    def call(self, y_true, y_pred):
        _check_images(y_true, y_pred, self.filter_size)
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        l1 = ops.mean(ops.abs(y_pred - y_true), axis=(1, 2, 3))
        if self.ssim_weight == 0.0:
            return self.l1_weight * l1
        ssim = structural_similarity(y_true, y_pred, self.max_val, self.filter_size)
        return self.l1_weight * l1 + self.ssim_weight * (1.0 - ssim) / 2.0

    def get_config(self):
        return {
            **super().get_config(),
            "l1_weight": self.l1_weight,
            "ssim_weight": self.ssim_weight,
            "max_val": self.max_val,
            "filter_size": self.filter_size,
        }
