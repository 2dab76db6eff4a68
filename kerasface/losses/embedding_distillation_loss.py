"""Feature distillation: a student embedding pulled towards a teacher's embedding of the same face."""

import keras
from keras import ops

FEATURE_LOSSES = ("cosine", "l2")


@keras.saving.register_keras_serializable(package="kerasface")
class EmbeddingDistillationLoss(keras.losses.Loss):
    """Per-face distance between L2-normalised student and teacher embeddings.

    ``feature="cosine"``: ``1 - cos(s, t)``, the feature term of embedding distillation as
    AirFace (Sec. 3.3, "large models guide the feature distribution") and LATSE apply it;
    ``"l2"``: ``||s - t||^2`` between the unit vectors, i.e. ``2 - 2 cos``, the squared
    Euclidean loss of Luo et al. (AAAI 2016, AirFace's ref. [13]): the same optimum with twice
    the gradient. Both embeddings are normalised here, so a student may emit raw features.
    ``similarity_weight > 0`` adds a relational term: for face i, the mean over the batch of
    ``(s_i . s_j - t_i . t_j)^2``, which asks the student to copy the teacher's
    similarity structure, not only its points (as relational knowledge distillation does).

    Args:
        feature: "cosine" or "l2".
        similarity_weight: weight of the batch similarity-matrix term, >= 0.
        **kwargs: passed to ``keras.losses.Loss`` (``reduction``, ``name``).

    Call arguments:
        y_true: (B, D) teacher embeddings (normalised or not).
        y_pred: (B, D) student embeddings, the same D (project the student first when the
            sizes differ; :class:`kerasface.models.Distiller` does).

    Returns:
        The reduced loss (per-face values with ``reduction=None``).
    """

    def __init__(self, feature="cosine", similarity_weight=0.0, name="embedding_distillation_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if feature not in FEATURE_LOSSES:
            raise ValueError(f"`feature` must be one of {FEATURE_LOSSES}, got {feature!r}")
        if not similarity_weight >= 0:
            raise ValueError(f"`similarity_weight` must be >= 0, got {similarity_weight}")
        self.feature = feature
        self.similarity_weight = float(similarity_weight)

    def call(self, y_true, y_pred):
        teacher = _unit(ops.stop_gradient(y_true))
        student = _unit(y_pred)
        cosine = ops.sum(student * teacher, axis=-1)
        loss = 1.0 - cosine if self.feature == "cosine" else 2.0 - 2.0 * cosine
        if self.similarity_weight > 0:
            gap = ops.matmul(student, ops.transpose(student)) - ops.matmul(teacher, ops.transpose(teacher))
            loss = loss + self.similarity_weight * ops.mean(ops.square(gap), axis=-1)
        return loss

    def get_config(self):
        return {**super().get_config(), "feature": self.feature, "similarity_weight": self.similarity_weight}


@keras.saving.register_keras_serializable(package="kerasface")
def teacher_cosine(y_true, y_pred):
    """Per-face cosine between teacher and student embeddings (a metric: 1 is a perfect copy)."""
    return ops.sum(_unit(y_true) * _unit(y_pred), axis=-1)


def _unit(x):
    x = ops.cast(x, "float32")
    return x / ops.maximum(ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True)), 1e-12)
