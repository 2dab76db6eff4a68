"""Backbones: ``get(name, embedding_size=..., **kwargs)``, ``list()``, ``register(name)``.

Registered classes and presets (named configurations of a class, as timm's entry points):
MobileFaceNet and its SE/CBAM/mbf variants, AirFace, LFRC's SE-MobileFaceNet (and its
Table 2 steps), MobileNetV1, IResNet-18/34/50/100 and the LATSE decoder.
"""

from kerasface.backbones.backbone_registry import BACKBONES
from kerasface.backbones.mobilefacenet import MobileFaceNet
from kerasface.backbones.iresnet import IResNet
from kerasface.backbones.mobilenet_v1 import MobileNetV1
from kerasface.backbones.resnet_decoder import ResNetDecoder
from kerasface.backbones import airface, lfrc_se_mobilefacenet  # noqa: F401 - registers presets

register = BACKBONES.register
add_preset = BACKBONES.add_preset
get = BACKBONES.get
get_class = BACKBONES.get_class
preset_defaults = BACKBONES.preset_defaults


def list():  # noqa: A001 - mirrors timm/keras-hub registries
    return BACKBONES.list()


__all__ = ["IResNet", "MobileFaceNet", "MobileNetV1", "ResNetDecoder", "add_preset", "get", "get_class", "list", "preset_defaults", "register"]
