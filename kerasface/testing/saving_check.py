"""``.keras`` save and ``keras.saving.load_model`` round trip."""

from pathlib import Path

import keras

from kerasface.testing import _check_utils as utils


def check_saving(factory_or_obj, inputs, tmp_dir, call_kwargs=None, atol=1e-6):
    """Checks that a ``.keras`` save/load round trip keeps class, weights and outputs.

    A bare layer is wrapped into a functional model whose inputs mirror ``inputs``
    (a head gets two: float embeddings (B, D) and int labels (B,)); a model is saved as
    is. The file is reloaded with ``keras.saving.load_model`` and no custom_objects, so
    an unregistered class fails here.

    Args:
        factory_or_obj: a layer/model, or a zero-argument factory returning one.
        inputs: concrete inputs; builds the object and feeds both models.
        tmp_dir: folder for the ``.keras`` file (pytest's ``tmp_path``).
        call_kwargs: call arguments; for a wrapped layer only ``training`` is applied at
            call time, the others are baked into the wrapping graph.
        atol: tolerance of the output comparison.

    Returns:
        dict with ``path`` (the saved file) and ``max_output_diff``.

    Raises:
        AssertionError: naming the failed step, or the max difference of outputs/weights.
    """
    obj = utils.resolve(factory_or_obj)
    check = f"saving check ({type(obj).__name__})"
    inputs = utils.to_tensors(inputs)
    utils.call(obj, inputs, call_kwargs)  # subclassed models and layers must be built to save weights
    model = utils.wrap_in_model(obj, inputs, call_kwargs)
    model_kwargs = call_kwargs if model is obj else utils.model_call_kwargs(call_kwargs)

    path = Path(tmp_dir) / f"{obj.name}.keras"
    try:
        model.save(path)
    except Exception as error:
        raise AssertionError(f"{check}: saving {path} failed: {type(error).__name__}: {error}") from error
    try:
        loaded = keras.saving.load_model(path)
    except Exception as error:
        raise AssertionError(
            f"{check}: keras.saving.load_model({path}) failed ({type(error).__name__}: {error}); is the "
            "class registered with @keras.saving.register_keras_serializable or a kerasface registry?"
        ) from error

    loaded_obj = loaded if model is obj else loaded.get_layer(obj.name)
    if type(loaded_obj) is not type(obj):
        raise AssertionError(f"{check}: {path} reloaded as {type(loaded_obj).__name__}, expected {type(obj).__name__}")

    saved_weights, loaded_weights = model.weights, loaded.weights
    if len(saved_weights) != len(loaded_weights):
        raise AssertionError(
            f"{check}: {len(saved_weights)} weights saved but {len(loaded_weights)} reloaded from {path}"
        )
    for saved, reloaded in zip(saved_weights, loaded_weights):
        utils.assert_close(
            check, f"reloaded weight {reloaded.path}", keras.ops.convert_to_numpy(reloaded),
            keras.ops.convert_to_numpy(saved), atol=0.0,
        )

    # Both calls start from the saved state (a training-mode call may move BN statistics).
    expected = utils.call(model, inputs, model_kwargs)
    actual = utils.call(loaded, inputs, model_kwargs)
    max_diff = utils.assert_outputs_close(check, "outputs of the reloaded model", actual, expected, atol)
    return {"path": path, "max_output_diff": max_diff}
