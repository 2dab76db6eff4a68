"""Name -> class registries that also register classes for Keras serialization."""

import keras


class Registry:
    """A named collection of classes (heads, backbones, ...).

    One decorator does both jobs: ``@registry.register("arcface")`` adds the class under
    that name and registers it with ``keras.saving`` so ``.keras`` files reload it.

    Args:
        kind: what the registry holds, used in error messages ("head", "backbone").
    """

    def __init__(self, kind):
        self.kind = kind
        self._classes = {}
        self._presets = {}

    def register(self, name):
        def decorator(cls):
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is already registered to {self._classes[name]}")
            keras.saving.register_keras_serializable(package="kerasface")(cls)
            self._classes[name] = cls
            cls.registry_name = name
            return cls

        return decorator

    def add_preset(self, name, registered_name, **defaults):
        """A named configuration of a registered class: ``get(name, **kw)`` builds
        ``cls(**{**defaults, **kw})`` (timm's model entry points). ``.keras`` files store
        the class and its full config, so a preset needs no serialization of its own."""
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self.get_class(registered_name)
        self._presets[name] = (registered_name, dict(defaults))

    def preset_defaults(self, name):
        """The keyword arguments a preset passes to its class (``{}`` for a class name)."""
        self._check_known(name)
        return dict(self._presets[name][1]) if name in self._presets else {}

    def get_class(self, name):
        self._check_known(name)
        if name in self._presets:
            name = self._presets[name][0]
        return self._classes[name]

    def get(self, name, **kwargs):
        return self.get_class(name)(**{**self.preset_defaults(name), **kwargs})

    def list(self):
        return sorted([*self._classes, *self._presets])

    def __contains__(self, name):
        return name in self._classes or name in self._presets

    def _check_known(self, name):
        if name not in self:
            raise ValueError(f"Unknown {self.kind} {name!r}; available: {', '.join(self.list())}")
