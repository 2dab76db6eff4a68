"""Cosine distance between embeddings: the distillation loss of quantisation-aware fine-tuning."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasface")
def cosine_distance(y_true, y_pred):
    """``1 - cos(y_true, y_pred)`` per row: 0 when the student's embedding points where the teacher's does.

    Args:
        y_true: (B, D) teacher embeddings.
        y_pred: (B, D) student embeddings.

    Returns:
        (B,) float32 distances in [0, 2].
    """
    y_true = ops.normalize(ops.cast(y_true, "float32"), axis=-1)
    y_pred = ops.normalize(ops.cast(y_pred, "float32"), axis=-1)
    return 1.0 - ops.sum(y_true * y_pred, axis=-1)
