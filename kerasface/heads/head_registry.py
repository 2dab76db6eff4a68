"""The registry behind ``kerasface.heads.get``/``list``/``register``."""

from kerasface.registry import Registry

HEADS = Registry("head")
