"""Face-verification evaluation: pairs lists, .bin files, k-fold accuracy, ROC, TAR@FAR."""

from kerasface.evaluation.all_pair_scores import all_pair_scores, pair_from_index
from kerasface.evaluation.bin_file import (
    RestrictedUnpickler,
    decode_bin_images,
    load_bin,
    write_bin,
)
from kerasface.evaluation.cmc_plot import plot_cmc
from kerasface.evaluation.embed_images import decode_images, embed_images
from kerasface.evaluation.embedding_cache import EmbeddingCache
from kerasface.evaluation.frame_clustering import aggregate_set, cluster_frames, largest_cluster
from kerasface.evaluation.identification import (
    IdentificationResult,
    closed_set_identification,
    identify_folder,
    megaface_identification,
    split_gallery_probe,
    true_match_ranks,
)
from kerasface.evaluation.pair_generation import GeneratedPairs, folder_to_bin, make_pairs
from kerasface.evaluation.pairs_file import PairsFile, contiguous_folds, read_pairs, write_pairs
from kerasface.evaluation.roc_plot import plot_roc
from kerasface.evaluation.set_evaluation import SetEvaluation, evaluate_set
from kerasface.evaluation.set_pairs import SetPairs, read_set_pairs
from kerasface.evaluation.set_verification import (
    SetVerificationResult,
    evaluate_set_embeddings,
    evaluate_set_pairs,
)
from kerasface.evaluation.union_find import UnionFind
from kerasface.evaluation.verification import (
    DEFAULT_FARS,
    FoldAccuracy,
    OperatingPoint,
    VerificationResult,
    evaluate_scores,
    roc_auc,
    roc_curve,
    tar_at_far,
    thin_roc,
    verification_accuracy,
    verify_pairs,
)
from kerasface.evaluation.verification_set import VerificationSet

__all__ = [
    "EmbeddingCache",
    "SetPairs",
    "SetVerificationResult",
    "UnionFind",
    "aggregate_set",
    "cluster_frames",
    "evaluate_set_embeddings",
    "evaluate_set_pairs",
    "largest_cluster",
    "read_set_pairs",
    "IdentificationResult",
    "all_pair_scores",
    "closed_set_identification",
    "identify_folder",
    "megaface_identification",
    "pair_from_index",
    "plot_cmc",
    "split_gallery_probe",
    "thin_roc",
    "true_match_ranks",
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
