"""Face-verification evaluation: pairs lists, .bin files, k-fold accuracy, ROC, TAR@FAR."""

from kerasface.evaluation.bin_file import (
    RestrictedUnpickler,
    decode_bin_images,
    load_bin,
    write_bin,
)
from kerasface.evaluation.embed_images import decode_images, embed_images
from kerasface.evaluation.pairs_file import PairsFile, contiguous_folds, read_pairs
from kerasface.evaluation.roc_plot import plot_roc
from kerasface.evaluation.verification import (
    DEFAULT_FARS,
    FoldAccuracy,
    OperatingPoint,
    VerificationResult,
    evaluate_scores,
    roc_auc,
    roc_curve,
    tar_at_far,
    verification_accuracy,
    verify_pairs,
)

__all__ = [
    "DEFAULT_FARS",
    "FoldAccuracy",
    "OperatingPoint",
    "PairsFile",
    "RestrictedUnpickler",
    "VerificationResult",
    "contiguous_folds",
    "decode_bin_images",
    "decode_images",
    "embed_images",
    "evaluate_scores",
    "load_bin",
    "plot_roc",
    "read_pairs",
    "roc_auc",
    "roc_curve",
    "tar_at_far",
    "verification_accuracy",
    "verify_pairs",
    "write_bin",
]
