"""FaceRecognizer with LATSE's generative decoder and teacher-student gradient filter."""

import keras
from keras import ops

from kerasface.heads.margin_head import _is_pair
from kerasface.losses.generative_loss import GenerativeLoss
from kerasface.losses.structural_similarity_loss import structural_similarity
from kerasface.models.face_recognizer import FaceRecognizer, _normalized

# How a teacher filter blocks a sample: its gradient into the embedding, or the whole sample.
FILTER_MODES = ("embedding", "sample")


@keras.saving.register_keras_serializable(package="kerasface")
class LATSERecognizer(FaceRecognizer):
    """Student encoder, margin head and generative decoder, trained on DLoss + GLoss.

    LATSE (Huang et al., ICML 2020), Fig. 2 and Algorithm 1. The student embedding feeds
    the margin head (usually :class:`kerasface.heads.LinearFaceHead`: DLoss, eq. 10-11) and
    a decoder (:class:`kerasface.backbones.ResNetDecoder` with a sigmoid output) that
    restores a face in [0, 1], compared with the identity's momentum-mean image
    (:class:`kerasface.layers.IdentityMeanImages`, eq. 12) by
    :class:`kerasface.losses.GenerativeLoss` (eq. 13-14). ``fit`` minimises
    ``DLoss + generative_weight * GLoss`` (eq. 15).

    With a :class:`kerasface.training.TeacherFilter` set (:attr:`teacher_filter`), a
    sample whose label is not in the frozen teacher's top-k sends no gradient to the
    student: ``filter_mode="embedding"`` stops it at the embedding, as Algorithm 1 does
    (the head, decoder and mean image still learn from it); ``"sample"`` drops the sample
    from both losses and from the mean image. The share of samples filtered is logged as
    ``filtered_fraction``. The teacher is not saved with the model; what is evaluated and
    exported is :attr:`embedding_model`, the student alone.

    Compile with :meth:`compile_losses`. Logged: ``identity_loss``, ``image_loss`` and the
    decoded image's ``image_l1`` and ``image_ssim`` against its target.

    Args:
        backbone: the student encoder, images (B, 112, 112, 3) -> (B, D).
        head: the margin head.
        decoder: embeddings (B, D) -> images (B, H, W, 3) in [0, 1] at the input size, or None.
        mean_images: an ``IdentityMeanImages`` for the head's classes (required with a decoder).
        filter_mode: "embedding" or "sample", how a teacher filter blocks a sample.
        **kwargs: passed to ``keras.Model``.

    Call arguments:
        inputs: ``images`` for L2-normalised embeddings; ``(images, labels)`` or
            ``(images, labels, keep)`` (keep: bool (B,), the filter's decision) for
            ``{"identity": logits, "image": decoded}`` (logits alone without a decoder).
        training: forwarded to every part.

    Returns:
        (B, D) float32 embeddings, or the training outputs above (float32).
    """

    def __init__(self, backbone, head, decoder=None, mean_images=None, filter_mode="embedding", **kwargs):
        super().__init__(backbone, head, **kwargs)
        if filter_mode not in FILTER_MODES:
            raise ValueError(f"`filter_mode` must be one of {FILTER_MODES}, got {filter_mode!r}")
        if decoder is not None and mean_images is None:
            raise ValueError("a decoder needs `mean_images` (an IdentityMeanImages) to give its target images")
        if mean_images is not None and mean_images.num_classes != head.num_classes:
            raise ValueError(
                f"`mean_images` holds {mean_images.num_classes} identities, the head {head.num_classes}"
            )
        self.decoder = decoder
        self.mean_images = mean_images
        self.filter_mode = filter_mode
        self._teacher_filter = None
        self.filtered_fraction = keras.metrics.Mean(name="filtered_fraction")

    @property
    def teacher_filter(self):
        """The :class:`TeacherFilter` applied in ``fit`` (None: every sample trains the student)."""
        return self._teacher_filter

    @teacher_filter.setter
    def teacher_filter(self, value):
        if value is not None and value.num_classes != self.head.num_classes:
            raise ValueError(f"the teacher filter ranks {value.num_classes} classes, the head has {self.head.num_classes}")
        # Bypasses Keras' attribute tracking: the teacher is not a part of the student.
        object.__setattr__(self, "_teacher_filter", value)

    def build(self, input_shape):
        training_input = _is_training_input(input_shape)
        images_shape = input_shape[0] if training_input else input_shape
        super().build(tuple(input_shape[:2]) if training_input else input_shape)
        embedding_shape = self.backbone.compute_output_shape(images_shape)
        if self.decoder is not None:
            if not self.decoder.built:
                self.decoder.build(embedding_shape)
            decoded = tuple(self.decoder.compute_output_shape(embedding_shape)[1:])
            if images_shape[1] is not None and decoded != tuple(images_shape[1:]):
                raise ValueError(f"the decoder makes {decoded} images, the model takes {tuple(images_shape[1:])}")
        if self.mean_images is not None and not self.mean_images.built:
            self.mean_images.build([images_shape, (images_shape[0],)])

    def call(self, inputs, training=None):
        if not _is_training_input(inputs):
            return super().call(inputs, training=training)
        images, labels, *keep = inputs
        embeddings = self.backbone(_normalized(images), training=training)
        if keep:
            # Algorithm 1: what follows gets the embedding's value for every sample, but
            # the gradient back into the student only from kept ones.
            keep_rows = ops.cast(ops.reshape(keep[0], (-1, 1)), embeddings.dtype)
            embeddings = keep_rows * embeddings + (1 - keep_rows) * ops.stop_gradient(embeddings)
        logits = self.head([embeddings, labels], training=training)
        if self.decoder is None:
            return logits
        return {"identity": logits, "image": self.decoder(embeddings, training=training)}

    def compile_losses(self, optimizer, generative_weight=1.0, l1_weight=1.0, ssim_weight=1.0, **kwargs):
        """``compile`` with DLoss (cross-entropy on the head's logits) and ``generative_weight`` x GLoss."""
        identity_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        if self.decoder is None:
            return self.compile(optimizer=optimizer, loss=identity_loss, metrics=[accuracy], **kwargs)
        return self.compile(
            optimizer=optimizer,
            loss={"identity": identity_loss, "image": GenerativeLoss(l1_weight=l1_weight, ssim_weight=ssim_weight)},
            loss_weights={"identity": 1.0, "image": float(generative_weight)},
            metrics={
                "identity": [accuracy],
                "image": [
                    keras.metrics.MeanAbsoluteError(name="l1"),
                    keras.metrics.MeanMetricWrapper(structural_similarity, name="ssim"),
                ],
            },
            **kwargs,
        )

    def train_step(self, data):
        images, labels, weights = keras.utils.unpack_x_y_sample_weight(data)
        if _is_training_input(images):
            # Already (inputs, targets) for every output: a plain Keras step, no filter.
            return keras.Model.train_step(self, data)
        if labels is None:
            raise ValueError("LATSERecognizer needs (images, labels) batches; got images without labels")
        inputs = (images, labels)
        keep = None
        if self._teacher_filter is not None:
            keep = self._teacher_filter.keep(images, labels)
            self.filtered_fraction.update_state(1.0 - ops.cast(keep, "float32"))
            inputs = (images, labels, keep)
            if self.filter_mode == "sample":
                kept = ops.cast(keep, "float32")
                weights = kept if weights is None else ops.cast(weights, "float32") * kept
        targets = labels
        if self.decoder is not None:
            update_weights = ops.cast(keep, "float32") if keep is not None and self.filter_mode == "sample" else None
            targets = {"identity": labels, "image": self._target_images(images, labels, True, update_weights)}
        return keras.Model.train_step(self, (inputs, targets) if weights is None else (inputs, targets, weights))

    def _symbolic_batch(self, data):
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        if _is_training_input(images) or self.decoder is None or labels is None:
            return data
        # Shapes only: the image targets have the input images' shape.
        return (images, labels), {"identity": labels, "image": ops.cast(images, "float32")}

    def test_step(self, data):
        images, labels, weights = keras.utils.unpack_x_y_sample_weight(data)
        if _is_training_input(images):
            return keras.Model.test_step(self, data)
        targets = labels
        if self.decoder is not None:
            targets = {"identity": labels, "image": self._target_images(images, labels, False)}
        inputs = (images, labels)
        return keras.Model.test_step(self, (inputs, targets) if weights is None else (inputs, targets, weights))

    def _target_images(self, images, labels, training, weights=None):
        pixels = unit_range(images)
        inputs = [pixels, labels] if weights is None else [pixels, labels, weights]
        return ops.stop_gradient(self.mean_images(inputs, training=training))

    def decode(self, images):
        """Decoded faces in [0, 1] (B, H, W, 3) of images (uint8 or normalised): LATSE Fig. 1."""
        if self.decoder is None:
            raise ValueError(f"{self.name} has no decoder")
        return self.decoder(self.backbone(_normalized(images), training=False), training=False)

    _NESTED = (*FaceRecognizer._NESTED, "decoder", "mean_images")

    def get_config(self):
        return {**super().get_config(), "filter_mode": self.filter_mode}


def unit_range(images):
    """Images as float32 in [0, 1], from uint8 pixels or the normalised network input."""
    if images.dtype == "uint8":
        return ops.cast(images, "float32") / 255.0
    return ops.clip((ops.cast(images, "float32") * 128.0 + 127.5) / 255.0, 0.0, 1.0)


def _is_training_input(value):
    """True for ``(images, labels)`` or ``(images, labels, keep)`` (tensors or shapes)."""
    if isinstance(value, (list, tuple)) and len(value) == 3:
        return _is_pair(value[:2]) and _is_pair(value[1:])
    return _is_pair(value)
