"""Convolution -> BatchNormalization -> activation, the unit every kerasface backbone is built from."""

import keras

# PyTorch-style BN (its momentum 0.1 is 0.9 here, eps 1e-5 as insightface): short face runs need
# statistics that settle fast. Synchronized so MirroredStrategy replicas agree on batch statistics
# and the saved moving statistics match training.
BN_KWARGS = {"momentum": 0.9, "epsilon": 1e-5, "synchronized": True}

ACTIVATIONS = (None, "prelu", "relu")


def batch_norm(x, name, **kwargs):
    """Synchronized BatchNormalization with the backbone defaults (``BN_KWARGS``)."""
    return keras.layers.BatchNormalization(**{**BN_KWARGS, **kwargs}, name=name)(x)


def activation(x, kind, name):
    """``"prelu"`` (one slope per channel, insightface's choice), ``"relu"`` or None."""
    if kind is None:
        return x
    if kind == "prelu":
        # One slope per channel, shared over H and W; any rank >= 2 (feature maps or vectors).
        # Slopes start at 0.25 as in PyTorch and every insightface model (Keras' default 0
        # would start as a ReLU).
        return keras.layers.PReLU(
            alpha_initializer=keras.initializers.Constant(0.25),
            shared_axes=list(range(1, len(x.shape) - 1)) or None,
            name=name,
        )(x)
    if kind == "relu":
        return keras.layers.ReLU(name=name)(x)
    raise ValueError(f"`activation` must be one of {ACTIVATIONS}, got {kind!r}")


def conv_bn(
    x,
    filters,
    kernel_size,
    strides=1,
    groups=1,
    depthwise=False,
    activation_kind="prelu",
    padding="same",
    name=None,
):
    """Conv (no bias) -> synchronized BN -> activation; layers ``{name}_conv|_dw``, ``_bn``, ``_act``.

    Args:
        x: NHWC feature map.
        filters: output channels (ignored when ``depthwise``).
        kernel_size, strides, padding: as in ``keras.layers.Conv2D``.
        groups: grouped convolution (input and output channels must divide by it).
        depthwise: a ``DepthwiseConv2D`` instead (one filter per channel).
        activation_kind: "prelu", "relu" or None (a linear conv, e.g. a projection).
        name: layer name prefix.
    """
    if depthwise:
        x = keras.layers.DepthwiseConv2D(
            kernel_size, strides, padding=padding, use_bias=False, name=f"{name}_dw"
        )(x)
    else:
        x = keras.layers.Conv2D(
            filters, kernel_size, strides, padding=padding, groups=groups, use_bias=False, name=f"{name}_conv"
        )(x)
    x = batch_norm(x, name=f"{name}_bn")
    return activation(x, activation_kind, name=f"{name}_act")
