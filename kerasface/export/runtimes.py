"""Runners that embed faces with an exported file: TFLite (LiteRT), ONNX Runtime, SavedModel."""

from pathlib import Path

import numpy as np

from kerasface.data.preprocessing import normalize_numpy

DEFAULT_BATCH_SIZE = 64
ONNX_DEVICES = ("cpu", "gpu", "auto")
CUDA_PROVIDER = "CUDAExecutionProvider"


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
        s = describe_shape_problem(images.shape, self.input_shape)
        if s:
            raise ValueError(f"{self.path}: {s}")

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
        xnnpack: run through LiteRT's default delegate, XNNPACK (its optimised float and
            int8 CPU kernels); False uses the builtin reference-style kernels only
            (``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``), e.g. to compare the two.
    """

    def __init__(self, path, num_threads=None, xnnpack=True):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.path = Path(path)
        self.num_threads = num_threads
        self.xnnpack = bool(xnnpack)
        check_model_file(self.path, "TFLite")
        kwargs = {} if num_threads is None else {"num_threads": int(num_threads)}
        if not self.xnnpack:
            kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self.interpreter = Interpreter(model_path=str(self.path), **kwargs)
        except (ValueError, RuntimeError) as error:
            raise ValueError(f"{self.path}: not a valid TFLite file: {error}") from None
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self.input_shape = tuple(
            None if size < 0 else int(size) for size in self._input["shape_signature"][1:]
        )
        self.embedding_size = int(self._output["shape_signature"][-1])
        self.input_dtype = np.dtype(self._input["dtype"])
        self.output_dtype = np.dtype(self._output["dtype"])
        self._batch = None

    @property
    def delegated_nodes(self):
        """How many graph nodes a delegate (XNNPACK) runs: 0 means the builtin kernels run everything."""
        if self._batch is None:  # delegates are applied when tensors are first allocated
            self.interpreter.allocate_tensors()
        # _get_ops_details is LiteRT's only view of the execution plan: a node run by a
        # delegate appears as one op named DELEGATE.
        return sum(op["op_name"] == "DELEGATE" for op in self.interpreter._get_ops_details())

    def _run(self, batch):
        if len(batch) != self._batch:
            self.interpreter.resize_tensor_input(self._input["index"], list(batch.shape))
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
    """Embed faces with an ``.onnx`` file through ONNX Runtime, on the CPU or a CUDA GPU.

    Args:
        path: ``.onnx`` file from ``export_onnx``.
        num_threads: intra-op threads (None: ONNX Runtime's default).
        device: "cpu"; "gpu" (CUDA through ``onnxruntime-gpu``: an error when its
            CUDAExecutionProvider is missing or fails to start); "auto" (CUDA when
            available, else CPU). ``providers`` records what the session really uses.
    """

    def __init__(self, path, num_threads=None, device="cpu"):
        import onnxruntime

        if device not in ONNX_DEVICES:
            raise ValueError(f"`device` must be one of {ONNX_DEVICES}, got {device!r}")
        self.path = Path(path)
        self.num_threads = num_threads
        self.device = device
        check_model_file(self.path, "ONNX")
        available = onnxruntime.get_available_providers()
        has_cuda = CUDA_PROVIDER in available
        if device == "gpu" and not has_cuda:
            raise RuntimeError(
                f"{self.path}: device='gpu' needs ONNX Runtime's {CUDA_PROVIDER} (install "
                f"onnxruntime-gpu); this onnxruntime {onnxruntime.__version__} offers {available}"
            )
        providers = ["CPUExecutionProvider"]
        if has_cuda and device in ("gpu", "auto"):
            providers = [CUDA_PROVIDER, "CPUExecutionProvider"]
        options = onnxruntime.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = int(num_threads)
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), options, providers=providers)
        except Exception as error:  # onnxruntime's pybind errors share no public base class
            raise ValueError(f"{self.path}: not a valid ONNX file: {error}") from None
        self.providers = list(self.session.get_providers())
        if device == "gpu" and CUDA_PROVIDER not in self.providers:
            # ONNX Runtime falls back to the CPU silently when CUDA libraries fail to load.
            raise RuntimeError(
                f"{self.path}: device='gpu' asked for {CUDA_PROVIDER} but the session runs on "
                f"{self.providers} (CUDA/cuDNN libraries missing?)"
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

    ``embed`` feeds uint8 pixels to ``serving_default`` (normalisation inside the graph), or
    to ``embed_flip`` with ``flip=True``; calling the runner feeds normalised floats to the
    ``embed_normalized`` signature (with ``flip=True`` on the image and its mirror, fused as
    ``embed_flip`` does).

    Args:
        path: SavedModel directory.
        flip: flip test: the L2-normalised sum of the embeddings of each face and its
            horizontal mirror, as ``kerasface.evaluation`` computes it with ``flip=True``.
    """

    def __init__(self, path, flip=False):
        import tensorflow as tf

        from kerasface.export.saved_model_export import (
            FLIP_SIGNATURE,
            INPUT_NAME,
            NORMALIZED_SIGNATURE,
            OUTPUT_NAME,
        )

        self.path = Path(path)
        self.flip = bool(flip)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such SavedModel directory")
        if not self.path.is_dir():
            raise ValueError(f"{self.path}: not a valid SavedModel (a file, not a directory)")
        if not (self.path / "saved_model.pb").is_file():
            raise ValueError(
                f"{self.path}: not a valid SavedModel directory (no saved_model.pb in it)"
            )
        self._tf = tf
        self._input_name = INPUT_NAME
        self._output_name = OUTPUT_NAME
        self._normalized_name = NORMALIZED_SIGNATURE
        try:
            self.loaded = tf.saved_model.load(str(self.path))
        except Exception as error:  # parse errors come as several TF/protobuf types
            raise ValueError(f"{self.path}: not a valid SavedModel: {error}") from None
        signatures = self.loaded.signatures
        if "serving_default" not in signatures:
            raise ValueError(
                f"{self.path}: SavedModel has no 'serving_default' signature, only {list(signatures)}"
            )
        self.serving = signatures["serving_default"]
        self.normalized = signatures.get(NORMALIZED_SIGNATURE)
        self.flipped = signatures.get(FLIP_SIGNATURE)
        if self.flip and self.flipped is None:
            raise ValueError(
                f"{self.path}: flip=True needs the {FLIP_SIGNATURE!r} signature, which this "
                f"SavedModel lacks (signatures: {list(signatures)}); re-export it with kerasface"
            )
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
        signature = self.flipped if self.flip else self.serving
        outputs = [
            self._call(signature, images[i : i + batch_size])
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
        output = self._call(self.normalized, batch)
        if self.flip:
            mirrored = np.ascontiguousarray(batch[:, :, ::-1, :])
            output = l2_normalize(output + self._call(self.normalized, mirrored))
        return output

    def _call(self, signature, batch):
        return signature(**{self._input_name: self._tf.constant(batch)})[self._output_name].numpy()


def open_runner(exported, **kwargs):
    """A runner for ``exported``: an existing runner (returned as is), a .tflite/.onnx file or SavedModel dir.

    ``kwargs`` go to the runner: ``num_threads``/``xnnpack`` (TFLite), ``num_threads``/``device``
    (ONNX), ``flip`` (SavedModel, which ignores the others).
    """
    if isinstance(exported, EmbeddingRunner):
        return exported
    path = Path(exported)
    if path.suffix == ".tflite":
        return TFLiteRunner(path, **kwargs)
    if path.suffix == ".onnx":
        return OnnxRunner(path, **kwargs)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such exported model (.tflite, .onnx or SavedModel directory)")
    if path.is_dir():
        # TensorFlow's thread pools are fixed when it starts, so num_threads cannot apply here.
        return SavedModelRunner(path, flip=kwargs.get("flip", False))
    raise ValueError(
        f"{path}: cannot tell the format; expected a .tflite or .onnx file or a SavedModel directory"
    )


def l2_normalize(embeddings):
    """Rows of ``embeddings`` scaled to unit L2 norm (zero rows stay zero), as float32."""
    embeddings = np.asarray(embeddings, np.float32)
    norms = np.linalg.norm(embeddings, axis=-1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def describe_shape_problem(shape, expected):
    """What is wrong with image batch ``shape`` against (H, W, C) ``expected`` (None: any), or None."""
    shape = tuple(shape)
    expected = tuple(expected)
    shown = ", ".join("?" if size is None else str(size) for size in expected)
    problem = f"expected images of shape (batch, {shown}), got {shape}"
    fits = lambda dims: all(w is None or g == w for g, w in zip(dims, expected))  # noqa: E731
    if len(shape) == len(expected) and fits(shape):
        return f"{problem}: a single image needs a batch axis, e.g. images[None]"
    if len(shape) != len(expected) + 1:
        return f"{problem}, a {len(shape)}-d array"
    channels, want_channels = shape[-1], expected[-1]
    if want_channels is not None and channels != want_channels:
        hint = {1: " (grayscale? repeat it to RGB)", 4: " (RGBA? drop the alpha channel)"}.get(
            channels, ""
        )
        plural = "" if channels == 1 else "s"
        return f"{problem}: {channels} channel{plural} instead of {want_channels} RGB{hint}"
    if not fits(shape[1:]):
        return f"{problem}: aligned faces are {shown.rsplit(', ', 1)[0].replace(', ', 'x')}"
    return None


def check_model_file(path, kind):
    """FileNotFoundError / ValueError naming ``path`` when it is missing, not a file or empty."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such {kind} file")
    if not path.is_file():
        raise ValueError(f"{path}: not a valid {kind} file (a directory)")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: not a valid {kind} file (it is empty)")


def row_cosines(reference, candidate):
    """float64 (N,) cosine between each row of two (N, D) embedding arrays (zero rows give 0)."""
    reference = np.asarray(reference, np.float64)
    candidate = np.asarray(candidate, np.float64)
    return np.sum(reference * candidate, axis=1) / np.maximum(
        np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1), 1e-12
    )
