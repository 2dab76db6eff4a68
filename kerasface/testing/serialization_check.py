"""Config round trips: get_config/from_config, serialize/deserialize, and the init-args rule."""

import copy
import inspect
import json

import keras
import numpy as np

from kerasface.testing import _check_utils as utils

# Base-layer arguments whose public attribute is not the config value (``layer.dtype`` is the
# variable dtype, the config holds the policy); only their presence in the config is checked.
_BASE_LAYER_ARGS = ("name", "dtype", "trainable", "autocast")

# Classes from these packages follow Keras's own conventions (e.g. Dense stores
# `activity_regularizer` outside its config), so the kerasface init-args rule is not applied.
_EXTERNAL_PACKAGES = ("keras", "keras_hub", "keras_cv", "keras_nlp", "tf_keras")


def check_serialization(obj, inputs=None, call_kwargs=None, strict_init_args=None, atol=1e-6):
    """Checks that a layer/model survives its config round trips unchanged.

    Checks, in order: ``type(obj).from_config(obj.get_config())`` gives the same config;
    ``keras.saving.serialize_keras_object`` is JSON-serialisable and
    ``deserialize_keras_object`` (no custom_objects, so the class must be registered)
    rebuilds the same class with the same config; every explicit ``__init__`` argument is
    in the config and is a public attribute holding the config's value (the kerasface
    rule); with ``inputs``, the rebuilt objects, given the original's variables, give
    the original's outputs.

    Args:
        obj: the layer or model (built or not).
        inputs: optional concrete inputs, e.g. ``[embeddings, labels]`` for a head.
        call_kwargs: extra call arguments, e.g. ``{"training": True}``.
        strict_init_args: apply the init-args rule; None applies it to every class not
            defined by Keras itself.
        atol: tolerance of the output comparison.

    Returns:
        dict with ``max_output_diff`` (None without inputs).

    Raises:
        AssertionError: naming the failed step and, for outputs, the max difference.
    """
    check = f"serialization check ({type(obj).__name__})"
    config = obj.get_config()

    try:
        rebuilt = type(obj).from_config(copy.deepcopy(config))
    except Exception as error:
        raise AssertionError(
            f"{check}: {type(obj).__name__}.from_config(get_config()) failed: {type(error).__name__}: {error}"
        ) from error
    _assert_configs_equal(check, "from_config(get_config()).get_config()", rebuilt.get_config(), config)

    serialized = keras.saving.serialize_keras_object(obj)
    try:
        serialized = json.loads(json.dumps(serialized))
    except TypeError as error:
        raise AssertionError(f"{check}: the serialized config is not JSON-serialisable: {error}") from error
    try:
        deserialized = keras.saving.deserialize_keras_object(serialized)
    except Exception as error:
        raise AssertionError(
            f"{check}: deserialize_keras_object failed ({type(error).__name__}: {error}); is the class "
            "registered with @keras.saving.register_keras_serializable or a kerasface registry?"
        ) from error
    if type(deserialized) is not type(obj):
        raise AssertionError(
            f"{check}: deserialize_keras_object returned {type(deserialized).__name__}, "
            f"expected {type(obj).__name__}"
        )
    _assert_configs_equal(check, "deserialize(serialize(obj)).get_config()", deserialized.get_config(), config)

    if strict_init_args is None:
        strict_init_args = type(obj).__module__.split(".")[0] not in _EXTERNAL_PACKAGES
    if strict_init_args:
        _check_init_args(check, obj, config)

    max_diff = None
    if inputs is not None:
        inputs = utils.to_tensors(inputs)
        utils.call(obj, inputs, call_kwargs)  # builds it
        max_diff = 0.0
        for label, copy_obj in (("from_config", rebuilt), ("deserialize_keras_object", deserialized)):
            utils.call(copy_obj, inputs, call_kwargs)  # builds it
            # Copied after both builds so both calls below start from the same state.
            utils.copy_state(obj, copy_obj, check)
            expected = utils.call(obj, inputs, call_kwargs)
            actual = utils.call(copy_obj, inputs, call_kwargs)
            max_diff = max(
                max_diff,
                utils.assert_outputs_close(check, f"outputs of the {label} copy", actual, expected, atol),
            )
    return {"max_output_diff": max_diff}


def _check_init_args(check, obj, config):
    signature = inspect.signature(type(obj).__init__)
    missing_config, missing_attr, wrong_value = [], [], []
    for name, parameter in list(signature.parameters.items())[1:]:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if name not in config:
            missing_config.append(name)
            continue
        if name in _BASE_LAYER_ARGS:
            continue
        if name.startswith("_") or not hasattr(obj, name):
            missing_attr.append(name)
            continue
        if not _same_value(getattr(obj, name), config[name]):
            wrong_value.append(f"{name}: attribute {getattr(obj, name)!r} vs config {config[name]!r}")
    problems = []
    if missing_config:
        problems.append(f"__init__ arguments missing from get_config(): {missing_config}")
    if missing_attr:
        problems.append(f"__init__ arguments not stored as public attributes: {missing_attr}")
    if wrong_value:
        problems.append("attributes differing from their config value: " + "; ".join(wrong_value))
    if problems:
        raise AssertionError(f"{check}: " + ". ".join(problems))


def _plain(value):
    """Tuples as lists and numpy scalars/arrays as Python values, recursively (JSON's view)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _same_value(attribute, config_value):
    if _plain(attribute) == _plain(config_value):
        return True
    # Objects (initializers, regularizers, activations) live serialized in the config.
    if callable(attribute) and isinstance(config_value, str):
        try:
            if keras.activations.serialize(attribute) == config_value:
                return True
        except Exception:
            pass
        if getattr(attribute, "__name__", None) == config_value:
            return True
    try:
        serialized = keras.saving.serialize_keras_object(attribute)
    except Exception:
        return False
    return _plain(serialized) == _plain(config_value)


def _assert_configs_equal(check, what, actual, expected):
    actual, expected = _plain(actual), _plain(expected)
    if actual == expected:
        return
    keys = sorted(set(actual) | set(expected))
    differing = [
        f"{key}: {actual.get(key, '<missing>')!r} vs {expected.get(key, '<missing>')!r}"
        for key in keys
        if actual.get(key, "<missing>") != expected.get(key, "<missing>")
    ]
    raise AssertionError(f"{check}: {what} differs from get_config(): " + "; ".join(differing))
