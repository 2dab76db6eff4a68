"""MobileNetV1 (Howard et al., 2017) as a face embedding backbone."""

import keras

from kerasface.backbones.backbone_registry import BACKBONES
from kerasface.backbones.functional_backbone import FunctionalBackbone
from kerasface.backbones.conv_bn import conv_bn
from kerasface.backbones.embedding_neck import NECKS, embedding_neck

STEM_CHANNELS = 32
# (output channels, stride) of the 13 depthwise-separable blocks: MobileNetV1 paper, Table 1.
PAPER_BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
BODY_ACTIVATIONS = ("prelu", "relu")


def scaled_channels(channels, width_multiplier):
    """``channels * width_multiplier`` rounded half up to a multiple of 8, at least 8."""
    return max(8, int(channels * width_multiplier / 8 + 0.5) * 8)


@BACKBONES.register("mobilenet_v1")
class MobileNetV1(FunctionalBackbone):
    """MobileNetV1: a 3x3 stem and 13 depthwise-separable blocks, with a face embedding neck.

    Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
    Applications", 2017, Table 1: conv3x3(32, s2), then 13 blocks of depthwise conv3x3 ->
    BN -> activation -> pointwise conv1x1 -> BN -> activation with channels/strides 64,
    128 s2, 128, 256 s2, 256, 512 s2, 5x512, 1024 s2, 1024. The ImageNet head (average
    pool + FC) is replaced by ``embedding_neck`` (GDC by default: a 112x112 input leaves a
    4x4 map after the five stride-2 layers with "same" padding). DAIL (Sec. IV) trains this
    network with a 128-d embedding. Activation defaults to PReLU as in insightface's face
    MobileNet; the paper's ReLU is ``activation="relu"``. Every BatchNormalization is
    synchronized. At D=128, 112x112 (GDC neck): 3.37M trainable parameters, 148M MACs.

    Args:
        embedding_size: output dimension D (DAIL: 128).
        image_shape: (H, W, 3) input shape.
        width_multiplier: the paper's alpha; scales every channel count (rounded half up to
            a multiple of 8, at least 8).
        blocks: the depthwise-separable blocks as (output channels, stride) pairs; default
            the paper's 13 (``PAPER_BLOCKS``). Fewer blocks make tiny test models.
        neck: embedding neck, one of ``embedding_neck.NECKS`` ("gdc", "gnap", "gap", "e").
        dropout: dropout rate before the neck's linear layer ("gap" and "e" necks only).
        activation: "prelu" (one slope per channel) or "relu" (the paper's ImageNet net).
        **kwargs: passed to ``keras.Model`` (e.g. ``name``).

    Call arguments:
        images: float32 (B, H, W, 3) normalised pixels ``(x - 127.5) / 128``.
        training: BN batch statistics and dropout when True.

    Returns:
        (B, embedding_size) float32 un-normalised embeddings.
    """

    def __init__(
        self,
        embedding_size=128,
        image_shape=(112, 112, 3),
        width_multiplier=1.0,
        blocks=PAPER_BLOCKS,
        neck="gdc",
        dropout=0.0,
        activation="prelu",
        **kwargs,
    ):
        image_shape = tuple(int(v) for v in image_shape)
        try:
            blocks = tuple((int(channels), int(stride)) for channels, stride in blocks)
        except (TypeError, ValueError):
            raise ValueError(f"`blocks` must be (channels, stride) pairs, got {blocks!r}") from None
        if not blocks or any(channels < 1 or stride not in (1, 2) for channels, stride in blocks):
            raise ValueError(f"`blocks` must be a non-empty tuple of (channels >= 1, stride 1 or 2), got {blocks}")
        if embedding_size < 1:
            raise ValueError(f"`embedding_size` must be >= 1, got {embedding_size}")
        if len(image_shape) != 3 or image_shape[-1] != 3:
            raise ValueError(f"`image_shape` must be (H, W, 3), got {image_shape}")
        if min(image_shape[:2]) < 1:
            raise ValueError(f"`image_shape` must have H, W >= 1, got {image_shape}")
        if not width_multiplier > 0:
            raise ValueError(f"`width_multiplier` must be > 0, got {width_multiplier}")
        if neck not in NECKS:
            raise ValueError(f"`neck` must be one of {NECKS}, got {neck!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout}")
        if activation not in BODY_ACTIVATIONS:
            raise ValueError(f"`activation` must be one of {BODY_ACTIVATIONS}, got {activation!r}")

        images = keras.Input(image_shape, name="image")
        x = conv_bn(
            images, scaled_channels(STEM_CHANNELS, width_multiplier), 3, 2, activation_kind=activation, name="stem"
        )
        for index, (channels, stride) in enumerate(blocks, start=1):
            x = conv_bn(x, None, 3, stride, depthwise=True, activation_kind=activation, name=f"block{index}_depthwise")
            x = conv_bn(
                x,
                scaled_channels(channels, width_multiplier),
                1,
                activation_kind=activation,
                name=f"block{index}_pointwise",
            )
        embeddings = embedding_neck(x, neck, int(embedding_size), dropout=dropout, name="neck")
        super().__init__(inputs=images, outputs=embeddings, **kwargs)

        self.embedding_size = int(embedding_size)
        self.image_shape = image_shape
        self.width_multiplier = float(width_multiplier)
        self.blocks = blocks
        self.neck = neck
        self.dropout = float(dropout)
        self.activation = activation
