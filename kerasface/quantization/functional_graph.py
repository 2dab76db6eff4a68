"""Rebuild a functional Keras model layer by layer, inlining nested functional models."""

import keras


def is_functional(layer):
    """Whether ``layer`` is a functional model whose graph can be walked (not Sequential/subclassed)."""
    return isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth") and bool(
        getattr(layer, "_nodes_by_depth", None)
    ) and not isinstance(layer, keras.Sequential)


def rebuild_functional(model, call_layer, input_fn=None, name=None):
    """A new flat functional model: every layer call of ``model`` replaced by ``call_layer``.

    Nested functional models (a backbone inside an embedding model) are inlined, so the
    result holds leaf layers only, in the order their calls appear in the graph.

    Args:
        model: a functional ``keras.Model``.
        call_layer: ``call_layer(layer, *args, **kwargs) -> outputs`` for each leaf layer
            call, given the rebuilt symbolic inputs of that call; it returns new symbolic
            outputs (typically a fresh layer applied to ``args``).
        input_fn: optional ``input_fn(symbolic_input) -> tensor`` applied to each new
            model input before the graph (e.g. a fake-quant layer).
        name: the new model's name; default ``model.name``.

    Returns:
        the new ``keras.Model``.
    """
    if not is_functional(model):
        raise ValueError(
            f"model {getattr(model, 'name', model)!r} ({type(model).__name__}) is not a functional Keras "
            f"model; quantisation rebuilds the layer graph and needs keras.Model(inputs, outputs)"
        )
    inputs = [
        keras.Input(shape=tuple(x.shape[1:]), dtype=x.dtype, name=_input_name(x, i)) for i, x in enumerate(model.inputs)
    ]
    first = [input_fn(x) for x in inputs] if input_fn is not None else list(inputs)
    outputs = _run(model, first if len(first) > 1 else first[0], call_layer)
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs, name=name or model.name)


def _input_name(tensor, index):
    name = getattr(tensor, "name", None) or f"input_{index}"
    return name.split(":")[0]


def _run(model, inputs, call_layer):
    def operation_fn(operation):
        if is_functional(operation):
            # Training/mask kwargs of a nested call are dropped: the rebuilt graph is
            # called as a whole, and leaf layers get the call's own kwargs.
            return lambda *args, **kwargs: _run(operation, args[0] if len(args) == 1 else list(args), call_layer)
        if isinstance(operation, keras.Model):
            raise ValueError(
                f"nested model {operation.name!r} ({type(operation).__name__}) is not functional; "
                f"only functional sub-models can be rebuilt"
            )
        return lambda *args, **kwargs: call_layer(operation, *args, **kwargs)

    return model._run_through_graph(inputs, operation_fn=operation_fn)


def clone_layer(layer, *args, **kwargs):
    """A fresh copy of ``layer`` (same config and weights, no shared variables) applied to ``args``."""
    clone = layer.__class__.from_config(layer.get_config())
    outputs = clone(*args, **kwargs)
    clone.set_weights(layer.get_weights())
    return outputs
