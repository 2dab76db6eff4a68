"""Training loop pieces: recipes to ``model.fit``, schedules, strategies, callbacks."""

from kerasface.training.gradient_reversal_schedule import GradientReversalSchedule
from kerasface.training.lazy_sgd import LazySGD
from kerasface.training.lr_schedule import build_lr_schedule
from kerasface.training.multiplied_decay_sgd import MultipliedDecaySGD
from kerasface.training.progressive_schedule import ProgressiveSchedule, ProgressiveStage
from kerasface.training.strategy import make_strategy
from kerasface.training.teacher_embeddings import TeacherEmbeddings, precompute_teacher_embeddings
from kerasface.training.teacher_filter import TeacherFilter, class_centres_from_images
from kerasface.training.throughput_logger import ThroughputLogger
from kerasface.training.train_model import TrainResult, build_face_recognizer, open_training_source, train
from kerasface.training.verification_callback import VerificationCallback

__all__ = [
    "GradientReversalSchedule",
    "LazySGD",
    "MultipliedDecaySGD",
    "ProgressiveSchedule",
    "ProgressiveStage",
    "TeacherEmbeddings",
    "TeacherFilter",
    "ThroughputLogger",
    "TrainResult",
    "VerificationCallback",
    "build_face_recognizer",
    "build_lr_schedule",
    "class_centres_from_images",
    "make_strategy",
    "open_training_source",
    "precompute_teacher_embeddings",
    "train",
]
