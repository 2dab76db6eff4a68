"""Squeeze-and-excitation channel attention."""

import keras
from keras import ops

from kerasface.layers.attention_gate import attention_gate, check_gate


@keras.saving.register_keras_serializable(package="kerasface")
class SqueezeExcitation(keras.layers.Layer):
    """Squeeze-and-excitation: reweights channels from their global average.

    ``x * gate(W2 relu(W1 mean_hw(x) + b1) + b2)`` with ``W1`` C -> C/r and ``W2`` C/r -> C
    (Hu et al., "Squeeze-and-Excitation Networks", 2018, Eq. 2-4). LFRC's SEResidual and
    SEDResidual blocks (Fig. 2c-d) put it in MobileFaceNet's bottleneck, as MobileNetV3 does.

    Args:
        reduction: r; the hidden width is ``max(min_channels, C // r)``.
        min_channels: lower bound on the hidden width.
        gate: "sigmoid" (the paper), "hard_sigmoid" (MobileNetV3) or "one_plus_tanh".
        **kwargs: ``keras.layers.Layer`` arguments.

    Call arguments:
        inputs: (B, H, W, C) feature map.

    Returns:
        Same shape and dtype as ``inputs``.
    """

    def __init__(self, reduction=4, min_channels=8, gate="sigmoid", **kwargs):
        super().__init__(**kwargs)
        if reduction < 1:
            raise ValueError(f"`reduction` must be >= 1, got {reduction}")
        if min_channels < 1:
            raise ValueError(f"`min_channels` must be >= 1, got {min_channels}")
        self.reduction = int(reduction)
        self.min_channels = int(min_channels)
        self.gate = check_gate(gate)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(f"SqueezeExcitation expects (B, H, W, C) with known C, got {tuple(input_shape)}")
        channels = int(input_shape[-1])
        hidden = max(self.min_channels, channels // self.reduction)
        self.reduce_kernel = self.add_weight(
            shape=(channels, hidden), initializer="glorot_uniform", name="reduce_kernel"
        )
        self.reduce_bias = self.add_weight(shape=(hidden,), initializer="zeros", name="reduce_bias")
        self.expand_kernel = self.add_weight(
            shape=(hidden, channels), initializer="glorot_uniform", name="expand_kernel"
        )
        self.expand_bias = self.add_weight(shape=(channels,), initializer="zeros", name="expand_bias")

    def call(self, inputs):
        squeezed = ops.mean(inputs, axis=(1, 2))
        hidden = ops.relu(ops.matmul(squeezed, self.reduce_kernel) + self.reduce_bias)
        weights = attention_gate(ops.matmul(hidden, self.expand_kernel) + self.expand_bias, self.gate)
        return inputs * weights[:, None, None, :]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "reduction": self.reduction,
            "min_channels": self.min_channels,
            "gate": self.gate,
        }
