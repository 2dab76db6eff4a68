"""Building-block layers: attention, pooling, DAIL's gradient reversal, LATSE's mean images."""

from kerasface.layers.abs_form_prelu import AbsFormPReLU
from kerasface.layers.all_layers import all_layers
from kerasface.layers.attention_gate import GATES, attention_gate
from kerasface.layers.convolutional_block_attention import ConvolutionalBlockAttention
from kerasface.layers.dataset_classifier import DatasetClassifier
from kerasface.layers.global_norm_aware_pooling import GlobalNormAwarePooling
from kerasface.layers.gradient_reversal import GradientReversal
from kerasface.layers.identity_mean_images import IdentityMeanImages
from kerasface.layers.squeeze_excitation import SqueezeExcitation

__all__ = [
    "GATES", "AbsFormPReLU", "ConvolutionalBlockAttention", "DatasetClassifier", "GlobalNormAwarePooling", "GradientReversal", "IdentityMeanImages", "SqueezeExcitation", "all_layers", "attention_gate",
]
