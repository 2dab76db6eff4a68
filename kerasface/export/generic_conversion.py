"""Convert any single-input Keras model to TFLite or ONNX in memory, and run the results.

``export_tflite``/``export_onnx`` only take 112x112 embedding models and add the embedding
conventions (L2 normalisation, sidecar). The functions here take any functional model with
one input (a backbone at 32x32, the LATSE decoder mapping (B, D) embeddings to images, ...),
convert it as is, and return the flatbuffer bytes / ``onnx.ModelProto`` without writing a
file. Parity checks, benchmarks and tests build on them.

Batch dimension: the input keeps the model's own batch dimension, normally None, so the
files take any batch (``TFLiteModelRunner`` resizes the interpreter when the batch changes;
ONNX names the free dimension ``batch``). Every other input dimension must be known.

Input and output names: the input is named after the Keras input (``image``, ``embedding``;
``input`` when that name is not a plain identifier); one output is named ``output``,
several ``output_0``, ``output_1``, ... in the order of ``model.outputs``.
"""

import re
import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kerasface.export.saved_model_export import float32_compute_model
from kerasface.export.prelu_rewrite import with_abs_form_prelu
from kerasface.export.tflite_export import QUANTIZATIONS, _configure, check_int8_prelu, convert_saved_model

DEFAULT_OPSET = 17
SIGNATURE_KEY = "serving_default"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_single_input_model(model):
    """``(input name, input shape, output names)`` of a functional model with one input.

    Raises:
        TypeError: ``model`` is not a ``keras.Model``.
        ValueError: no symbolic input (an unbuilt subclassed model), several inputs, or an
            input dimension other than the batch left undefined.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"conversion needs a keras.Model, got {type(model).__name__}")
    name = getattr(model, "name", "?")
    if not getattr(model, "inputs", None):
        raise ValueError(
            f"model {name!r} has no symbolic input (a subclassed model never built on a keras.Input); "
            f"wrap it in a functional keras.Model(keras.Input(shape), ...)"
        )
    if len(model.inputs) != 1:
        raise ValueError(f"conversion needs a model with one input; model {name!r} has {len(model.inputs)}")
    shape = tuple(model.inputs[0].shape)
    if len(shape) < 1 or any(size is None for size in shape[1:]):
        raise ValueError(
            f"model {name!r}: every input dimension but the batch must be known to convert, got input shape {shape}"
        )
    input_name = getattr(model.inputs[0], "name", None) or "input"
    if not _IDENTIFIER.match(input_name):
        input_name = "input"
    count = len(model.outputs)
    output_names = ["output"] if count == 1 else [f"output_{i:0{len(str(count - 1))}d}" for i in range(count)]
    return input_name, shape, output_names


def input_spec(model):
    """The ``tf.TensorSpec`` of the model's single input, named as in the converted files."""
    input_name, shape, _ = check_single_input_model(model)
    return tf.TensorSpec(shape, model.inputs[0].dtype, name=input_name)


def inference_function(model):
    """input -> ``{output name: tensor}``, ``model`` in inference mode, float outputs as float32."""
    _, _, output_names = check_single_input_model(model)

    def infer(inputs):
        outputs = keras.tree.flatten(model(inputs, training=False))
        return {
            name: keras.ops.cast(output, "float32")
            if keras.backend.is_float_dtype(keras.backend.standardize_dtype(output.dtype))
            else output
            for name, output in zip(output_names, outputs)
        }

    return infer


def write_saved_model(model, directory):
    """Write ``model`` (its float32 copy) as a SavedModel with one ``serving_default`` signature.

    The signature is what ``tflite_flatbuffer`` converts: pass the directory as its
    ``saved_model`` to convert one SavedModel to several quantisations without re-tracing
    the model each time, and load it with ``tf.saved_model.load`` to run it.

    Returns:
        ``Path`` of ``directory``.
    """
    check_single_input_model(model)
    float32_model = float32_compute_model(model)
    archive = keras.export.ExportArchive()
    archive.track(float32_model)
    archive.add_endpoint(
        name=SIGNATURE_KEY, fn=inference_function(float32_model), input_signature=[input_spec(float32_model)]
    )
    archive.write_out(str(directory), verbose=False)
    return Path(directory)


def tflite_flatbuffer(model, quantize=None, representative_inputs=None, verbose=False, int8_io=False,
                      saved_model=None, int8_prelu="abs"):
    """Convert a single-input Keras model to a TFLite flatbuffer with builtin ops only.

    A model built under mixed precision is converted through its float32 copy
    (``float32_compute_model``): float16 kernels have no TFLite builtins. The batch
    dimension stays free (see the module docstring).

    Args:
        model: functional ``keras.Model`` with one input, every non-batch dimension known.
        quantize: None (float32), "float16" (float16 weights), "dynamic" (int8 weights) or
            "int8" (full-integer: every op int8, ``TFLITE_BUILTINS_INT8``; float32 input
            and output, quantised and dequantised inside the file).
        representative_inputs: "int8" only, required there: float32 array (N, *input shape
            without batch) of typical inputs, fed one at a time to calibrate activation
            ranges. Already preprocessed (normalised faces for a backbone).
        verbose: let the converter print its log.
        int8_io: "int8" only: int8 input and output tensors (``TFLiteModelRunner`` applies
            their scale and zero point) instead of float32.
        saved_model: a directory written by ``write_saved_model(model, ...)`` to convert
            instead of writing a new one (the model is then only named in errors). Not
            used for "int8" when ``int8_prelu="abs"`` rewrites a PReLU of the model.
        int8_prelu: "int8" only: "abs" converts each PReLU in the form XNNPACK runs in int8
            (see ``kerasface.export.tflite_export.export_tflite``), "native" keeps PRELU.

    Returns:
        ``bytes`` of the ``.tflite`` flatbuffer, with one ``serving_default`` signature.

    Raises:
        UnsupportedOpsError: the model needs non-builtin (Flex or custom) ops; ``.ops`` names them.
        ValueError: a bad ``quantize``/``representative_inputs`` combination or model.
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"`quantize` must be one of {QUANTIZATIONS}, got {quantize!r}")
    _, shape, _ = check_single_input_model(model)
    if quantize == "int8":
        representative_inputs = _check_representative_inputs(representative_inputs, shape, model.name)
    elif representative_inputs is not None:
        raise ValueError(
            f"`representative_inputs` is only used with quantize='int8', got quantize={quantize!r}"
        )
    if int8_io and quantize != "int8":
        raise ValueError(f"`int8_io=True` needs quantize='int8', got quantize={quantize!r}")
    if saved_model is not None and not (Path(saved_model) / "saved_model.pb").is_file():
        raise ValueError(f"`saved_model` {saved_model}: not a SavedModel directory (no saved_model.pb)")
    check_int8_prelu(int8_prelu)
    if quantize == "int8" and int8_prelu == "abs":
        rewritten = with_abs_form_prelu(model)
        if rewritten is not model:
            model, saved_model = rewritten, None

    def write(directory):
        if saved_model is None:
            write_saved_model(model, directory)
        else:
            shutil.copytree(saved_model, directory, dirs_exist_ok=True)

    def configure(converter):
        if quantize == "int8":
            _configure_int8(converter, representative_inputs, int8_io)
        else:
            _configure(converter, quantize, None, False)

    flatbuffer = convert_saved_model(model, write, SIGNATURE_KEY, configure, verbose=verbose)
    return bytes(flatbuffer)


def _check_representative_inputs(inputs, shape, model_name):
    if inputs is None:
        raise ValueError(
            f"model {model_name!r}: quantize='int8' needs `representative_inputs`, a float32 array "
            f"(N, {', '.join(str(s) for s in shape[1:])}) of typical inputs to calibrate activation ranges"
        )
    inputs = np.asarray(inputs)
    if not np.issubdtype(inputs.dtype, np.floating) or inputs.ndim != len(shape) or inputs.shape[1:] != shape[1:]:
        raise ValueError(
            f"model {model_name!r}: `representative_inputs` must be a float array (N, "
            f"{', '.join(str(s) for s in shape[1:])}), got {inputs.dtype} {inputs.shape}"
        )
    if len(inputs) == 0:
        raise ValueError(f"model {model_name!r}: `representative_inputs` is empty")
    if not np.isfinite(inputs).all():
        raise ValueError(f"model {model_name!r}: `representative_inputs` has non-finite values")
    return inputs.astype(np.float32)


def _configure_int8(converter, representative_inputs, int8_io=False):
    # ``_configure`` feeds uint8 faces through the pixel normalisation; generic inputs are
    # already in the model's input space, so only the representative dataset differs.
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]

    def representative_dataset():
        for i in range(len(representative_inputs)):
            yield [representative_inputs[i : i + 1]]

    converter.representative_dataset = representative_dataset
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8


def onnx_model_proto(model, opset=DEFAULT_OPSET, verbose=False):
    """Convert a single-input Keras model to an ``onnx.ModelProto`` through tf2onnx.

    NHWC layout as in Keras, float32 compute (a mixed-precision model goes through its
    float32 copy), free batch dimension named ``batch``. Checked with ``onnx.checker``.

    Args:
        model: functional ``keras.Model`` with one input, every non-batch dimension known.
        opset: ONNX opset, 13 to 18 (tf2onnx 1.17 has no opset 19+ support).
        verbose: let tf2onnx log its progress.

    Returns:
        the ``onnx.ModelProto`` (``proto.SerializeToString()`` is the ``.onnx`` file).

    Raises:
        ValueError: an unsupported opset, or ops tf2onnx could not map to standard ONNX.
    """
    from kerasface.export.onnx_export import check_opset, function_to_onnx

    check_opset(opset)
    check_single_input_model(model)
    float32_model = float32_compute_model(model)
    spec = input_spec(float32_model)
    function = tf.function(inference_function(float32_model), input_signature=[spec])
    return function_to_onnx(function, spec, model.name, opset, verbose)


def onnx_op_names(model_proto):
    """Sorted distinct op types of an ``onnx.ModelProto`` (or ``.onnx`` path)."""
    import onnx

    if not isinstance(model_proto, onnx.ModelProto):
        model_proto = onnx.load(str(model_proto))
    return sorted({node.op_type for node in model_proto.graph.node})


class TFLiteModelRunner:
    """Run a TFLite flatbuffer on numpy inputs with LiteRT; raw outputs, any batch size.

    Unlike ``kerasface.export.TFLiteRunner`` (embeddings, re-normalised) the outputs are
    returned as the file computes them. The tensors are resized only when the batch
    changes, so repeated calls at one batch size time the invoke alone.

    Args:
        model: flatbuffer ``bytes`` or a ``.tflite`` path.
        num_threads: interpreter threads (None: LiteRT's default).

    Call arguments:
        inputs: array (B, *input shape); float inputs are cast to the file's input dtype
            (an int8-input file gets them quantised with its scale and zero point).

    Returns:
        list of float32/int arrays, one per output in signature order (``output``,
        ``output_0``, ... as written by ``tflite_flatbuffer``; files with no signature keep
        the interpreter's output order). int8 outputs are dequantised.
    """

    def __init__(self, model, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        self.num_threads = num_threads
        kwargs = {} if num_threads is None else {"num_threads": int(num_threads)}
        if isinstance(model, (bytes, bytearray)):
            self.path = None
            self.interpreter = Interpreter(model_content=bytes(model), **kwargs)
        else:
            self.path = Path(model)
            if not self.path.is_file():
                raise FileNotFoundError(f"{self.path}: no such TFLite file")
            self.interpreter = Interpreter(model_path=str(self.path), **kwargs)
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise ValueError(f"{self.path or 'flatbuffer'}: expected one input tensor, got {len(inputs)}")
        self._input = inputs[0]
        self._outputs = self._ordered_outputs()
        self.input_shape = tuple(int(size) for size in self._input["shape_signature"][1:])
        self._batch = None

    def _ordered_outputs(self):
        details = {d["index"]: d for d in self.interpreter.get_output_details()}
        signatures = self.interpreter.get_signature_list()
        if len(signatures) == 1:
            key = next(iter(signatures))
            runner = self.interpreter.get_signature_runner(key)
            named = runner.get_output_details()
            return [details[named[name]["index"]] for name in sorted(named)]
        return list(details.values())

    def __call__(self, inputs):
        inputs = np.asarray(inputs)
        shape = tuple(inputs.shape[1:])
        if inputs.ndim != len(self.input_shape) + 1 or any(
            want != -1 and got != want for got, want in zip(shape, self.input_shape)
        ):
            raise ValueError(
                f"{self.path or 'flatbuffer'}: expected inputs of shape (batch, "
                f"{', '.join(str(s) for s in self.input_shape)}), got {inputs.shape}"
            )
        if len(inputs) != self._batch:
            self.interpreter.resize_tensor_input(self._input["index"], list(inputs.shape))
            self.interpreter.allocate_tensors()
            self._batch = len(inputs)
        dtype = np.dtype(self._input["dtype"])
        if dtype in (np.int8, np.uint8, np.int16) and np.issubdtype(inputs.dtype, np.floating):
            scale, zero_point = self._input["quantization"]
            info = np.iinfo(dtype)
            inputs = np.clip(np.round(inputs / scale + zero_point), info.min, info.max)
        self.interpreter.set_tensor(self._input["index"], inputs.astype(dtype, copy=False))
        self.interpreter.invoke()
        results = []
        for detail in self._outputs:
            output = self.interpreter.get_tensor(detail["index"])
            scale, zero_point = detail["quantization"]
            if output.dtype in (np.int8, np.uint8, np.int16) and scale:
                output = (output.astype(np.float32) - zero_point) * scale
            results.append(output)
        return results


class OnnxModelRunner:
    """Run an ONNX model on numpy inputs with ONNX Runtime (CPU); raw outputs.

    Args:
        model: ``onnx.ModelProto``, serialised bytes or a ``.onnx`` path.
        num_threads: intra-op threads (None: ONNX Runtime's default); inter-op is 1.

    Call arguments:
        inputs: array (B, *input shape), cast to the graph's input dtype (float32).

    Returns:
        list of arrays, one per graph output in order.
    """

    def __init__(self, model, num_threads=None):
        import onnxruntime

        self.path = None
        if hasattr(model, "SerializeToString"):
            content = model.SerializeToString()
        elif isinstance(model, (bytes, bytearray)):
            content = bytes(model)
        else:
            self.path = Path(model)
            if not self.path.is_file():
                raise FileNotFoundError(f"{self.path}: no such ONNX file")
            content = str(self.path)
        self.num_threads = num_threads
        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1
        if num_threads is not None:
            options.intra_op_num_threads = int(num_threads)
        self.session = onnxruntime.InferenceSession(content, options, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0]
        self._dtype = np.float32 if self._input.type == "tensor(float)" else None

    def __call__(self, inputs):
        inputs = np.asarray(inputs)
        if self._dtype is not None:
            inputs = inputs.astype(self._dtype, copy=False)
        return self.session.run(None, {self._input.name: inputs})
