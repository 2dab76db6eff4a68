"""Base class of every margin head: a normalised class-centre kernel and a scale."""

import keras
from keras import ops


class MarginHead(keras.layers.Layer):
    """Cosine classifier over L2-normalised embeddings and class centres.

    Subclasses change only the target-class logit, in ``target_logit``; negatives stay
    ``s * cos(theta_j)``. Logits are always float32 (the layer's dtype policy is pinned
    to float32) so heads stay exact under mixed precision.

    Args:
        num_classes: number of identities C.
        scale: the feature scale s applied to every logit.
        kernel_initializer: initializer of the (D, C) class-centre kernel.
        kernel_regularizer: optional regularizer of the kernel.

    Call arguments:
        inputs: ``[embeddings, labels]`` (labels int, shape (B,)) to get margin logits, or
            ``embeddings`` alone for plain scaled cosine logits (inference).
        training: unused by the base class; kept for heads whose margin anneals.

    Returns:
        float32 logits of shape (B, C), already multiplied by ``scale``.
    """

    def __init__(
        self,
        num_classes,
        scale=64.0,
        kernel_initializer="glorot_normal",
        kernel_regularizer=None,
        **kwargs,
    ):
        # float32 logits under mixed precision: softmax over C classes at s=64 overflows fp16.
        kwargs["dtype"] = kwargs.get("dtype") or "float32"
        super().__init__(**kwargs)
        if int(num_classes) < 2:
            raise ValueError(f"`num_classes` must be >= 2, got {num_classes}")
        if scale <= 0:
            raise ValueError(f"`scale` must be > 0, got {scale}")
        self.num_classes = int(num_classes)
        self.scale = float(scale)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        embedding_shape = input_shape[0] if _is_pair(input_shape) else input_shape
        embedding_size = embedding_shape[-1]
        if embedding_size is None:
            raise ValueError(f"{self.name}: the embedding dimension must be known, got shape {embedding_shape}")
        self.kernel = self.add_weight(
            name="kernel",
            shape=(int(embedding_size), self.num_classes),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )

    def cosine(self, embeddings):
        """cos(theta) between each embedding and each class centre, (B, C) float32 in [-1, 1]."""
        embeddings = l2_normalize(ops.cast(embeddings, "float32"), axis=-1)
        kernel = l2_normalize(ops.cast(self.kernel, "float32"), axis=0)
        return ops.clip(ops.matmul(embeddings, kernel), -1.0, 1.0)

    def target_logit(self, cos_target):
        """The margin: maps the target-class cosine (B,) to its unscaled logit (B,)."""
        return cos_target

    def call(self, inputs, training=None):
        if not _is_pair(inputs):
            return self.scale * self.cosine(inputs)
        embeddings, labels = inputs
        cos = self.cosine(embeddings)
        labels = ops.reshape(ops.cast(labels, "int32"), (-1, 1))
        cos_target = ops.take_along_axis(cos, labels, axis=1)
        new_target = ops.reshape(self.target_logit(ops.reshape(cos_target, (-1,))), (-1, 1))
        # A boolean (B, C) mask instead of a float one-hot: 1 byte per entry, and the
        # margin is added only where it applies.
        is_target = ops.expand_dims(ops.arange(self.num_classes, dtype="int32"), 0) == labels
        logits = ops.where(is_target, new_target, cos)
        return self.scale * logits

    def compute_output_shape(self, input_shape):
        embedding_shape = input_shape[0] if _is_pair(input_shape) else input_shape
        return (embedding_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "scale": self.scale,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer)
                if self.kernel_regularizer
                else None,
            }
        )
        return config


def l2_normalize(x, axis=-1):
    """``x / ||x||`` with the squared norm floored at 1e-12, so the gradient stays finite at 0.

    (``keras.ops.normalize`` floors ``rsqrt`` after the fact, which leaves an infinite
    gradient at a zero vector.)
    """
    return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), 1e-12))


def _is_pair(value):
    """True for ``[embeddings, labels]`` (tensors or their shapes), False for one tensor/shape."""
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(item, (list, tuple)) or hasattr(item, "shape") for item in value)
    )
