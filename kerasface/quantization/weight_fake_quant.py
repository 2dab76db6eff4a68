"""Symmetric int8 fake quantisation of convolution (per output channel) and dense (per tensor) kernels."""

import keras
from keras import ops

WEIGHT_BITS = 8


def fake_quantize_kernel(kernel, depthwise=False, per_channel=True, num_bits=WEIGHT_BITS):
    """``kernel`` rounded as TFLite stores int8 weights: per output channel, symmetric, ``[-127, 127]``.

    Each output channel's scale is ``max|w| / 127`` (narrow range, zero point 0), as the
    TFLite converter quantises CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED weights.
    The scale is taken from the current weights without gradient; the rounding passes
    gradients straight through.

    Args:
        kernel: ``Conv2D`` (H, W, C_in, C_out) or ``Dense`` (C_in, C_out) kernel, or a
            ``DepthwiseConv2D`` kernel (H, W, C, M) with ``depthwise=True`` (output
            channel ``c * M + m``).
        depthwise: the kernel is a depthwise one.
        per_channel: one scale per output channel; False: one for the whole kernel (Dense:
            the converter transposes FULLY_CONNECTED weights to (out, in) and cannot carry a
            per-channel axis through that transpose, so its int8 FC weights are per-tensor).
        num_bits: bits per weight.

    Returns:
        the fake-quantised kernel, same shape and dtype.
    """
    shape = tuple(kernel.shape)
    # Output channels must stay the last axis of the tensor fed to the per-channel op, with
    # the leading axes untouched: the converter follows the kernel through reshapes only
    # when the quantised axis keeps its place (a (N, C) flattening breaks CONV_2D).
    # Depthwise (H, W, C, M) becomes (H, W, C * M), the layout TFLite stores.
    values = ops.reshape(kernel, shape[:-2] + (shape[-2] * shape[-1],)) if depthwise else kernel
    reduce_axes = tuple(range(len(values.shape) - 1)) if per_channel else None
    limit = ops.max(ops.abs(ops.stop_gradient(values)), axis=reduce_axes)
    # An all-zero channel would give an empty range; any positive limit keeps its zeros exact.
    limit = ops.maximum(ops.cast(limit, "float32"), 1e-8)
    quantized = keras.quantizers.fake_quant_with_min_max_vars(
        values, -limit, limit, num_bits=num_bits, narrow_range=True, axis=-1 if per_channel else None
    )
    return ops.reshape(quantized, shape) if depthwise else quantized
