"""IResNet, the improved residual network of insightface's ArcFace (Deng et al., 2019)."""

import numbers

import keras

from kerasface.backbones.backbone_registry import BACKBONES
from kerasface.backbones.functional_backbone import FunctionalBackbone
from kerasface.backbones.conv_bn import batch_norm, conv_bn
from kerasface.backbones.embedding_neck import NECKS, embedding_neck

# Residual blocks per stage for each published depth (arcface_torch's iresnet18 ... iresnet200).
DEPTH_BLOCKS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}


@BACKBONES.register("iresnet50")
class IResNet(FunctionalBackbone):
    """IResNet: pre-activation-style residual blocks with PReLU and the "E" embedding neck.

    Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019,
    Sec. 3.2 / Fig. 7 (the improved residual unit BN-conv-BN-PReLU-conv-BN) and Sec. 3.2.2 (the
    "E" output: BN-Dropout-FC-BN), as implemented by insightface's arcface_torch. A stride-1
    3x3 stem keeps 112x112 input at full resolution, four stages halve it to 56/28/14/7, and
    the 7x7x512 map is flattened into a fully connected embedding layer. At 112x112 and D=512,
    iresnet50 is 43.6M parameters / 6.3 GMACs and iresnet100 65.2M / 12.1 GMACs (MACs of
    convolutions and the FC only, insightface's "GFLOPs"; parameters exclude BN moving statistics).

    Args:
        embedding_size: output dimension D.
        image_shape: (H, W, 3), static; 112x112 gives the 7x7 map of the paper.
        depth: 18, 34, 50, 100 or 200; picks the blocks per stage (``DEPTH_BLOCKS``).
        stage_blocks: residual blocks per stage, overriding ``depth``'s (e.g. (1, 1, 1, 1)
            for a tiny test model); None uses ``DEPTH_BLOCKS[depth]``.
        stage_channels: output channels of each stage; one entry per stage.
        stem_channels: channels of the 3x3 stem convolution.
        neck: embedding neck, one of ``embedding_neck.NECKS``; "e" is insightface's.
        dropout: dropout rate in the neck before the fully connected layer.
        **kwargs: passed to ``keras.Model`` (e.g. ``name``; default ``f"iresnet{depth}"``).

    Call arguments:
        images: float32 (B, H, W, 3) normalised pixels ``(x - 127.5) / 128``.
        training: BatchNormalization / Dropout mode.

    Returns:
        (B, embedding_size) float32 un-normalised embeddings.
    """

    def __init__(
        self,
        embedding_size=512,
        image_shape=(112, 112, 3),
        depth=50,
        stage_blocks=None,
        stage_channels=(64, 128, 256, 512),
        stem_channels=64,
        neck="e",
        dropout=0.0,
        **kwargs,
    ):
        if depth not in DEPTH_BLOCKS:
            raise ValueError(f"`depth` must be one of {tuple(DEPTH_BLOCKS)}, got {depth!r}")
        if not _is_int(embedding_size) or embedding_size < 1:
            raise ValueError(f"`embedding_size` must be an integer >= 1, got {embedding_size!r}")
        image_shape = tuple(image_shape)
        if len(image_shape) != 3 or not all(_is_int(v) and v >= 1 for v in image_shape) or image_shape[-1] != 3:
            raise ValueError(f"`image_shape` must be (H, W, 3) with static H, W >= 1, got {image_shape}")
        stage_channels = tuple(stage_channels)
        if not stage_channels or not all(_is_int(v) and v >= 1 for v in stage_channels):
            raise ValueError(f"`stage_channels` must be positive integers, got {stage_channels}")
        if stage_blocks is not None:
            stage_blocks = tuple(stage_blocks)
            if not all(_is_int(v) and v >= 1 for v in stage_blocks):
                raise ValueError(f"`stage_blocks` must be positive integers, got {stage_blocks}")
        blocks = DEPTH_BLOCKS[depth] if stage_blocks is None else stage_blocks
        if len(blocks) != len(stage_channels):
            raise ValueError(
                f"`stage_blocks` {blocks} and `stage_channels` {stage_channels} must have one entry per stage"
            )
        if not _is_int(stem_channels) or stem_channels < 1:
            raise ValueError(f"`stem_channels` must be an integer >= 1, got {stem_channels!r}")
        if neck not in NECKS:
            raise ValueError(f"`neck` must be one of {NECKS}, got {neck!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout}")
        image_shape = tuple(int(v) for v in image_shape)
        kwargs.setdefault("name", f"iresnet{depth}")

        images = keras.Input(image_shape, name="image")
        x = conv_bn(images, int(stem_channels), 3, name="stem")
        for stage, (repeats, channels) in enumerate(zip(blocks, stage_channels), start=1):
            for block in range(1, repeats + 1):
                # Every stage starts with a stride-2 block, the first one included (the stem
                # does not downsample): 112 -> 56 -> 28 -> 14 -> 7.
                x = _basic_block(x, int(channels), 2 if block == 1 else 1, name=f"stage{stage}_block{block}")
        embeddings = embedding_neck(x, neck, int(embedding_size), float(dropout))
        super().__init__(inputs=images, outputs=embeddings, **kwargs)

        self.embedding_size = int(embedding_size)
        self.image_shape = image_shape
        self.depth = int(depth)
        self.stage_blocks = None if stage_blocks is None else tuple(int(v) for v in stage_blocks)
        self.stage_channels = tuple(int(v) for v in stage_channels)
        self.stem_channels = int(stem_channels)
        self.neck = neck
        self.dropout = float(dropout)


BACKBONES.add_preset("iresnet18", "iresnet50", depth=18)
BACKBONES.add_preset("iresnet34", "iresnet50", depth=34)
BACKBONES.add_preset("iresnet100", "iresnet50", depth=100)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _basic_block(x, filters, stride, name):
    """IBasicBlock: BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus a shortcut."""
    shortcut = x
    x = batch_norm(x, name=f"{name}_bn1")
    x = conv_bn(x, filters, 3, name=f"{name}_conv1")
    if stride == 1:
        x = conv_bn(x, filters, 3, activation_kind=None, name=f"{name}_conv2")
    else:
        # PyTorch's symmetric pad of 1, not Keras "same" (which pads only bottom/right at
        # stride 2): window i is then centred on input pixel 2i, the pixel the strided 1x1
        # shortcut reads, and weights ported from arcface_torch give the same outputs.
        x = keras.layers.ZeroPadding2D(1, name=f"{name}_conv2_pad")(x)
        x = conv_bn(x, filters, 3, stride, activation_kind=None, padding="valid", name=f"{name}_conv2")
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = conv_bn(shortcut, filters, 1, stride, activation_kind=None, name=f"{name}_shortcut")
    return keras.layers.Add(name=f"{name}_add")([x, shortcut])
