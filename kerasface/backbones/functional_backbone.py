"""The base class of the backbones: a functional model whose config is its constructor arguments."""

import inspect

import keras


class FunctionalBackbone(keras.Model):
    """A functional ``keras.Model`` built in ``__init__``, serialised by its constructor arguments.

    A subclass builds its graph in ``__init__``, calls
    ``super().__init__(inputs=..., outputs=..., **kwargs)`` and then stores every constructor
    argument as a public attribute of the same name. ``get_config`` reads the arguments back
    by the constructor's signature, so none can be left out of the config (a missing
    attribute is an AttributeError naming it, caught by the serialization check), and
    ``from_config`` rebuilds the model from them.
    """

    def get_config(self):
        parameters = inspect.signature(type(self).__init__).parameters.values()
        names = [p.name for p in parameters if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD]
        return {"name": self.name, "trainable": self.trainable, **{name: getattr(self, name) for name in names}}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
