"""Losses beyond the heads' softmax: class-balanced cross-entropy, LFRC's intra/inter-class terms."""

from kerasface.losses.class_balanced_crossentropy import (
    ClassBalancedCrossentropy,
    class_balanced_weights,
    class_counts,
)
from kerasface.losses.inter_class_loss import batch_inter_class_loss, inter_class_loss, nearest_other_center
from kerasface.losses.intra_class_loss import intra_class_loss

__all__ = [
    "ClassBalancedCrossentropy",
    "batch_inter_class_loss",
    "class_balanced_weights",
    "class_counts",
    "inter_class_loss",
    "intra_class_loss",
    "nearest_other_center",
]
