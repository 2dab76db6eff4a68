"""MobileFaceNet (Chen et al., 2018) and its variants: width/depth, SE/CBAM attention, necks."""

import keras

from kerasface.backbones.backbone_registry import BACKBONES
from kerasface.backbones.functional_backbone import FunctionalBackbone
from kerasface.backbones.conv_bn import conv_bn
from kerasface.backbones.embedding_neck import NECKS, embedding_neck
from kerasface.layers.attention_gate import check_gate
from kerasface.layers.convolutional_block_attention import ConvolutionalBlockAttention
from kerasface.layers.squeeze_excitation import SqueezeExcitation

# (expansion t, output channels c, repeats n, first stride s): MobileFaceNet paper, Table 1.
PAPER_STAGES = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))

ATTENTIONS = (None, "se", "cbam")
EXPANSIONS = ("ratio", "channels")


@BACKBONES.register("mobilefacenet")
class MobileFaceNet(FunctionalBackbone):
    """MobileFaceNet: inverted-residual bottlenecks with PReLU and a global depthwise neck.

    Chen et al., "MobileFaceNets: Efficient CNNs for Accurate Real-Time Face Verification
    on Mobile Devices", 2018, Table 1: conv3x3(64, s2) -> depthwise conv3x3(64) ->
    bottlenecks -> conv1x1(512) -> linear GDC (7x7 depthwise) -> linear conv1x1(D) -> BN.
    At D=128 this is 0.99M parameters and 221M MACs, as in the paper (MACs: the
    multiply-accumulates of convolutions, insightface's "FLOPs").

    The same class builds the family: width/depth (``width_multiplier``, ``stages``),
    arcface_torch's "mbf" (absolute expansion channels, a grouped stem conv), SE or CBAM
    attention in every bottleneck (LFRC's SEResidual, AirFace's CBAM with 1 + tanh), and
    the GDC / GNAP / GAP / E necks. Every BatchNormalization is synchronized.

    Args:
        embedding_size: output dimension D (paper 128; insightface uses 512).
        image_shape: (H, W, 3); 112x112 gives the 7x7 map the GDC expects.
        stages: bottleneck stages as (t, c, n, s) tuples: the first of the n blocks has
            stride s, c output channels. Default: the paper's.
        width_multiplier: scales the stem and bottleneck channels (rounded to a multiple of
            8, at least 8); ``neck_channels`` and D are not scaled.
        expansion: ``"ratio"``: t multiplies a block's input channels (the paper);
            ``"channels"``: t is the depthwise conv's channel count itself (LFRC Table 1,
            arcface_torch's mbf).
        stem_channels: output channels of the first 3x3 stride-2 conv.
        stem_groups: the second stem conv (3x3, stride 1): ``"depthwise"`` (the paper), an
            int for a grouped conv (arcface_torch's mbf; exports to TFLite but not ONNX,
            see the mbf preset), or None for none (LFRC).
        neck_channels: the 1x1 conv before the neck (512 in the paper, 1024 in AirFace).
        neck: "gdc", "gnap", "gap" or "e" (see ``embedding_neck``).
        dropout: dropout before the neck's linear layer ("gap" and "e").
        attention: None, "se" (after the depthwise conv, on the expanded channels, as
            MobileNetV3 and LFRC Fig. 2c-d) or "cbam" (after the projection, before the
            residual add, as in the CBAM paper and AirFace).
        attention_reduction: channel reduction r of the attention MLP.
        attention_gate: "sigmoid", "hard_sigmoid" or "one_plus_tanh" (AirFace).
        **kwargs: passed to ``keras.Model`` (e.g. ``name``).

    Call arguments:
        images: float32 (B, H, W, 3) normalised pixels ``(x - 127.5) / 128``.

    Returns:
        (B, embedding_size) float32 un-normalised embeddings.
    """

    def __init__(
        self,
        embedding_size=512,
        image_shape=(112, 112, 3),
        stages=PAPER_STAGES,
        width_multiplier=1.0,
        expansion="ratio",
        stem_channels=64,
        stem_groups="depthwise",
        neck_channels=512,
        neck="gdc",
        dropout=0.0,
        attention=None,
        attention_reduction=4,
        attention_gate="sigmoid",
        **kwargs,
    ):
        image_shape = tuple(int(v) for v in image_shape)
        stages = tuple(tuple(int(v) for v in stage) for stage in stages)
        _validate(embedding_size, image_shape, stages, width_multiplier, expansion, stem_groups, neck, attention)
        check_gate(attention_gate)

        def width(channels):
            return max(8, int(round(channels * width_multiplier / 8)) * 8)

        block_options = {
            "expansion": expansion,
            "attention": attention,
            "attention_reduction": attention_reduction,
            "attention_gate": attention_gate,
        }
        images = keras.Input(image_shape, name="image")
        x = conv_bn(images, width(stem_channels), 3, 2, name="stem_conv")
        if stem_groups == "depthwise":
            x = conv_bn(x, None, 3, 1, depthwise=True, name="stem_dwconv")
        elif stem_groups is not None:
            x = conv_bn(x, x.shape[-1], 3, 1, groups=int(stem_groups), name="stem_gconv")
        block = 0
        for expand, channels, repeats, stride in stages:
            for i in range(repeats):
                expand_to = width(expand) if expansion == "channels" else expand
                x = _bottleneck(
                    x, expand_to, width(channels), stride if i == 0 else 1, name=f"block{block}", **block_options
                )
                block += 1
        x = conv_bn(x, int(neck_channels), 1, 1, name="conv_1x1")
        embeddings = embedding_neck(x, neck, int(embedding_size), dropout=float(dropout), name="neck")
        super().__init__(inputs=images, outputs=embeddings, **kwargs)

        self.embedding_size = int(embedding_size)
        self.image_shape = image_shape
        self.stages = stages
        self.width_multiplier = float(width_multiplier)
        self.expansion = expansion
        self.stem_channels = int(stem_channels)
        self.stem_groups = stem_groups if stem_groups in (None, "depthwise") else int(stem_groups)
        self.neck_channels = int(neck_channels)
        self.neck = neck
        self.dropout = float(dropout)
        self.attention = attention
        self.attention_reduction = int(attention_reduction)
        self.attention_gate = attention_gate


def _validate(embedding_size, image_shape, stages, width_multiplier, expansion, stem_groups, neck, attention):
    if embedding_size < 1:
        raise ValueError(f"`embedding_size` must be >= 1, got {embedding_size}")
    if len(image_shape) != 3 or image_shape[-1] != 3:
        raise ValueError(f"`image_shape` must be (H, W, 3), got {image_shape}")
    if not stages or any(len(stage) != 4 or min(stage) < 1 for stage in stages):
        raise ValueError(f"`stages` must be non-empty (t, c, n, s) tuples of positive ints, got {stages}")
    if not width_multiplier > 0:
        raise ValueError(f"`width_multiplier` must be > 0, got {width_multiplier}")
    if expansion not in EXPANSIONS:
        raise ValueError(f"`expansion` must be one of {EXPANSIONS}, got {expansion!r}")
    if not (stem_groups in (None, "depthwise") or (isinstance(stem_groups, int) and stem_groups >= 1)):
        raise ValueError(f"`stem_groups` must be 'depthwise', None or an int >= 1, got {stem_groups!r}")
    if neck not in NECKS:
        raise ValueError(f"`neck` must be one of {NECKS}, got {neck!r}")
    if attention not in ATTENTIONS:
        raise ValueError(f"`attention` must be one of {ATTENTIONS}, got {attention!r}")


def _bottleneck(x, expand, filters, stride, name, expansion, attention, attention_reduction, attention_gate):
    in_channels = x.shape[-1]
    shortcut = x
    hidden = in_channels * expand if expansion == "ratio" else expand
    x = conv_bn(x, hidden, 1, 1, name=f"{name}_expand")
    x = conv_bn(x, None, 3, stride, depthwise=True, name=f"{name}_depthwise")
    if attention == "se":
        x = SqueezeExcitation(attention_reduction, gate=attention_gate, name=f"{name}_se")(x)
    # Linear projection: a ReLU-family activation here destroys information in the
    # low-dimensional manifold (MobileNetV2's linear bottleneck).
    x = conv_bn(x, filters, 1, 1, activation_kind=None, name=f"{name}_project")
    if attention == "cbam":
        x = ConvolutionalBlockAttention(attention_reduction, gate=attention_gate, name=f"{name}_cbam")(x)
    if stride == 1 and in_channels == filters:
        x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return x


# SE / CBAM variants of the paper network (the attention modules of LFRC and AirFace on
# the original MobileFaceNet, for like-for-like comparisons).
BACKBONES.add_preset("mobilefacenet_se", "mobilefacenet", attention="se", attention_reduction=4)
BACKBONES.add_preset("mobilefacenet_cbam", "mobilefacenet", attention="cbam", attention_reduction=16)
# arcface_torch's "mbf" (get_mbf: blocks (1, 4, 6, 2), scale 2): the paper's depth at twice the
# width with fixed depthwise widths 128/256/512/256. arcface_torch's second stem conv is grouped
# (64 groups of 2 channels); here it is depthwise (128 groups of 1, 1152 fewer weights), because
# Keras' TensorFlow backend runs grouped convolutions through XLA, which tf2onnx cannot export.
BACKBONES.add_preset(
    "mobilefacenet_mbf",
    "mobilefacenet",
    stem_channels=128,
    expansion="channels",
    stages=((128, 128, 1, 2), (128, 128, 4, 1), (256, 256, 1, 2), (256, 256, 6, 1), (512, 256, 1, 2), (256, 256, 2, 1)),
)
