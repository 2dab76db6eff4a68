"""Base class of every margin head: a normalised class-centre kernel and a scale."""

import keras
import tensorflow as tf
from keras import ops


class MarginHead(keras.layers.Layer):
    """Cosine classifier over L2-normalised embeddings and class centres.

    A head changes only its margin. Most override ``target_logit`` (the target-class
    logit as a function of ``cos(theta_y)``); heads that also reshape negatives override
    ``negative_logits``; heads whose margin depends on the whole row (hard-negative
    counts, feature norms) override ``margin_logits``. The base class owns the kernel,
    the cosine, the label gather (``take_along_axis``, no one-hot), the scatter of the new
    target logit and the scale. Logits are always float32 (the layer's dtype policy is
    pinned to float32) so heads stay exact under mixed precision.

    Args:
        num_classes: number of identities C.
        scale: the feature scale s applied to every logit.
        kernel_initializer: initializer of the (D, C) class-centre kernel.
        kernel_regularizer: optional regularizer of the kernel.

    Call arguments:
        inputs: ``[embeddings, labels]`` (labels int, shape (B,) or (B, 1)) to get margin
            logits, or ``embeddings`` alone for plain scaled cosine logits (inference).
        training: forwarded to ``margin_logits`` (heads with running statistics update
            them only when training).

    Returns:
        float32 logits of shape (B, C), already multiplied by the scale.
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
        # False when a wrapper (PartialFCHead) owns the class centres and calls only the margin.
        self._owns_kernel = True

    def kernel_shape(self, embedding_size):
        """Shape of the class-centre kernel; sub-center heads keep k columns per class."""
        return (embedding_size, self.num_classes)

    def build(self, input_shape):
        embedding_shape = input_shape[0] if _is_pair(input_shape) else input_shape
        embedding_size = embedding_shape[-1]
        if embedding_size is None:
            raise ValueError(f"{self.name}: the embedding dimension must be known, got shape {embedding_shape}")
        if not self._owns_kernel:
            return
        self.kernel = self.add_weight(
            name="kernel",
            shape=self.kernel_shape(int(embedding_size)),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )

    def cosine(self, embeddings):
        """cos(theta) between each embedding and each class centre, (B, C) float32 in [-1, 1]."""
        return ops.clip(self._kernel_cosine(embeddings), -1.0, 1.0)

    def _kernel_cosine(self, embeddings):
        # Dividing the (B, C) product by the column norms, instead of normalising the
        # (D, C) kernel first, saves a kernel-sized copy: 2 GiB at 1M classes x 512-d.
        embeddings = l2_normalize(ops.cast(embeddings, "float32"), axis=-1)
        kernel = ops.cast(self.kernel, "float32")
        inverse_norms = 1.0 / ops.sqrt(ops.maximum(ops.sum(ops.square(kernel), axis=0), 1e-12))
        return ops.matmul(embeddings, kernel) * inverse_norms

    def logit_scale(self):
        """The scale s multiplying every logit (a variable in heads that adapt it)."""
        return self.scale

    def target_logit(self, cos_target):
        """The margin: maps the target-class cosine (B,) to its unscaled logit (B,)."""
        return cos_target

    def negative_logits(self, cos, cos_target, target_logit):
        """Unscaled logits of every class (B, C); the target column is overwritten after."""
        return cos

    def margin_logits(self, cos, cos_target, labels, embeddings=None, training=None):
        """Unscaled (B, C) training logits: ``negative_logits`` with the target replaced."""
        target = self.target_logit(cos_target)
        return replace_target(self.negative_logits(cos, cos_target, target), labels, target)

    def target_curve(self, theta):
        """Unscaled target logit as a function of theta_y, for plots (``kerasface plot heads``).

        Heads whose margin depends on batch state evaluate it at a documented typical value.
        """
        return self.target_logit(ops.cos(ops.cast(theta, "float32")))

    def call(self, inputs, training=None):
        if not _is_pair(inputs):
            return self.logit_scale() * self.cosine(inputs)
        embeddings, labels = inputs
        labels = check_labels(labels, self.num_classes)
        cos = self.cosine(embeddings)
        cos_target = gather_target(cos, labels)
        logits = self.margin_logits(cos, cos_target, labels, embeddings=embeddings, training=training)
        return self.logit_scale() * logits

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


def check_labels(labels, num_classes):
    """Flat int32 labels; out-of-range labels fail with the value and the class count."""
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    # keras.ops has no assertion; tf.debugging raises eagerly and in graphs, and is a
    # no-op under XLA (where an out-of-range gather would silently read garbage).
    tf.debugging.assert_non_negative(labels, message="labels must be >= 0")
    tf.debugging.assert_less(labels, num_classes, message=f"labels must be < num_classes={num_classes}")
    return labels


def gather_target(values, labels):
    """``values[i, labels[i]]`` for every row: (B, C), (B,) -> (B,)."""
    return ops.reshape(ops.take_along_axis(values, ops.reshape(labels, (-1, 1)), axis=1), (-1,))


def replace_target(values, labels, target):
    """``values`` with ``values[i, labels[i]] = target[i]``: a scatter, no (B, C) mask."""
    rows = ops.arange(ops.shape(labels)[0], dtype="int32")
    indices = ops.stack([rows, labels], axis=1)
    return ops.scatter_update(values, indices, ops.cast(target, values.dtype))


def sum_over_replicas(*values):
    """Sums tensors over the replicas of a ``tf.distribute`` strategy (themselves without one).

    Running statistics built from these sums are the global-batch value on every replica,
    identical to one device (a mean of per-replica estimates would not be, for medians).
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    return tuple(context.all_reduce(tf.distribute.ReduceOp.SUM, list(values)))


def gather_over_replicas(values):
    """Concatenates a (n,) tensor over the replicas (itself without a strategy)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    return context.all_gather(values, axis=0)


def replica_components(variable):
    """The per-replica ``tf.Variable`` s behind a Keras variable (itself without a strategy).

    For sync-on-read variables with no aggregation (sharded state), one per replica in
    replica order; saving and loading go through them.
    """
    value = variable.value
    return tuple(getattr(value, "values", (value,)))


def acos(cos):
    """``arccos`` with its argument kept off +-1, so the gradient stays finite everywhere."""
    return ops.arccos(ops.clip(cos, -1.0 + 1e-7, 1.0 - 1e-7))


def _is_pair(value):
    """True for ``[embeddings, labels]`` (tensors or their shapes), False for one tensor/shape."""
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(item, (list, tuple)) or hasattr(item, "shape") for item in value)
    )
