"""Quantisation-aware training on Keras 3: BN folding, fake quantisation, distillation, int8 TFLite."""

from kerasface.quantization.batch_norm_folding import fold_batch_norms, fold_weights, folded_layer
from kerasface.quantization.cosine_distance import cosine_distance
from kerasface.quantization.fake_quant import FakeQuant
from kerasface.quantization.functional_graph import rebuild_functional
from kerasface.quantization.qat_fine_tuning import (
    activation_ranges,
    calibrate_ranges,
    distillation_dataset,
    fine_tune,
    teacher_embeddings,
)
from kerasface.quantization.qat_tflite import (
    export_qat_tflite,
    float_computing_ops,
    qat_keras_embeddings,
    qat_tflite_flatbuffer,
    strip_fake_quant,
)
from kerasface.quantization.quantize_model import fake_quant_layers, quantize_model
from kerasface.quantization.quantized_conv2d import QuantizedConv2D
from kerasface.quantization.quantized_dense import QuantizedDense
from kerasface.quantization.quantized_depthwise_conv2d import QuantizedDepthwiseConv2D
from kerasface.quantization.weight_fake_quant import fake_quantize_kernel

__all__ = [
    "FakeQuant", "QuantizedConv2D", "QuantizedDense", "QuantizedDepthwiseConv2D", "activation_ranges",
    "calibrate_ranges", "cosine_distance", "distillation_dataset", "export_qat_tflite", "fake_quant_layers",
    "fake_quantize_kernel", "fine_tune", "float_computing_ops", "fold_batch_norms", "fold_weights",
    "folded_layer", "qat_keras_embeddings", "qat_tflite_flatbuffer", "quantize_model", "rebuild_functional",
    "strip_fake_quant", "teacher_embeddings",
]
