"""Fold inference-mode BatchNormalization into the convolution or dense layer before it."""

import keras
import numpy as np

from kerasface.quantization.functional_graph import clone_layer, rebuild_functional

FOLDABLE = (keras.layers.DepthwiseConv2D, keras.layers.Conv2D, keras.layers.Dense)


def fold_batch_norms(model, name=None):
    """A flat float model equal to ``model`` in inference, with every conv/dense -> BN pair merged.

    ``BN(conv(x) + b)`` with moving statistics is ``conv'(x) + b'`` with each output
    channel's weights scaled by ``gamma / sqrt(var + eps)``: the form TFLite runs and the
    one quantisation-aware training must see, since the converter folds BN before
    quantising the weights. A BN is folded when its input is the output of a linear
    ``Conv2D``, ``DepthwiseConv2D`` or ``Dense`` over the last axis; other BNs stay.
    Nested functional models are inlined; layers are copied, not shared with ``model``.

    Args:
        model: a functional Keras model (an embedding model or a backbone).
        name: name of the result; default ``model.name``.

    Returns:
        ``keras.Model`` with the same inputs and outputs.
    """
    produced = {}  # id(symbolic output of a cloned linear layer) -> (original layer, its input)

    def call_layer(layer, *args, **kwargs):
        if isinstance(layer, keras.layers.BatchNormalization) and args and id(args[0]) in produced:
            source, source_input = produced[id(args[0])]
            if _last_axis(layer.axis, len(args[0].shape)):
                new, weights = folded_layer(source, layer)
                outputs = new(source_input)
                new.set_weights(weights)
                return outputs
        outputs = clone_layer(layer, *args, **kwargs)
        if isinstance(layer, FOLDABLE) and _is_linear(layer) and len(args) == 1:
            produced[id(outputs)] = (layer, args[0])
        return outputs

    return rebuild_functional(model, call_layer, name=name)


def folded_layer(layer, batch_norm):
    """A new layer like ``layer`` (with a bias) computing ``batch_norm(layer(x))`` in inference.

    Args:
        layer: a linear ``Conv2D``, ``DepthwiseConv2D`` or ``Dense`` (built).
        batch_norm: the ``BatchNormalization`` applied to its output, over the last axis.

    Returns:
        ``(new_layer, [kernel, bias])``: an unbuilt layer named after ``layer`` and the
        weights to set once it is built.
    """
    if not isinstance(layer, FOLDABLE):
        raise TypeError(f"cannot fold BatchNormalization into {type(layer).__name__} {layer.name!r}")
    kernel, bias = fold_weights(layer, batch_norm)
    # The conv's name, unless its unfolded output is still used elsewhere (then both exist).
    single_use = len(getattr(layer, "_outbound_nodes", [])) <= 1
    name = layer.name if single_use else f"{layer.name}_{batch_norm.name}_folded"
    config = {**layer.get_config(), "use_bias": True, "name": name}
    return layer.__class__.from_config(config), [kernel, bias]


def fold_weights(layer, batch_norm):
    """(kernel, bias) float32 NumPy arrays of ``layer`` with ``batch_norm`` folded in."""
    weights = [np.asarray(w, dtype=np.float64) for w in layer.get_weights()]
    kernel = weights[0]
    bias = weights[1] if layer.use_bias else 0.0
    mean = np.asarray(batch_norm.moving_mean, dtype=np.float64)
    variance = np.asarray(batch_norm.moving_variance, dtype=np.float64)
    gamma = np.asarray(batch_norm.gamma, dtype=np.float64) if batch_norm.scale else np.ones_like(mean)
    beta = np.asarray(batch_norm.beta, dtype=np.float64) if batch_norm.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(variance + batch_norm.epsilon)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        # Output channel c * M + m comes from input channel c, multiplier m: kernel (H, W, C, M).
        folded_kernel = kernel * scale.reshape(kernel.shape[-2], kernel.shape[-1])
    else:
        folded_kernel = kernel * scale
    if folded_kernel.shape != kernel.shape or scale.shape[0] != _output_channels(kernel, layer):
        raise ValueError(
            f"BatchNormalization {batch_norm.name!r} has {scale.shape[0]} channels, "
            f"layer {layer.name!r} outputs {_output_channels(kernel, layer)}"
        )
    folded_bias = (bias - mean) * scale + beta
    return folded_kernel.astype(np.float32), np.broadcast_to(folded_bias, scale.shape).astype(np.float32)


def _output_channels(kernel, layer):
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return kernel.shape[-2] * kernel.shape[-1]
    return kernel.shape[-1]


def _is_linear(layer):
    return layer.activation is None or layer.activation is keras.activations.linear


def _last_axis(axis, rank):
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    return len(axes) == 1 and axes[0] % rank == rank - 1
