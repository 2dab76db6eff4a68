"""Losses beyond the heads' softmax: class-balanced cross-entropy, LFRC's intra/inter-class terms,
LATSE's generative loss (L1 + SSIM), embedding distillation."""

from kerasface.losses.class_balanced_crossentropy import (
    ClassBalancedCrossentropy,
    class_balanced_weights,
    class_counts,
)
from kerasface.losses.embedding_distillation_loss import EmbeddingDistillationLoss, teacher_cosine
from kerasface.losses.generative_loss import GenerativeLoss
from kerasface.losses.inter_class_loss import batch_inter_class_loss, inter_class_loss, nearest_other_center
from kerasface.losses.intra_class_loss import intra_class_loss
from kerasface.losses.structural_similarity_loss import StructuralSimilarityLoss, structural_similarity

__all__ = [
    "ClassBalancedCrossentropy",
    "EmbeddingDistillationLoss",
    "GenerativeLoss",
    "StructuralSimilarityLoss",
    "batch_inter_class_loss",
    "class_balanced_weights",
    "class_counts",
    "inter_class_loss",
    "intra_class_loss",
    "nearest_other_center",
    "structural_similarity",
    "teacher_cosine",
]
