"""Plain softmax classifier: an un-normalised linear layer with a bias."""

import keras
from keras import ops

from kerasface.heads.head_registry import HEADS
from kerasface.heads.margin_head import MarginHead, _is_pair, check_labels


@HEADS.register("softmax")
class SoftmaxHead(MarginHead):
    """Softmax classifier with bias: logits ``scale * (x . W_j + b_j)`` on raw features.

    The baseline of AirFace (Li et al., 2019) eq. 1: neither the embeddings nor the
    class centres are normalised and there is no margin, so training and inference give
    the same logits. ``cosine`` still returns the true cosine (for analysis); the
    logits come from ``linear_logits``.

    Args:
        num_classes: number of identities C.
        scale: a constant multiplying every logit (a softmax temperature); 1.0 is the
            plain softmax of eq. 1.
        bias_initializer: initializer of the (C,) bias.
        **kwargs: see ``MarginHead`` (``kernel_initializer``, ``kernel_regularizer``).

    Call arguments:
        inputs: ``[embeddings, labels]`` (labels are only range-checked) or
            ``embeddings``; both give the same logits.

    Returns:
        float32 (B, C) logits ``scale * (embeddings @ kernel + bias)``.
    """

    def __init__(self, num_classes, scale=1.0, bias_initializer="zeros", **kwargs):
        super().__init__(num_classes, scale=scale, **kwargs)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        super().build(input_shape)
        self.bias = self.add_weight(name="bias", shape=(self.num_classes,), initializer=self.bias_initializer)

    def linear_logits(self, embeddings):
        """``embeddings @ kernel + bias`` in float32, (B, C), unscaled."""
        embeddings = ops.cast(embeddings, "float32")
        return ops.matmul(embeddings, ops.cast(self.kernel, "float32")) + ops.cast(self.bias, "float32")

    def margin_logits(self, cos, cos_target, labels, embeddings=None, training=None):
        """The linear logits of the raw ``embeddings`` (for wrappers that compose heads)."""
        return self.linear_logits(embeddings)

    def target_curve(self, theta):
        """``cos(theta)``: the target logit of unit-norm features and centres with zero bias."""
        return ops.cos(ops.cast(theta, "float32"))

    def call(self, inputs, training=None):
        if _is_pair(inputs):
            embeddings, labels = inputs
            # Labels play no part in the logits but a bad one should still fail here, as
            # in every other head, not later inside the loss.
            check_labels(labels, self.num_classes)
        else:
            embeddings = inputs
        return self.logit_scale() * self.linear_logits(embeddings)

    def get_config(self):
        return {**super().get_config(), "bias_initializer": keras.initializers.serialize(self.bias_initializer)}
