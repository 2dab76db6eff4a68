"""Conv2D whose kernel is fake-quantised per output channel (quantisation-aware training)."""

import keras
from keras import ops

from kerasface.quantization.weight_fake_quant import fake_quantize_kernel


@keras.saving.register_keras_serializable(package="kerasface")
class QuantizedConv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` that convolves with its int8-rounded kernel (``fake_quantize_kernel``).

    Args:
        same as ``keras.layers.Conv2D``.

    Call arguments:
        inputs: (B, H, W, C) feature map.

    Returns:
        the convolution with the fake-quantised kernel, plus bias and activation.
    """

    def call(self, inputs):
        outputs = self.convolution_op(inputs, fake_quantize_kernel(self.kernel))
        if self.use_bias:
            outputs = ops.add(outputs, ops.reshape(self.bias, _bias_shape(self.data_format, self.rank, self.filters)))
        if self.activation is not None:
            return self.activation(outputs)
        return outputs


def _bias_shape(data_format, rank, channels):
    if data_format == "channels_last":
        return (1,) * (rank + 1) + (channels,)
    return (1, channels) + (1,) * rank
