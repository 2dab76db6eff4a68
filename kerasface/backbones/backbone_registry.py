"""The registry behind ``kerasface.backbones.get``/``list``/``register``."""

from kerasface.registry import Registry

BACKBONES = Registry("backbone")
