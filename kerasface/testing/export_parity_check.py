"""Export parity: the TFLite / ONNX conversion of a model computes what the Keras model computes."""

import keras
import numpy as np

from kerasface.testing import _check_utils as utils

EXPORT_FORMATS = ("tflite", "onnx")


def check_tflite_parity(factory_or_model, inputs, atol=1e-4, rtol=1e-3):
    """Checks that the float32 TFLite conversion of a model matches its Keras inference output.

    The model is converted with ``tflite_flatbuffer`` (builtin ops only, free batch), the
    flatbuffer is run with LiteRT on ``inputs`` and each output is compared with the Keras
    model called eagerly with ``training=False``. A model built under mixed precision is
    exported, and therefore compared, through its float32 copy (``float32_compute_model``);
    its float16 rounding is the mixed-precision check's business.

    Args:
        factory_or_model: a single-input functional model or layer, or a zero-argument
            factory returning one (a bare layer is wrapped in a functional model).
        inputs: numpy array (B, ...) of model inputs (float64 is cast to float32).
        atol, rtol: elementwise tolerance ``|exported - keras| <= atol + rtol * |keras|``.

    Returns:
        dict with ``format``, ``model``, ``max_abs_diff``, ``ops`` (TFLite op names),
        ``size_bytes`` and ``output_shapes``.

    Raises:
        AssertionError: the outputs differ (message: format, model name, max difference).
        kerasface.export.UnsupportedOpsError: the model needs Flex or custom ops; ``.ops``
            names them.
    """
    from kerasface.export.generic_conversion import tflite_flatbuffer

    model, inputs = _model_and_inputs(factory_or_model, inputs)
    return check_exported_parity(model, tflite_flatbuffer(model), inputs, atol=atol, rtol=rtol)


def check_onnx_parity(factory_or_model, inputs, atol=1e-4, rtol=1e-3, opset=17):
    """Checks that the ONNX conversion (tf2onnx, ``opset``) of a model matches its Keras inference output.

    Like ``check_tflite_parity`` with ONNX Runtime (CPU) running ``onnx_model_proto(model, opset)``.

    Returns:
        dict with ``format``, ``model``, ``max_abs_diff``, ``ops`` (ONNX op types),
        ``size_bytes``, ``output_shapes`` and ``opset``.

    Raises:
        AssertionError: the outputs differ (message: format, model name, max difference).
        ValueError: tf2onnx left ops with no standard ONNX definition, or a bad opset.
    """
    from kerasface.export.generic_conversion import onnx_model_proto

    model, inputs = _model_and_inputs(factory_or_model, inputs)
    result = check_exported_parity(model, onnx_model_proto(model, opset=opset), inputs, atol=atol, rtol=rtol)
    result["opset"] = opset
    return result


def check_export_parity(factory_or_model, inputs, formats=EXPORT_FORMATS, atol=1e-4, rtol=1e-3, opset=17):
    """Runs ``check_tflite_parity`` and/or ``check_onnx_parity``; every format is tried before failing.

    Args:
        factory_or_model: model, layer or zero-argument factory (built once, shared by the formats).
        inputs: numpy array of model inputs.
        formats: some of ``("tflite", "onnx")``.
        atol, rtol: tolerance for every format.
        opset: ONNX opset.

    Returns:
        dict format -> that check's result dict.

    Raises:
        AssertionError: listing each format whose outputs differ.
        ValueError: an unknown format, or a conversion that cannot be done (see the
            single-format checks).
    """
    formats = (formats,) if isinstance(formats, str) else tuple(formats)
    unknown = [name for name in formats if name not in EXPORT_FORMATS]
    if unknown or not formats:
        raise ValueError(f"`formats` must be some of {EXPORT_FORMATS}, got {formats!r}")
    model, inputs = _model_and_inputs(factory_or_model, inputs)
    checks = {
        "tflite": lambda: check_tflite_parity(model, inputs, atol=atol, rtol=rtol),
        "onnx": lambda: check_onnx_parity(model, inputs, atol=atol, rtol=rtol, opset=opset),
    }
    results, failures = {}, []
    for name in dict.fromkeys(formats):
        try:
            results[name] = checks[name]()
        except AssertionError as error:
            failures.append(str(error))
    if failures:
        raise AssertionError(f"{len(failures)} of {len(results) + len(failures)} export formats differ:\n"
                             + "\n".join(failures))
    return results


def check_exported_parity(model, exported, inputs, atol=1e-4, rtol=1e-3):
    """Compares an already converted file with a Keras model's inference output.

    The lower-level step of ``check_tflite_parity``/``check_onnx_parity``; it also lets a
    test pair a model with a file converted from something else.

    Args:
        model: the Keras reference (a layer is wrapped; mixed precision goes through its
            float32 copy, as the converters do).
        exported: TFLite flatbuffer ``bytes``, an ``onnx.ModelProto``, or a ``.tflite`` /
            ``.onnx`` path.
        inputs: numpy array (B, ...) of model inputs.
        atol, rtol: elementwise tolerance ``|exported - keras| <= atol + rtol * |keras|``.

    Returns:
        dict with ``format``, ``model``, ``max_abs_diff``, ``ops``, ``size_bytes``, ``output_shapes``.

    Raises:
        AssertionError: the outputs differ, in number, shape or value.
    """
    from kerasface.export.generic_conversion import (
        OnnxModelRunner,
        TFLiteModelRunner,
        onnx_op_names,
    )
    from kerasface.export.saved_model_export import float32_compute_model
    from kerasface.export.tflite_export import tflite_op_names

    model, inputs = _model_and_inputs(model, inputs)
    export_format, content = _identify(exported)
    check = f"{'TFLite' if export_format == 'tflite' else 'ONNX'} export parity check (model {model.name!r})"
    reference = float32_compute_model(model)
    expected = utils.flat_numpy(reference(inputs, training=False))
    if export_format == "tflite":
        actual = TFLiteModelRunner(content, num_threads=1)(inputs)
        ops = tflite_op_names(content)
    else:
        actual = OnnxModelRunner(content, num_threads=1)(inputs)
        ops = onnx_op_names(content)
    max_diff = utils.assert_outputs_close(check, "outputs", actual, expected, atol, rtol)
    return {
        "format": export_format,
        "model": model.name,
        "max_abs_diff": max_diff,
        "ops": ops,
        "size_bytes": len(content) if isinstance(content, bytes) else content.ByteSize(),
        "output_shapes": [tuple(np.shape(output)) for output in actual],
    }


def _identify(exported):
    """("tflite", flatbuffer bytes) or ("onnx", ModelProto) from bytes, a proto or a path."""
    from pathlib import Path

    if hasattr(exported, "SerializeToString"):
        return "onnx", exported
    if isinstance(exported, (bytes, bytearray)):
        return "tflite", bytes(exported)
    path = Path(exported)
    if path.suffix == ".tflite":
        return "tflite", path.read_bytes()
    if path.suffix == ".onnx":
        import onnx

        return "onnx", onnx.load(str(path))
    raise ValueError(
        f"`exported` must be TFLite flatbuffer bytes, an onnx.ModelProto or a .tflite/.onnx path, got {exported!r}"
    )


def _model_and_inputs(factory_or_model, inputs):
    obj = utils.resolve(factory_or_model)
    if isinstance(inputs, (list, tuple, dict)):
        raise TypeError(
            f"export parity checks take one input array (single-input models), got a {type(inputs).__name__}"
        )
    inputs = np.asarray(keras.ops.convert_to_numpy(utils.to_tensors(inputs)))
    return utils.wrap_in_model(obj, inputs), inputs
