"""Convert a quantisation-aware model to a full-integer int8 TFLite file whose ranges are the learned ones."""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kerasface.export.saved_model_export import check_embedding_model, export_metadata, write_endpoints
from kerasface.export.tflite_export import (
    convert_saved_model,
    tflite_embedding_function,
    tflite_op_names,
    write_tflite_file,
)
from kerasface.quantization.fake_quant import FakeQuant
from kerasface.quantization.functional_graph import rebuild_functional
from kerasface.quantization.quantize_model import QUANTIZED_CLASSES


def qat_tflite_flatbuffer(qat_model, verbose=False):
    """int8 TFLite bytes of a QAT model: every scale comes from its fake-quant ops, no calibration.

    The converter sees ``FakeQuantWithMinMaxVars`` ops and takes its quantisation-aware
    path: each activation gets the range its ``FakeQuant`` learned, each kernel the
    per-channel scale of its fake-quantised weights (which it therefore rounds exactly as
    training did). No representative dataset is given: one would only be needed for a
    tensor without a fake-quant op, and ``quantize_model`` leaves none. Builtin ops only,
    float32 input/output (QUANTIZE/DEQUANTIZE inside the file).

    Args:
        qat_model: calibrated or fine-tuned model from ``quantize_model``.
        verbose: let the converter print its log.

    Returns:
        the flatbuffer ``bytes``.

    Raises:
        UnsupportedOpsError: a layer would need non-builtin ops.
        ValueError: some op was left in float (a tensor without a learned range).
    """
    if not any(isinstance(layer, FakeQuant) for layer in qat_model.layers):
        raise ValueError(f"model {qat_model.name!r} has no FakeQuant layer; build it with quantize_model first")
    uncalibrated = [
        layer.name
        for layer in qat_model.layers
        if isinstance(layer, FakeQuant) and float(layer.range_max.numpy()) - float(layer.range_min.numpy()) <= 0
    ]
    if uncalibrated:
        raise ValueError(
            f"model {qat_model.name!r}: {len(uncalibrated)} FakeQuant layers have an empty range "
            f"(e.g. {uncalibrated[:3]}); run calibrate_ranges or fine_tune before converting"
        )

    def write_saved_model(directory):
        write_endpoints(
            qat_model, directory, {"serving_default": (tflite_embedding_function(qat_model), tf.float32)}
        )

    def configure(converter):
        # TFLITE_BUILTINS, not _INT8: with the INT8 set the converter demands a representative
        # dataset before it has looked at the graph for fake-quant ops (TF 2.21).
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]

    flatbuffer = convert_saved_model(qat_model, write_saved_model, "serving_default", configure, verbose=verbose)
    float_ops = float_computing_ops(flatbuffer)
    if float_ops:
        raise ValueError(
            f"model {qat_model.name!r}: the int8 file still computes {float_ops} in float32; "
            f"a layer output lacks a FakeQuant"
        )
    return flatbuffer


def export_qat_tflite(qat_model, path, model_name=None, extra_metadata=None, verbose=False):
    """Write ``qat_tflite_flatbuffer(qat_model)`` to ``path`` with kerasface metadata (embedded + sidecar).

    Args:
        qat_model: QAT embedding model.
        path: output ``.tflite`` file.
        model_name: name recorded in the metadata; default the QAT model's.
        extra_metadata: more sidecar fields (e.g. the fine-tuning settings).
        verbose: let the converter print its log.

    Returns:
        ``Path`` of the written file.
    """
    path = Path(path)
    if path.suffix != ".tflite":
        raise ValueError(f"TFLite output path must end in .tflite, got {path}")
    embedding_size = check_embedding_model(qat_model)
    flatbuffer = qat_tflite_flatbuffer(qat_model, verbose=verbose)
    metadata = export_metadata(
        qat_model,
        "tflite",
        embedding_size,
        ops=tflite_op_names(flatbuffer),
        quantization="int8",
        int8_io=False,
        quantization_aware_training=True,
        **(extra_metadata or {}),
    )
    if model_name:
        metadata["model_name"] = model_name
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_tflite_file(path, flatbuffer, metadata)


def float_computing_ops(flatbuffer):
    """Names of ops in a TFLite flatbuffer that output float32, other than the final DEQUANTIZE."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=bytes(flatbuffer))
    dtypes = {t["index"]: np.dtype(t["dtype"]) for t in interpreter.get_tensor_details()}
    found = []
    for op in interpreter._get_ops_details():
        if op["op_name"] == "DEQUANTIZE":
            continue
        if any(dtypes.get(i) == np.float32 for i in op["outputs"]):
            found.append(op["op_name"])
    return sorted(set(found))


def strip_fake_quant(qat_model, name=None):
    """The float model inside a QAT model: FakeQuant removed, ``Quantized*`` layers back to Keras ones.

    Kernels keep their trained float values (not rounded), so the result can be
    post-training quantised like any model, e.g. ``export_tflite(..., quantize="int8")``.
    """
    plain = {quantized: float_class for float_class, quantized in QUANTIZED_CLASSES}

    def call_layer(layer, *args, **kwargs):
        if isinstance(layer, FakeQuant):
            return args[0]
        layer_class = plain.get(type(layer), type(layer))
        new = layer_class.from_config(layer.get_config())
        outputs = new(*args, **kwargs)
        new.set_weights(layer.get_weights())
        return outputs

    return rebuild_functional(qat_model, call_layer, name=name or qat_model.name.removesuffix("_qat"))


def qat_keras_embeddings(qat_model, images, batch_size=64):
    """float32 (N, D) embeddings of normalised images by the QAT model in inference mode."""
    outputs = [
        keras.ops.convert_to_numpy(qat_model(images[s : s + batch_size], training=False))
        for s in range(0, len(images), batch_size)
    ]
    return np.concatenate(outputs).astype(np.float32)
