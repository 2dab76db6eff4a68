"""Face-verification evaluation: pairs lists, .bin files, k-fold accuracy, ROC, TAR@FAR."""

from kerasface.evaluation.bin_file import (
    RestrictedUnpickler,
    decode_bin_images,
    load_bin,
    write_bin,
)
from kerasface.evaluation.embed_images import decode_images, embed_images
from kerasface.evaluation.pair_generation import GeneratedPairs, folder_to_bin, make_pairs
from kerasface.evaluation.pairs_file import PairsFile, contiguous_folds, read_pairs, write_pairs
from kerasface.evaluation.roc_plot import plot_roc
from kerasface.evaluation.set_evaluation import SetEvaluation, evaluate_set
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
from kerasface.evaluation.verification_set import VerificationSet

__all__ = [
    "DEFAULT_FARS",
    "FoldAccuracy",
    "GeneratedPairs",
    "OperatingPoint",
    "PairsFile",
    "RestrictedUnpickler",
    "SetEvaluation",
    "VerificationResult",
    "VerificationSet",
    "contiguous_folds",
    "decode_bin_images",
    "decode_images",
    "embed_images",
    "evaluate_scores",
    "evaluate_set",
    "folder_to_bin",
    "load_bin",
    "make_pairs",
    "plot_roc",
    "read_pairs",
    "roc_auc",
    "roc_curve",
    "tar_at_far",
    "verification_accuracy",
    "verify_pairs",
    "write_pairs",
    "write_bin",
]
