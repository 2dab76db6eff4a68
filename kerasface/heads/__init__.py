"""Margin heads: ``get(name, num_classes=..., **kwargs)``, ``list()``, ``register(name)``."""

from kerasface.heads.head_registry import HEADS
from kerasface.heads.margin_head import MarginHead
from kerasface.heads.normface_head import NormFaceHead
from kerasface.heads.cosface_head import CosFaceHead
from kerasface.heads.arcface_head import ArcFaceHead

register = HEADS.register
get = HEADS.get
get_class = HEADS.get_class


def list():  # noqa: A001 - mirrors timm/keras-hub registries
    return HEADS.list()


__all__ = ["ArcFaceHead", "CosFaceHead", "MarginHead", "NormFaceHead", "get", "get_class", "list", "register"]
