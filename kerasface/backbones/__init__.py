"""Backbones: ``get(name, embedding_size=..., **kwargs)``, ``list()``, ``register(name)``."""

from kerasface.backbones.backbone_registry import BACKBONES
from kerasface.backbones.mobilefacenet import MobileFaceNet

register = BACKBONES.register
get = BACKBONES.get
get_class = BACKBONES.get_class


def list():  # noqa: A001 - mirrors timm/keras-hub registries
    return BACKBONES.list()


__all__ = ["MobileFaceNet", "get", "get_class", "list", "register"]
