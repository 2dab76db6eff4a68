"""Plumbing shared by the layer/model checks: calling, copying state, comparing, wrapping."""

import keras
import numpy as np


def resolve(factory_or_obj):
    """The object itself when given a layer/model, else the result of calling the factory."""
    if isinstance(factory_or_obj, keras.layers.Layer):
        return factory_or_obj
    if callable(factory_or_obj):
        obj = factory_or_obj()
        if not isinstance(obj, keras.layers.Layer):
            raise TypeError(f"the factory must return a keras Layer or Model, got {type(obj).__name__}")
        return obj
    raise TypeError(f"expected a keras Layer/Model or a zero-argument factory, got {type(factory_or_obj).__name__}")


def require_factory(factory, check):
    """Checks that build several instances need a factory, not one object."""
    if isinstance(factory, keras.layers.Layer) or not callable(factory):
        raise TypeError(
            f"{check} needs a zero-argument factory returning a fresh object (e.g. "
            f"`lambda: ArcFaceHead(10)`), got {type(factory).__name__}"
        )


def to_tensors(inputs):
    """Inputs as tensors; float64 arrays become float32 so numpy's default dtype never leaks in."""

    def convert(value):
        tensor = keras.ops.convert_to_tensor(value)
        if keras.backend.standardize_dtype(tensor.dtype) == "float64":
            tensor = keras.ops.cast(tensor, "float32")
        return tensor

    return keras.tree.map_structure(convert, inputs)


def call(obj, inputs, call_kwargs=None):
    return obj(inputs, **(call_kwargs or {}))


def flat_numpy(outputs):
    """Every leaf of a (possibly nested) output as a numpy array."""
    return [np.asarray(keras.ops.convert_to_numpy(leaf)) for leaf in keras.tree.flatten(outputs)]


def copy_state(src, dst, check):
    """Assigns every variable of ``src`` (weights, BN statistics, RNG seeds) to ``dst``."""
    src_vars, dst_vars = src.variables, dst.variables
    if len(src_vars) != len(dst_vars):
        raise AssertionError(
            f"{check}: the two instances have different variables ({len(src_vars)} vs {len(dst_vars)}): "
            f"{[v.path for v in src_vars]} vs {[v.path for v in dst_vars]}"
        )
    for source, target in zip(src_vars, dst_vars):
        if tuple(source.shape) != tuple(target.shape):
            raise AssertionError(
                f"{check}: variable {source.path} has shape {tuple(source.shape)} but its copy "
                f"{target.path} has shape {tuple(target.shape)}"
            )
        target.assign(keras.ops.convert_to_numpy(source))


def max_abs_diff(actual, expected):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.size == 0:
        return 0.0
    return float(np.max(np.abs(actual - expected)))


def assert_close(check, what, actual, expected, atol, rtol=0.0):
    """Raises AssertionError naming the check, the quantity and the max difference.

    Returns the max absolute difference so checks can report it.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"{check}: {what}: shape {actual.shape} differs from the reference {expected.shape}")
    a64 = actual.astype(np.float64)
    e64 = expected.astype(np.float64)
    if not np.array_equal(np.isfinite(a64), np.isfinite(e64)):
        raise AssertionError(
            f"{check}: {what}: {int(np.sum(~np.isfinite(a64)))} non-finite values vs "
            f"{int(np.sum(~np.isfinite(e64)))} in the reference"
        )
    finite = np.isfinite(e64)
    diff = np.abs(a64 - e64)[finite]
    max_diff = float(diff.max()) if diff.size else 0.0
    allowed = atol + rtol * np.abs(e64[finite])
    if diff.size and np.any(diff > allowed):
        worst = int(np.argmax(diff - allowed))
        raise AssertionError(
            f"{check}: {what}: max |difference| {max_diff:.3g} exceeds the tolerance "
            f"(atol={atol:g}, rtol={rtol:g}; worst element {a64[finite][worst]:.6g} vs "
            f"reference {e64[finite][worst]:.6g})"
        )
    return max_diff


def assert_outputs_close(check, what, actual, expected, atol, rtol=0.0):
    """Compares two output structures leaf by leaf; returns the max difference over leaves."""
    actual_leaves, expected_leaves = flat_numpy(actual), flat_numpy(expected)
    if len(actual_leaves) != len(expected_leaves):
        raise AssertionError(
            f"{check}: {what}: {len(actual_leaves)} output tensors vs {len(expected_leaves)} in the reference"
        )
    worst = 0.0
    for index, (a, e) in enumerate(zip(actual_leaves, expected_leaves)):
        label = what if len(actual_leaves) == 1 else f"{what} [output {index}]"
        worst = max(worst, assert_close(check, label, a, e, atol, rtol))
    return worst


def probe_targets(outputs, seed=0):
    """Fixed random arrays shaped like each float output.

    A loss ``sum(outputs * probe)`` has non-zero gradients even for L2-normalised
    embeddings, where ``sum(outputs**2)`` would be constant.
    """
    rng = np.random.default_rng(seed)
    probes = []
    for leaf in keras.tree.flatten(outputs):
        if keras.backend.is_float_dtype(keras.backend.standardize_dtype(leaf.dtype)):
            probes.append(rng.standard_normal(tuple(leaf.shape)).astype("float32"))
        else:
            probes.append(None)
    return probes


def probe_loss(outputs, probes):
    total = keras.ops.convert_to_tensor(0.0, "float32")
    for leaf, probe in zip(keras.tree.flatten(outputs), probes):
        if probe is not None:
            total = total + keras.ops.sum(keras.ops.cast(leaf, "float32") * probe)
    return total


def symbolic_inputs(inputs):
    """keras.Input placeholders with the shapes (batch free) and dtypes of concrete inputs."""

    def placeholder(value):
        return keras.Input(shape=tuple(value.shape[1:]), dtype=keras.backend.standardize_dtype(value.dtype))

    return keras.tree.map_structure(placeholder, to_tensors(inputs))


def wrap_in_model(obj, inputs, call_kwargs=None):
    """A functional model around a bare layer; a Model is returned as is.

    ``training`` is left out of the graph so the model's own ``training`` argument (and
    ``fit``) drives it; other call kwargs are baked into the graph.
    """
    if isinstance(obj, keras.Model):
        return obj
    kwargs = {k: v for k, v in (call_kwargs or {}).items() if k != "training"}
    model_inputs = symbolic_inputs(inputs)
    outputs = obj(model_inputs, **kwargs)
    return keras.Model(model_inputs, outputs, name=f"{obj.name}_wrapper")


def model_call_kwargs(call_kwargs):
    """The call kwargs a wrapping model accepts: only ``training``."""
    return {k: v for k, v in (call_kwargs or {}).items() if k == "training"}


def head_labels(inputs):
    """The labels when ``inputs`` looks like a head's ``[embeddings, int labels (B,)]``, else None."""
    if isinstance(inputs, (list, tuple)) and len(inputs) == 2:
        labels = keras.ops.convert_to_tensor(inputs[1])
        if "int" in keras.backend.standardize_dtype(labels.dtype) and len(labels.shape) == 1:
            return labels
    return None
