"""CBAM: channel then spatial attention."""

import keras
from keras import ops

from kerasface.layers.attention_gate import attention_gate, check_gate


@keras.saving.register_keras_serializable(package="kerasface")
class ConvolutionalBlockAttention(keras.layers.Layer):
    """Convolutional Block Attention Module: channel attention, then spatial attention.

    Channel: ``M_c = gate(MLP(avgpool(x)) + MLP(maxpool(x)))`` with one shared MLP
    C -> C/r -> C (ReLU); spatial: ``M_s = gate(conv7x7([mean_c(x'); max_c(x')]))`` on
    ``x' = x * M_c``; returns ``x' * M_s`` (Woo et al., "CBAM", ECCV 2018, Eq. 1-3).
    AirFace (Sec. 3.2) uses it in every bottleneck with ``gate="one_plus_tanh"``.

    Args:
        reduction: r, the MLP's channel reduction; hidden width ``max(min_channels, C // r)``.
        min_channels: lower bound on the MLP's hidden width.
        spatial_kernel_size: the spatial attention convolution's kernel (7 in the paper).
        gate: "sigmoid" (the paper), "hard_sigmoid" or "one_plus_tanh" (AirFace).
        **kwargs: ``keras.layers.Layer`` arguments.

    Call arguments:
        inputs: (B, H, W, C) feature map.

    Returns:
        Same shape and dtype as ``inputs``.
    """

    def __init__(self, reduction=16, min_channels=8, spatial_kernel_size=7, gate="sigmoid", **kwargs):
        super().__init__(**kwargs)
        if reduction < 1:
            raise ValueError(f"`reduction` must be >= 1, got {reduction}")
        if min_channels < 1:
            raise ValueError(f"`min_channels` must be >= 1, got {min_channels}")
        if spatial_kernel_size < 1 or spatial_kernel_size % 2 == 0:
            raise ValueError(f"`spatial_kernel_size` must be odd and >= 1, got {spatial_kernel_size}")
        self.reduction = int(reduction)
        self.min_channels = int(min_channels)
        self.spatial_kernel_size = int(spatial_kernel_size)
        self.gate = check_gate(gate)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                f"ConvolutionalBlockAttention expects (B, H, W, C) with known C, got {tuple(input_shape)}"
            )
        channels = int(input_shape[-1])
        hidden = max(self.min_channels, channels // self.reduction)
        self.mlp_reduce_kernel = self.add_weight(
            shape=(channels, hidden), initializer="glorot_uniform", name="mlp_reduce_kernel"
        )
        self.mlp_reduce_bias = self.add_weight(shape=(hidden,), initializer="zeros", name="mlp_reduce_bias")
        self.mlp_expand_kernel = self.add_weight(
            shape=(hidden, channels), initializer="glorot_uniform", name="mlp_expand_kernel"
        )
        self.mlp_expand_bias = self.add_weight(shape=(channels,), initializer="zeros", name="mlp_expand_bias")
        k = self.spatial_kernel_size
        self.spatial_kernel = self.add_weight(
            shape=(k, k, 2, 1), initializer="glorot_uniform", name="spatial_kernel"
        )
        self.spatial_bias = self.add_weight(shape=(1,), initializer="zeros", name="spatial_bias")

    def _mlp(self, pooled):
        hidden = ops.relu(ops.matmul(pooled, self.mlp_reduce_kernel) + self.mlp_reduce_bias)
        return ops.matmul(hidden, self.mlp_expand_kernel) + self.mlp_expand_bias

    def call(self, inputs):
        # Both pooled vectors go through the shared MLP in one matmul.
        batch = ops.shape(inputs)[0]
        pooled = ops.concatenate([ops.mean(inputs, axis=(1, 2)), ops.max(inputs, axis=(1, 2))], axis=0)
        logits = self._mlp(pooled)
        channel = attention_gate(logits[:batch] + logits[batch:], self.gate)
        x = inputs * channel[:, None, None, :]
        descriptor = ops.concatenate(
            [ops.mean(x, axis=-1, keepdims=True), ops.max(x, axis=-1, keepdims=True)], axis=-1
        )
        spatial = ops.conv(descriptor, self.spatial_kernel, padding="same") + self.spatial_bias
        return x * attention_gate(spatial, self.gate)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "reduction": self.reduction,
            "min_channels": self.min_channels,
            "spatial_kernel_size": self.spatial_kernel_size,
            "gate": self.gate,
        }
