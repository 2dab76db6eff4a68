"""Building-block layers shared by the backbones (attention, pooling)."""

from kerasface.layers.abs_form_prelu import AbsFormPReLU
from kerasface.layers.all_layers import all_layers
from kerasface.layers.attention_gate import GATES, attention_gate
from kerasface.layers.convolutional_block_attention import ConvolutionalBlockAttention
from kerasface.layers.dataset_classifier import DatasetClassifier
from kerasface.layers.global_norm_aware_pooling import GlobalNormAwarePooling
from kerasface.layers.gradient_reversal import GradientReversal
from kerasface.layers.squeeze_excitation import SqueezeExcitation

__all__ = [
    "GATES", "AbsFormPReLU", "ConvolutionalBlockAttention", "DatasetClassifier", "GlobalNormAwarePooling", "GradientReversal", "SqueezeExcitation", "all_layers", "attention_gate",
]
