"""Turn a float embedding model into its quantisation-aware (fake-quantised) twin."""

import keras

from kerasface.quantization.batch_norm_folding import fold_batch_norms
from kerasface.quantization.fake_quant import FakeQuant
from kerasface.quantization.functional_graph import clone_layer, rebuild_functional
from kerasface.quantization.quantized_conv2d import QuantizedConv2D
from kerasface.quantization.quantized_dense import QuantizedDense
from kerasface.quantization.quantized_depthwise_conv2d import QuantizedDepthwiseConv2D

# Checked most specific first: DepthwiseConv2D is a Conv2D subclass in Keras.
QUANTIZED_CLASSES = (
    (keras.layers.DepthwiseConv2D, QuantizedDepthwiseConv2D),
    (keras.layers.Conv2D, QuantizedConv2D),
    (keras.layers.Dense, QuantizedDense),
)
# Ops whose int8 TFLite kernels reuse the input's scale and zero point: no new range.
SAME_RANGE_LAYERS = (
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Dropout,
    keras.layers.ZeroPadding2D,
    keras.layers.MaxPooling2D,
    keras.layers.InputLayer,
)
# Fused into the convolution before them by the converter: one range, after the activation.
FUSED_ACTIVATIONS = ("relu", "relu6")


def quantize_model(model, fold=True, ema_decay=0.99, name=None):
    """A quantisation-aware copy of ``model``: weights and activations fake-quantised as int8 TFLite does.

    BatchNormalization is folded first (``fold_batch_norms``), then each ``Conv2D``,
    ``DepthwiseConv2D`` and ``Dense`` becomes its ``Quantized*`` twin (per-channel
    symmetric int8 kernel) and a ``FakeQuant`` (per-tensor asymmetric, EMA range) follows
    every tensor TFLite requantises: the model input, each convolution/dense output
    (after a fused ReLU when there is one), PReLU, Add, pooling and any other layer.
    Shape-only layers (Flatten, Reshape, padding, max-pooling, dropout) share their
    input's range, and a final ``UnitNormalization`` is kept as is: the exported file
    uses TFLite's L2_NORMALIZATION with its fixed output scale.

    The activation ranges start empty; run ``calibrate_ranges`` (or train) before
    using the model in inference.

    Args:
        model: functional float embedding model (nested functional backbones are inlined).
        fold: fold BatchNormalization first (set False for an already folded model).
        ema_decay: ``FakeQuant.ema_decay`` of every activation range.
        name: the QAT model's name; default ``f"{model.name}_qat"``.

    Returns:
        the QAT ``keras.Model``, initialised with ``model``'s (folded) weights.
    """
    folded = fold_batch_norms(model) if fold else model
    consumers = _consumers(folded)
    final = {id(t) for t in folded.outputs}

    def quant(tensor, layer_name):
        return FakeQuant(ema_decay=ema_decay, name=f"{layer_name}_quant")(tensor)

    def call_layer(layer, *args, **kwargs):
        quantized_class = next((q for f, q in QUANTIZED_CLASSES if isinstance(layer, f)), None)
        if quantized_class is not None:
            new = quantized_class.from_config(layer.get_config())
            outputs = new(*args, **kwargs)
            new.set_weights(layer.get_weights())
            if _fused_activation_follows(layer, consumers):
                return outputs
            return quant(outputs, layer.name)
        outputs = clone_layer(layer, *args, **kwargs)
        if isinstance(layer, SAME_RANGE_LAYERS):
            return outputs
        if isinstance(layer, keras.layers.UnitNormalization) and _is_final(layer, folded):
            return outputs
        return quant(outputs, layer.name)

    return rebuild_functional(
        folded, call_layer, input_fn=lambda x: quant(x, "input"), name=name or f"{model.name}_qat"
    )


def fake_quant_layers(model):
    """The ``FakeQuant`` layers of a QAT model, in graph order."""
    return [layer for layer in model.layers if isinstance(layer, FakeQuant)]


def _consumers(model):
    result = {}
    for layer in model.layers:
        result[layer.name] = [node.operation for node in getattr(layer, "_outbound_nodes", [])]
    return result


def _fused_activation_follows(layer, consumers):
    # The converter fuses CONV/FC + RELU(6) into one op with one output range, so the conv's
    # own output is never quantised; only then is the fake-quant after the conv skipped.
    if _activation_name(layer) in FUSED_ACTIVATIONS:
        return False
    following = consumers.get(layer.name, [])
    return len(following) == 1 and _activation_name(following[0]) in FUSED_ACTIVATIONS


def _activation_name(layer):
    if isinstance(layer, keras.layers.ReLU):
        if layer.negative_slope == 0 and layer.threshold == 0:
            return "relu6" if layer.max_value == 6 else ("relu" if layer.max_value is None else None)
        return None
    activation = getattr(layer, "activation", None)
    if isinstance(layer, (keras.layers.Activation, keras.layers.Conv2D, keras.layers.Dense)) and activation is not None:
        return getattr(activation, "__name__", None)
    return None


def _is_final(layer, model):
    return layer is model.layers[-1]
