"""The embedding neck: the last feature map -> a D-dimensional face embedding."""

import keras

from kerasface.backbones.conv_bn import batch_norm, conv_bn
from kerasface.layers.global_norm_aware_pooling import GlobalNormAwarePooling

NECKS = ("gdc", "gnap", "gap", "e")


def embedding_neck(x, neck, embedding_size, dropout=0.0, name="neck"):
    """Maps an (B, H, W, C) feature map to (B, embedding_size) float32 embeddings.

    Necks (insightface's ``fc1`` types):
        * ``"gdc"``: global depthwise conv (an HxW depthwise kernel, BN) -> linear 1x1 conv
          to D -> BN. MobileFaceNet Sec. 3.1: it learns a weight per position, which faces
          (aligned, not translation invariant) need and global average pooling lacks.
        * ``"gnap"``: global norm-aware pooling (``GlobalNormAwarePooling``) -> BN, then a
          linear layer -> BN when D differs from C (insightface's GNAP block).
        * ``"gap"``: global average pooling -> dropout -> linear -> BN.
        * ``"e"``: BN -> dropout -> flatten -> fully connected -> BN without a learned scale;
          the IResNet/ArcFace neck and LATSE Sec. 4.1's "BN, Dropout, FC, BN".

    Args:
        x: NHWC feature map (static H, W).
        neck: one of ``NECKS``.
        embedding_size: D.
        dropout: dropout rate before the linear layer ("gap", "e"; ignored by "gdc" and "gnap").
        name: layer name prefix.

    Returns:
        (B, D) float32 embeddings, un-normalised; the last layer is named ``"embedding"``.
    """
    if neck not in NECKS:
        raise ValueError(f"`neck` must be one of {NECKS}, got {neck!r}")
    if embedding_size < 1:
        raise ValueError(f"`embedding_size` must be >= 1, got {embedding_size}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1), got {dropout}")
    if neck == "gdc":
        spatial = tuple(int(v) for v in x.shape[1:3])
        x = conv_bn(x, None, spatial, depthwise=True, activation_kind=None, padding="valid", name=f"{name}_gdc")
        x = keras.layers.Conv2D(embedding_size, 1, use_bias=False, name=f"{name}_linear")(x)
        x = batch_norm(x, name=f"{name}_bn")
    elif neck == "gnap":
        x = GlobalNormAwarePooling(name=f"{name}_gnap")(x)
        x = batch_norm(x, name=f"{name}_gnap_bn")
        if embedding_size != x.shape[-1]:
            x = keras.layers.Dense(embedding_size, use_bias=False, name=f"{name}_linear")(x)
            x = batch_norm(x, name=f"{name}_bn")
    elif neck == "gap":
        x = keras.layers.GlobalAveragePooling2D(name=f"{name}_gap")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
        x = keras.layers.Dense(embedding_size, use_bias=False, name=f"{name}_linear")(x)
        x = batch_norm(x, name=f"{name}_bn")
    else:
        x = batch_norm(x, name=f"{name}_input_bn")
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
        x = keras.layers.Flatten(name=f"{name}_flatten")(x)
        x = keras.layers.Dense(embedding_size, name=f"{name}_fc")(x)
        # No learned scale on the embedding BN (arcface_torch fixes it to 1): the margin head
        # normalises anyway, and a free scale only drifts.
        x = batch_norm(x, name=f"{name}_bn", scale=False)
    # float32 embeddings under mixed precision: they are compared by cosine downstream.
    return keras.layers.Flatten(name="embedding", dtype="float32")(x)


