"""Runners that embed faces with an exported file: TFLite (LiteRT), ONNX Runtime, SavedModel."""

from pathlib import Path

import numpy as np

from kerasface.data.preprocessing import normalize_numpy

DEFAULT_BATCH_SIZE = 64


class EmbeddingRunner:
    """Common interface of the runners: uint8 faces or normalised floats -> L2-normalised embeddings.

    Subclasses set ``path``, ``input_shape`` ((H, W, C) the file expects), ``embedding_size``
    and implement ``_run(batch)`` on one normalised float32 batch.

    Call arguments:
        images: float32 (B, H, W, 3) already normalised ``(x - 127.5) / 128``.
        batch_size: images per runtime call.

    Returns:
        float32 (B, D) L2-normalised embeddings (re-normalised after the runtime, which
        matters for int8 outputs).
    """

    path = None
    input_shape = None
    embedding_size = None

    def embed(self, images, batch_size=DEFAULT_BATCH_SIZE):
        """uint8 RGB faces (B, H, W, 3) -> float32 (B, D) L2-normalised embeddings."""
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise TypeError(
                f"{self.path}: embed() takes uint8 RGB pixels, got dtype {images.dtype}; "
                f"call the runner itself on normalised float32 images"
            )
        self._check_shape(images)
        return self(normalize_numpy(images), batch_size=batch_size)

    def __call__(self, images, batch_size=DEFAULT_BATCH_SIZE):
        images = np.asarray(images)
        if not np.issubdtype(images.dtype, np.floating):
            raise TypeError(
                f"{self.path}: the runner takes normalised float32 images, got dtype {images.dtype}; "
                f"use embed() for uint8 pixels"
            )
        self._check_shape(images)
        images = images.astype(np.float32, copy=False)
        outputs = [self._run(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        if not outputs:
            return np.zeros((0, self.embedding_size), np.float32)
        return l2_normalize(np.concatenate(outputs))

    def _check_shape(self, images):
        expected = tuple(self.input_shape)
        if images.ndim != 4 or any(
            want is not None and got != want for got, want in zip(images.shape[1:], expected)
        ):
            shown = ", ".join("?" if size is None else str(size) for size in expected)
            raise ValueError(
                f"{self.path}: expected images of shape (batch, {shown}), got {images.shape}"
            )

    def _run(self, batch):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({str(self.path)!r})"


class TFLiteRunner(EmbeddingRunner):
    """Embed faces with a ``.tflite`` file through LiteRT (``ai_edge_litert``), any batch size.

    int8 input/output tensors (``export_tflite(..., int8_io=True)``) are quantised and
    dequantised here with the file's own scale and zero point.

    Args:
        path: ``.tflite`` file from ``export_tflite``.
        num_threads: interpreter threads (None: LiteRT's default).
    """

    def __init__(self, path, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self.num_threads = num_threads
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such TFLite file")
        kwargs = {} if num_threads is None else {"num_threads": int(num_threads)}
        self.interpreter = Interpreter(model_path=str(self.path), **kwargs)
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self.input_shape = tuple(int(size) for size in self._input["shape_signature"][1:])
        self.embedding_size = int(self._output["shape_signature"][-1])
        self.input_dtype = np.dtype(self._input["dtype"])
        self.output_dtype = np.dtype(self._output["dtype"])
        self._batch = None

    def _run(self, batch):
        if len(batch) != self._batch:
            self.interpreter.resize_tensor_input(
                self._input["index"], [len(batch), *self.input_shape]
            )
            self.interpreter.allocate_tensors()
            self._batch = len(batch)
        if self.input_dtype != np.float32:
            scale, zero_point = self._input["quantization"]
            info = np.iinfo(self.input_dtype)
            batch = np.clip(np.round(batch / scale + zero_point), info.min, info.max).astype(
                self.input_dtype
            )
        self.interpreter.set_tensor(self._input["index"], batch)
        self.interpreter.invoke()
        output = self.interpreter.get_tensor(self._output["index"])
        if self.output_dtype != np.float32:
            scale, zero_point = self._output["quantization"]
            output = (output.astype(np.float32) - zero_point) * scale
        return output


class OnnxRunner(EmbeddingRunner):
    """Embed faces with an ``.onnx`` file through ONNX Runtime on the CPU.

    Args:
        path: ``.onnx`` file from ``export_onnx``.
        num_threads: intra-op threads (None: ONNX Runtime's default).
    """

    def __init__(self, path, num_threads=None):
        import onnxruntime

        self.path = Path(path)
        self.num_threads = num_threads
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX file")
        options = onnxruntime.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = int(num_threads)
        self.session = onnxruntime.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_shape = tuple(
            size if isinstance(size, int) else None for size in model_input.shape[1:]
        )
        self.embedding_size = self.session.get_outputs()[0].shape[-1]

    def _run(self, batch):
        return self.session.run(None, {self.input_name: batch})[0]


class SavedModelRunner(EmbeddingRunner):
    """Embed faces with a SavedModel from ``export_saved_model``.

    ``embed`` feeds uint8 pixels to ``serving_default`` (normalisation inside the graph);
    calling the runner feeds normalised floats to the ``embed_normalized`` signature.

    Args:
        path: SavedModel directory.
    """

    def __init__(self, path):
        import tensorflow as tf

        from kerasface.export.saved_model_export import (
            INPUT_NAME,
            NORMALIZED_SIGNATURE,
            OUTPUT_NAME,
        )

        self.path = Path(path)
        if not (self.path / "saved_model.pb").is_file():
            raise FileNotFoundError(f"{self.path}: not a SavedModel directory (no saved_model.pb)")
        self._tf = tf
        self._input_name = INPUT_NAME
        self._output_name = OUTPUT_NAME
        self._normalized_name = NORMALIZED_SIGNATURE
        self.loaded = tf.saved_model.load(str(self.path))
        self.serving = self.loaded.signatures["serving_default"]
        self.normalized = self.loaded.signatures.get(NORMALIZED_SIGNATURE)
        spec = self.serving.structured_input_signature[1][INPUT_NAME]
        self.input_shape = tuple(spec.shape[1:])
        self.embedding_size = int(self.serving.structured_outputs[OUTPUT_NAME].shape[-1])

    def embed(self, images, batch_size=DEFAULT_BATCH_SIZE):
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise TypeError(
                f"{self.path}: embed() takes uint8 RGB pixels, got dtype {images.dtype}"
            )
        self._check_shape(images)
        outputs = [
            self._call(self.serving, images[i : i + batch_size])
            for i in range(0, len(images), batch_size)
        ]
        if not outputs:
            return np.zeros((0, self.embedding_size), np.float32)
        return l2_normalize(np.concatenate(outputs))

    def _run(self, batch):
        if self.normalized is None:
            raise ValueError(
                f"{self.path}: no {self._normalized_name!r} signature for normalised floats "
                f"(not exported by kerasface); use embed() on uint8 pixels"
            )
        return self._call(self.normalized, batch)

    def _call(self, signature, batch):
        return signature(**{self._input_name: self._tf.constant(batch)})[self._output_name].numpy()


def open_runner(exported, **kwargs):
    """A runner for ``exported``: an existing runner (returned as is), a .tflite/.onnx file or SavedModel dir."""
    if isinstance(exported, EmbeddingRunner):
        return exported
    path = Path(exported)
    if path.suffix == ".tflite":
        return TFLiteRunner(path, **kwargs)
    if path.suffix == ".onnx":
        return OnnxRunner(path, **kwargs)
    if path.is_dir():
        return SavedModelRunner(path)
    raise ValueError(
        f"{path}: cannot tell the format; expected a .tflite or .onnx file or a SavedModel directory"
    )


def l2_normalize(embeddings):
    """Rows of ``embeddings`` scaled to unit L2 norm (zero rows stay zero), as float32."""
    embeddings = np.asarray(embeddings, np.float32)
    norms = np.linalg.norm(embeddings, axis=-1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)
