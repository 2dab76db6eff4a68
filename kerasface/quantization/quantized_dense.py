"""Dense layer whose kernel is fake-quantised per tensor, as TFLite stores FULLY_CONNECTED weights."""

import keras
from keras import ops

from kerasface.quantization.weight_fake_quant import fake_quantize_kernel


@keras.saving.register_keras_serializable(package="kerasface")
class QuantizedDense(keras.layers.Dense):
    """``keras.layers.Dense`` that multiplies by its int8-rounded kernel (one symmetric scale, see ``fake_quantize_kernel``).

    Args:
        same as ``keras.layers.Dense``.

    Call arguments:
        inputs: (..., C_in) tensor.

    Returns:
        (..., units) with the fake-quantised kernel, plus bias and activation.
    """

    def call(self, inputs, training=None):
        outputs = ops.matmul(inputs, fake_quantize_kernel(self.kernel, per_channel=False))
        if self.use_bias:
            outputs = ops.add(outputs, self.bias)
        if self.activation is not None:
            return self.activation(outputs)
        return outputs
