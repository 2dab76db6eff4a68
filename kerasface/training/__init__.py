"""Training loop pieces: recipes to ``model.fit``, schedules, strategies, callbacks."""

from kerasface.training.lr_schedule import build_lr_schedule
from kerasface.training.strategy import make_strategy
from kerasface.training.throughput_logger import ThroughputLogger
from kerasface.training.train_model import TrainResult, build_face_recognizer, train
from kerasface.training.verification_callback import VerificationCallback

__all__ = [
    "ThroughputLogger",
    "TrainResult",
    "VerificationCallback",
    "build_face_recognizer",
    "build_lr_schedule",
    "make_strategy",
    "train",
]
