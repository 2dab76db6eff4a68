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

    def register(self, name):
        def decorator(cls):
            if name in self._classes:
                raise ValueError(f"{self.kind} {name!r} is already registered to {self._classes[name]}")
            keras.saving.register_keras_serializable(package="kerasface")(cls)
            self._classes[name] = cls
            cls.registry_name = name
            return cls

        return decorator

    def get_class(self, name):
        try:
            return self._classes[name]
        except KeyError:
            raise ValueError(
                f"Unknown {self.kind} {name!r}; available: {', '.join(sorted(self._classes))}"
            ) from None

    def get(self, name, **kwargs):
        return self.get_class(name)(**kwargs)

    def list(self):
        return sorted(self._classes)

    def __contains__(self, name):
        return name in self._classes
