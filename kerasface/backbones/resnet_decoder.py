"""The LATSE generative decoder: a reversed ResNet-18 from face embeddings to face images."""

import keras

from kerasface.backbones.backbone_registry import BACKBONES
from kerasface.backbones.functional_backbone import FunctionalBackbone
from kerasface.backbones.conv_bn import activation, batch_norm, conv_bn

OUTPUT_ACTIVATIONS = ("tanh", "sigmoid")


@BACKBONES.register("latse_decoder")
class ResNetDecoder(FunctionalBackbone):
    """Reversed ResNet-18 that maps face embeddings to images, upsampling with transposed convs.

    LATSE (Linear-Auto-TS-Encoder), Sec. 3.2 and 4.1: "a reversed ResNet-18 with
    deconvolution layer to up-sample feature map" restores a frontal face from the
    embedding, supervised by GLoss = L1 + (1 - SSIM) / 2 (Eq. 13-14). Structure: Dense to
    (H/2^S, W/2^S, C_0) -> BN -> PReLU, where S = ``len(stage_channels)``; S stages of
    basic blocks (conv3x3-BN-PReLU-conv3x3-BN + shortcut, PReLU after the add); every stage
    after the first opens with an upsampling block whose first conv is a stride-2
    ``Conv2DTranspose`` and whose shortcut is a stride-2 1x1 ``Conv2DTranspose`` + BN; then
    the reversed stem (stride-2 ``Conv2DTranspose`` 3x3 -> BN -> PReLU) and a conv3x3 with
    bias to 3 channels -> ``output_activation``. For 112x112: 7 -> 14 -> 28 -> 56 -> 112.
    Every BatchNormalization is synchronized. At D=512, 112x112: 26.4M trainable parameters
    (12.8M of them in the Dense), 1.85G MACs (a transposed conv counted per input pixel).

    Args:
        embedding_size: input dimension D.
        image_shape: (H, W, 3) output shape; H and W divisible by 2 ** len(stage_channels).
        stage_blocks: basic blocks per stage, from the smallest map up (ResNet-18: 2 each).
        stage_channels: channels per stage, from the smallest map up; the last one is also
            the width of the reversed stem.
        output_activation: "tanh" (images in [-1, 1], about the ``(x - 127.5) / 128``
            network input) or "sigmoid" ([0, 1]).
        **kwargs: passed to ``keras.Model`` (e.g. ``name``).

    Call arguments:
        embeddings: float32 (B, embedding_size) face embeddings (input named "embedding").
        training: BN batch statistics when True.

    Returns:
        (B, H, W, 3) float32 images (last layer "image"), float32 also under mixed precision.
    """

    def __init__(
        self,
        embedding_size=512,
        image_shape=(112, 112, 3),
        stage_blocks=(2, 2, 2, 2),
        stage_channels=(512, 256, 128, 64),
        output_activation="tanh",
        **kwargs,
    ):
        image_shape = tuple(int(v) for v in image_shape)
        stage_blocks = tuple(int(v) for v in stage_blocks)
        stage_channels = tuple(int(v) for v in stage_channels)
        if embedding_size < 1:
            raise ValueError(f"`embedding_size` must be >= 1, got {embedding_size}")
        if not stage_channels or min(stage_channels) < 1:
            raise ValueError(f"`stage_channels` must be a non-empty tuple of ints >= 1, got {stage_channels}")
        if len(stage_blocks) != len(stage_channels) or min(stage_blocks) < 1:
            raise ValueError(
                f"`stage_blocks` must give one block count >= 1 per stage of `stage_channels` "
                f"({len(stage_channels)} stages), got {stage_blocks}"
            )
        # One x2 upsampling per stage after the first, plus the reversed stem.
        factor = 2 ** len(stage_channels)
        if len(image_shape) != 3 or image_shape[-1] != 3:
            raise ValueError(f"`image_shape` must be (H, W, 3), got {image_shape}")
        if min(image_shape[:2]) < factor or image_shape[0] % factor or image_shape[1] % factor:
            raise ValueError(
                f"`image_shape` H and W must be positive multiples of {factor} (2 ** {len(stage_channels)} "
                f"upsamplings), got {image_shape}"
            )
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"`output_activation` must be one of {OUTPUT_ACTIVATIONS}, got {output_activation!r}")

        height, width = image_shape[0] // factor, image_shape[1] // factor
        embeddings = keras.Input((int(embedding_size),), name="embedding")
        # No bias: the BN right after it has its own shift.
        x = keras.layers.Dense(height * width * stage_channels[0], use_bias=False, name="project_dense")(embeddings)
        x = keras.layers.Reshape((height, width, stage_channels[0]), name="project_reshape")(x)
        x = batch_norm(x, name="project_bn")
        x = activation(x, "prelu", name="project_act")
        for stage, (blocks, channels) in enumerate(zip(stage_blocks, stage_channels), start=1):
            for block in range(1, blocks + 1):
                upsample = stage > 1 and block == 1
                x = _basic_block(x, channels, upsample, name=f"stage{stage}_block{block}")
        x = _deconv_bn(x, stage_channels[-1], 3, name="stem")
        x = activation(x, "prelu", name="stem_act")
        x = keras.layers.Conv2D(image_shape[-1], 3, padding="same", name="output_conv")(x)
        # float32 images under mixed precision: the pixel losses (L1, SSIM) compare them to float32 targets.
        images = keras.layers.Activation(output_activation, dtype="float32", name="image")(x)
        super().__init__(inputs=embeddings, outputs=images, **kwargs)

        self.embedding_size = int(embedding_size)
        self.image_shape = image_shape
        self.stage_blocks = stage_blocks
        self.stage_channels = stage_channels
        self.output_activation = output_activation


def _deconv_bn(x, filters, kernel_size, name):
    """Stride-2 ``Conv2DTranspose`` (no bias) doubling H and W -> synchronized BN.

    Layers ``{name}_deconv``, ``{name}_bn`` (and ``{name}_pad`` for a 1x1 kernel).
    """
    if kernel_size == 1:
        # Keras' default output size 2n is the natural (n - 1) * 2 + 1 of a 1x1 kernel plus one
        # row/column of padding -1, which tf2onnx writes as negative ConvTranspose pads that
        # ONNX Runtime rejects. output_padding=0 keeps the natural 2n - 1 (input pixels on the
        # even positions); a zero row and column at the end give the same 2n map with a Pad op.
        x = keras.layers.Conv2DTranspose(
            filters, 1, strides=2, padding="valid", output_padding=0, use_bias=False, name=f"{name}_deconv"
        )(x)
        x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_pad")(x)
    else:
        x = keras.layers.Conv2DTranspose(
            filters, kernel_size, strides=2, padding="same", use_bias=False, name=f"{name}_deconv"
        )(x)
    return batch_norm(x, name=f"{name}_bn")


def _basic_block(x, filters, upsample, name):
    """ResNet basic block; ``upsample`` doubles H and W with transposed convs (main path and shortcut)."""
    if upsample:
        shortcut = _deconv_bn(x, filters, 1, name=f"{name}_shortcut")
        y = _deconv_bn(x, filters, 3, name=f"{name}_conv1")
        y = activation(y, "prelu", name=f"{name}_conv1_act")
    else:
        # Identity: a block that does not upsample keeps its stage's width (the Dense
        # produces stage_channels[0], each upsampling block sets the next stage's).
        shortcut = x
        y = conv_bn(x, filters, 3, name=f"{name}_conv1")
    y = conv_bn(y, filters, 3, activation_kind=None, name=f"{name}_conv2")
    x = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return activation(x, "prelu", name=f"{name}_act")
