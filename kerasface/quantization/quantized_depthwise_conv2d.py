"""DepthwiseConv2D whose kernel is fake-quantised per output channel (quantisation-aware training)."""

import keras
from keras import ops

from kerasface.quantization.weight_fake_quant import fake_quantize_kernel


@keras.saving.register_keras_serializable(package="kerasface")
class QuantizedDepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """``keras.layers.DepthwiseConv2D`` that convolves with its int8-rounded kernel (``fake_quantize_kernel``).

    Args:
        same as ``keras.layers.DepthwiseConv2D``.

    Call arguments:
        inputs: (B, H, W, C) feature map.

    Returns:
        the depthwise convolution with the fake-quantised kernel, plus bias and activation.
    """

    def call(self, inputs):
        outputs = ops.depthwise_conv(
            inputs,
            fake_quantize_kernel(self.kernel, depthwise=True),
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        if self.use_bias:
            channels = self.kernel.shape[-2] * self.kernel.shape[-1]
            shape = (1, 1, 1, channels) if self.data_format == "channels_last" else (1, channels, 1, 1)
            outputs = ops.add(outputs, ops.reshape(self.bias, shape))
        if self.activation is not None:
            return self.activation(outputs)
        return outputs
