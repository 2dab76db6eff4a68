"""MobileFaceNet (Chen et al., 2018)."""

import keras

from kerasface.backbones.backbone_registry import BACKBONES

# (expansion t, output channels c, repeats n, first stride s): MobileFaceNet paper, Table 1.
PAPER_STAGES = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))

# PyTorch-style BN (momentum 0.1 there is 0.9 here): short face runs need statistics that settle fast.
_BN = {"momentum": 0.9, "epsilon": 1e-5, "synchronized": True}


@BACKBONES.register("mobilefacenet")
class MobileFaceNet(keras.Model):
    """MobileFaceNet: inverted-residual bottlenecks with PReLU and a global depthwise neck.

    Chen et al., "MobileFaceNets: Efficient CNNs for Accurate Real-Time Face
    Verification on Mobile Devices", 2018, Table 1: conv3x3(64, s2) -> depthwise
    conv3x3(64) -> bottlenecks -> conv1x1(512) -> linear GDC (7x7 depthwise) -> linear
    conv1x1(D) -> BN. Every BatchNormalization is synchronized so MirroredStrategy replicas
    agree on the statistics. At D=128 this is 0.99M parameters and 221M MACs, as in the
    paper (MACs counted per insightface convention: multiply-accumulates of convs only).

    Args:
        embedding_size: output dimension D (paper 128; insightface uses 512).
        image_shape: (H, W, 3); 112x112 gives the 7x7 map the GDC expects.
        stages: bottleneck stages as (t, c, n, s) tuples; default is the paper's.
        width_multiplier: scales every channel count (rounded to a multiple of 8).
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
        **kwargs,
    ):
        image_shape = tuple(int(v) for v in image_shape)
        stages = tuple(tuple(int(v) for v in stage) for stage in stages)
        if embedding_size < 1:
            raise ValueError(f"`embedding_size` must be >= 1, got {embedding_size}")
        if len(image_shape) != 3 or image_shape[-1] != 3:
            raise ValueError(f"`image_shape` must be (H, W, 3), got {image_shape}")

        def width(channels):
            return max(8, int(round(channels * width_multiplier / 8)) * 8)

        images = keras.Input(image_shape, name="image")
        x = _conv_bn(images, width(64), 3, 2, name="stem_conv")
        x = _conv_bn(x, width(64), 3, 1, depthwise=True, name="stem_dwconv")
        block = 0
        for expansion, channels, repeats, stride in stages:
            for i in range(repeats):
                x = _bottleneck(x, expansion, width(channels), stride if i == 0 else 1, name=f"block{block}")
                block += 1
        x = _conv_bn(x, width(512), 1, 1, name="conv_1x1")
        spatial = tuple(int(v) for v in x.shape[1:3])
        # GDC: a linear depthwise conv over the whole map weights each position (a face is not
        # translation invariant, so global average pooling loses accuracy; paper Sec. 3.1).
        x = _conv_bn(x, None, spatial, 1, depthwise=True, activation=False, padding="valid", name="gdc")
        x = keras.layers.Conv2D(embedding_size, 1, use_bias=False, name="embedding_conv")(x)
        x = keras.layers.BatchNormalization(**_BN, name="embedding_bn")(x)
        # float32 embeddings under mixed precision: they are compared by cosine downstream.
        embeddings = keras.layers.Flatten(name="embedding", dtype="float32")(x)
        super().__init__(inputs=images, outputs=embeddings, **kwargs)

        self.embedding_size = int(embedding_size)
        self.image_shape = image_shape
        self.stages = stages
        self.width_multiplier = float(width_multiplier)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "embedding_size": self.embedding_size,
            "image_shape": self.image_shape,
            "stages": self.stages,
            "width_multiplier": self.width_multiplier,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _conv_bn(x, filters, kernel_size, strides, depthwise=False, activation=True, padding="same", name=None):
    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel_size, strides, padding=padding, use_bias=False, name=f"{name}_dw")(x)
    else:
        x = keras.layers.Conv2D(filters, kernel_size, strides, padding=padding, use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(**_BN, name=f"{name}_bn")(x)
    if activation:
        x = keras.layers.PReLU(shared_axes=[1, 2], name=f"{name}_prelu")(x)
    return x


def _bottleneck(x, expansion, filters, stride, name):
    in_channels = x.shape[-1]
    shortcut = x
    x = _conv_bn(x, in_channels * expansion, 1, 1, name=f"{name}_expand")
    x = _conv_bn(x, None, 3, stride, depthwise=True, name=f"{name}_depthwise")
    # Linear projection: a ReLU-family activation here destroys information in the
    # low-dimensional manifold (MobileNetV2's linear bottleneck).
    x = _conv_bn(x, filters, 1, 1, activation=False, name=f"{name}_project")
    if stride == 1 and in_channels == filters:
        x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return x
