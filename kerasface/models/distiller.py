"""A student embedding trained to copy a teacher's embeddings, optionally with a margin head."""

import keras
import tensorflow as tf
from keras import ops

from kerasface.losses.embedding_distillation_loss import EmbeddingDistillationLoss, teacher_cosine
from kerasface.models.face_recognizer import FaceRecognizer, _normalized


@keras.saving.register_keras_serializable(package="kerasface")
class Distiller(FaceRecognizer):
    """A student backbone that learns a teacher's embedding of each face (feature distillation).

    AirFace (Li et al., 2019, Sec. 3.3) guides its 128-d MobileFaceNet with a large model's
    features; LATSE (Huang et al., ICML 2020) uses a teacher to decide what the student
    learns from. Here ``fit`` minimises ``feature_weight * EmbeddingDistillationLoss(student,
    teacher)`` (cosine or L2 between the unit embeddings, optionally a batch similarity
    term), plus ``margin_weight`` x the margin head's cross-entropy when there is a head.

    The teacher's embeddings come either with the batch, precomputed once
    (``{"images": x, "teacher": t}`` batches, e.g. from
    :func:`kerasface.training.precompute_teacher_embeddings` through
    ``FacePipeline(record_features={"teacher": ...})``), with ``t`` of shape (B, D_t), or
    (B, 2, D_t) holding the embedding of each face and of its mirror image; or from a teacher
    set on :attr:`teacher` (a Keras embedding model, run in the graph, or a callable on
    normalised numpy images such as :class:`kerasface.evaluation.PeerModel`, run through
    ``tf.numpy_function``), computed on every batch. The horizontal flip is drawn here, in the
    step (``flip``), so the mirrored face meets the mirrored face's teacher embedding; turn
    the pipeline's own flip off. When the teacher's size D_t differs from the student's, a
    bias-free linear ``projection`` (trained with the student, FitNets' regressor) maps the
    student into the teacher's space for the loss only. The teacher is never saved with the
    model, and :attr:`embedding_model` is the student alone.

    Compile with :meth:`compile_losses`; it logs ``feature_loss`` and ``teacher_cosine``
    (1 is a perfect copy), and with a head ``identity_loss`` and ``accuracy``.

    Args:
        backbone: the student, images (B, 112, 112, 3) -> (B, D).
        head: a margin head for the labels, or None (pure feature distillation).
        teacher_size: the teacher's embedding size D_t (None: the student's D, no projection).
        flip: probability of mirroring each training face, in [0, 1].
        seed: seed of the flips (drawn from the seed and the optimizer step, so a resumed
            run draws the same ones).
        **kwargs: passed to ``keras.Model``.

    Call arguments:
        inputs: ``images`` for L2-normalised student embeddings, or a dict with ``"images"``
            (and ``"labels"`` for a head) for the training outputs ``{"feature": student
            features in the teacher's space, "identity": logits}``.
        training: forwarded to every part.

    Returns:
        (B, D) float32 embeddings, or the dict of float32 training outputs.
    """

    def __init__(self, backbone, head=None, teacher_size=None, flip=0.5, seed=0, **kwargs):
        super().__init__(backbone, head, **kwargs)
        if teacher_size is not None and (isinstance(teacher_size, bool) or not isinstance(teacher_size, int)
                                         or teacher_size < 1):
            raise ValueError(f"`teacher_size` must be a positive int or None, got {teacher_size!r}")
        if not 0.0 <= flip <= 1.0:
            raise ValueError(f"`flip` must be in [0, 1], got {flip}")
        self.teacher_size = teacher_size
        self.flip = float(flip)
        self.seed = int(seed)
        self.projection = None
        self._teacher = None

    @property
    def teacher(self):
        """The teacher run on every batch (None: batches carry the teacher's embeddings)."""
        return self._teacher

    @teacher.setter
    def teacher(self, value):
        if value is not None and not callable(value):
            raise TypeError(f"a teacher must be a Keras model or a callable on images, got {type(value).__name__}")
        if isinstance(value, keras.Model):
            value.trainable = False
        object.__setattr__(self, "_teacher", value)

    def __setattr__(self, name, value):
        if name == "teacher":
            # Through the property, past Keras' tracking: the teacher is not a part of the student.
            return object.__setattr__(self, name, value)
        return super().__setattr__(name, value)

    def build(self, input_shape):
        images_shape = input_shape["images"] if isinstance(input_shape, dict) else input_shape
        if not self.backbone.built:
            self.backbone.build(images_shape)
        embedding_shape = self.backbone.compute_output_shape(images_shape)
        if self.head is not None and not self.head.built:
            self.head.build([embedding_shape, (images_shape[0],)])
        student_size = int(embedding_shape[-1])
        self._feature_size = self.teacher_size or student_size
        if self.teacher_size is not None and self.teacher_size != student_size and self.projection is None:
            self.projection = keras.layers.Dense(self.teacher_size, use_bias=False, dtype="float32", name="projection")
            self.projection.build(embedding_shape)
        self.built = True

    def call(self, inputs, training=None):
        if not isinstance(inputs, dict):
            return super().call(inputs, training=training)
        embeddings = self.backbone(_normalized(inputs["images"]), training=training)
        features = ops.cast(embeddings, "float32")
        if self.projection is not None:
            features = self.projection(features)
        outputs = {"feature": features}
        if self.head is not None:
            if "labels" not in inputs:
                raise ValueError(f"{self.name} has a margin head: its training inputs need 'labels'")
            outputs["identity"] = self.head([embeddings, inputs["labels"]], training=training)
        return outputs

    def compile_losses(self, optimizer, feature_loss="cosine", feature_weight=1.0, margin_weight=1.0,
                       similarity_weight=0.0, **kwargs):
        """``compile`` with the feature loss and, with a head, its cross-entropy.

        Args:
            optimizer: the optimizer.
            feature_loss: "cosine" or "l2" (:class:`EmbeddingDistillationLoss`).
            feature_weight: weight of the feature loss, >= 0.
            margin_weight: weight of the head's cross-entropy, >= 0 (ignored without a head).
            similarity_weight: weight of the batch similarity-matrix term, >= 0.
            **kwargs: passed to ``compile`` (e.g. ``jit_compile``).
        """
        for key, value in (("feature_weight", feature_weight), ("margin_weight", margin_weight)):
            if not value >= 0:
                raise ValueError(f"`{key}` must be >= 0, got {value}")
        loss = {"feature": EmbeddingDistillationLoss(feature_loss, similarity_weight=similarity_weight)}
        weights = {"feature": float(feature_weight)}
        metrics = {"feature": [keras.metrics.MeanMetricWrapper(teacher_cosine, name="teacher_cosine")]}
        if self.head is not None:
            loss["identity"] = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            weights["identity"] = float(margin_weight)
            metrics["identity"] = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        return self.compile(optimizer=optimizer, loss=loss, loss_weights=weights, metrics=metrics, **kwargs)

    def train_step(self, data):
        if _has_targets(data):
            # Already (inputs, {"feature": ..., "identity": ...}): a plain Keras step.
            return keras.Model.train_step(self, data)
        inputs, targets, weights = self._distillation_batch(data, training=True)
        return keras.Model.train_step(self, (inputs, targets) if weights is None else (inputs, targets, weights))

    def test_step(self, data):
        if _has_targets(data):
            return keras.Model.test_step(self, data)
        inputs, targets, weights = self._distillation_batch(data, training=False)
        return keras.Model.test_step(self, (inputs, targets) if weights is None else (inputs, targets, weights))

    def _distillation_batch(self, data, training):
        x, labels, weights = keras.utils.unpack_x_y_sample_weight(data)
        x = dict(x) if isinstance(x, dict) else {"images": x}
        images, given = x["images"], x.get("teacher")
        mirrored = None
        if training and self.flip > 0:
            mirrored = self._draw_flips(ops.shape(images)[0])
            images = ops.where(ops.reshape(mirrored, (-1, 1, 1, 1)), ops.flip(images, axis=2), images)
        if given is not None:
            target = _teacher_view(given, mirrored)
        elif self._teacher is not None:
            target = self._run_teacher(images)
        else:
            raise ValueError(
                f"{self.name}: no teacher embeddings: batches need {{'images', 'teacher'}} or set `teacher`"
            )
        expected = getattr(self, "_feature_size", self.teacher_size)
        if expected is not None and target.shape[-1] is not None and target.shape[-1] != expected:
            what = "`teacher_size` is" if self.teacher_size is not None else "the student (no `teacher_size`) gives"
            raise ValueError(f"the teacher gives {target.shape[-1]}-d embeddings, {what} {expected}")
        inputs = {"images": images}
        targets = {"feature": ops.stop_gradient(ops.cast(target, "float32"))}
        if self.head is not None:
            if labels is None:
                raise ValueError(f"{self.name} has a margin head: it needs (images, labels) batches")
            inputs["labels"] = labels
            targets["identity"] = labels
        return inputs, targets, weights

    def _draw_flips(self, batch_size):
        # Stateless: the same seed and step give the same flips, also after a resume.
        step = ops.cast(self.optimizer.iterations, "int64") if self.optimizer is not None else 0
        replica = tf.distribute.get_replica_context()
        replica_id = replica.replica_id_in_sync_group if replica is not None else 0
        seed = tf.stack([tf.constant(self.seed, tf.int64), step * 1024 + ops.cast(replica_id, "int64")])
        return tf.random.stateless_uniform([batch_size], seed) < self.flip

    def _run_teacher(self, images):
        from kerasface.training.teacher_filter import teacher_embeddings_in_graph

        return teacher_embeddings_in_graph(self._teacher, images, getattr(self, "_feature_size", self.teacher_size))

    def get_config(self):
        return {**super().get_config(), "teacher_size": self.teacher_size, "flip": self.flip, "seed": self.seed}


def _has_targets(data):
    _, y, _ = keras.utils.unpack_x_y_sample_weight(data)
    return isinstance(y, dict) and "feature" in y


def _teacher_view(given, mirrored):
    """The teacher embedding of each face as fed: (B, D), or the right view of (B, 2, D)."""
    if len(given.shape) == 2:
        if mirrored is not None:
            raise ValueError(
                "batches carry one teacher embedding per face, so a mirrored face would meet the "
                "unmirrored face's target: give (B, 2, D) embeddings with the mirror view, or flip=0"
            )
        return given
    if len(given.shape) != 3 or given.shape[1] != 2:
        raise ValueError(f"teacher embeddings must be (B, D) or (B, 2, D), got shape {tuple(given.shape)}")
    if mirrored is None:
        return given[:, 0]
    return ops.where(ops.reshape(mirrored, (-1, 1)), given[:, 1], given[:, 0])
