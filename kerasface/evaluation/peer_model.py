"""Third-party ("peer") face models as kerasface embed functions: ONNX, TFLite, OpenCV DNN.

A :class:`PeerModel` takes the kerasface input (float32 ``(B, 112, 112, 3)`` RGB normalised
``(x - 127.5) / 128``), turns it back into 0-255 RGB pixels exactly (``x * 128 + 127.5``), then
into what the peer file expects (size, channel order, pixel range, layout) and returns its
embeddings L2-normalised, like a kerasface embedding model. So the same pairs, decoder,
flip fusion and metrics serve kerasface models and peers alike.

:func:`open_embedder` is the one entry point for "a model path": kerasface ``.keras`` files
and run directories, or peer ``.onnx``/``.tflite`` files. :func:`model_fingerprint` names a
model and its preprocessing for embedding caches.
"""

import hashlib
import json
from pathlib import Path

import numpy as np

from kerasface.data.preprocessing import IMAGE_SIZE, PIXEL_MEAN, PIXEL_SCALE

RUNTIMES = ("auto", "onnxruntime", "litert", "opencv")
CHANNEL_ORDERS = ("rgb", "bgr")
# "kerasface" is (x - 127.5) / 128, the kerasface/insightface training convention; "-1-1" is
# (x - 127.5) / 127.5, which many other exported face models use.
PIXEL_RANGES = ("0-255", "0-1", "-1-1", "kerasface")
# argparse reads "--pixel-range -1-1" as a flag (only "--pixel-range=-1-1" works): an alias.
_ALIASES = {"symmetric": "-1-1"}
LAYOUTS = ("auto", "nchw", "nhwc")
DEVICES = ("cpu", "gpu", "auto")
_CUDA_PROVIDER = "CUDAExecutionProvider"
PEER_SUFFIXES = (".onnx", ".tflite")
# Runtimes able to read each suffix; the first is what "auto" picks.
_SUFFIX_RUNTIMES = {".onnx": ("onnxruntime", "opencv"), ".tflite": ("litert",)}
_PEER_DEFAULTS = {
    "runtime": "auto",
    "channel_order": "rgb",
    "pixel_range": "0-255",
    "layout": "auto",
    "input_size": None,
}
# Options that change where and how fast a model runs, not its embeddings (cache keys skip them).
_RUN_ONLY_OPTIONS = ("num_threads", "device")


class PeerModel:
    """A third-party face-embedding file wrapped as a kerasface embed function.

    Layout, input size and batch size are read from the file when it states them; "auto"
    values are replaced by what was resolved, so the attributes (and :meth:`get_config`)
    describe what actually runs and ``PeerModel(**model.get_config())`` rebuilds it.
    ``layout_source`` says where the layout came from (the model's input shape, or the NCHW
    fallback when the shape does not tell).

    Args:
        path: ``.onnx`` or ``.tflite`` file.
        runtime: "auto" (onnxruntime for ``.onnx``, litert for ``.tflite``), "onnxruntime",
            "litert" (``ai_edge_litert``) or "opencv" (``cv2.dnn.readNet``, ``.onnx`` only).
            OpenCV zoo's block-quantised files (SFace ``int8bq``), which onnxruntime refuses
            as shipped, are repaired in memory for onnxruntime (see
            :func:`repair_unfed_weight_inputs`; ``repaired_inputs`` lists what was rewired).
        channel_order: "rgb" or "bgr", the channel order the model was trained on.
        pixel_range: what the model's input values are: "0-255" (raw pixels), "0-1"
            (``x / 255``), "-1-1" or its alias "symmetric" (``(x - 127.5) / 127.5``) or
            "kerasface" (``(x - 127.5) / 128``).
        layout: "auto" (from the input shape: the axis of size 3), "nchw" or "nhwc".
        input_size: model input (height, width) or one int; None reads it from the file and
            uses 112 where the file leaves it free. Faces are resized (bilinear, antialiased,
            on 0-255 pixels) when it is not 112x112.
        num_threads: runtime threads (None: the runtime's default). For "opencv" this calls
            ``cv2.setNumThreads``, which is process-wide.
        device: onnxruntime only: "cpu", "gpu" (``CUDAExecutionProvider`` from
            onnxruntime-gpu; an error when it is missing) or "auto" (GPU when available).
            The attribute holds the resolved "cpu" or "gpu"; LiteRT and OpenCV run on the CPU
            and accept only "cpu" or "auto".

    Call arguments:
        images: float32 ``(B, H, W, 3)`` RGB normalised ``(x - 127.5) / 128``.

    Returns:
        float32 ``(B, D)`` L2-normalised embeddings (the model's first output).
    """

    def __init__(self, path, runtime="auto", channel_order="rgb", pixel_range="0-255",
                 layout="auto", input_size=None, num_threads=None, device="cpu"):
        self.path = Path(path)
        self.channel_order = _choice("channel_order", channel_order, CHANNEL_ORDERS)
        self.pixel_range = _choice("pixel_range", pixel_range, PIXEL_RANGES)
        self.num_threads = num_threads
        layout = _choice("layout", layout, LAYOUTS)
        runtime = _choice("runtime", runtime, RUNTIMES)
        requested_size = _size_pair(input_size)
        if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
            raise ValueError(f"`num_threads` must be a positive int or None, got {num_threads!r}")
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such model file")
        suffix = self.path.suffix.lower()
        if suffix not in _SUFFIX_RUNTIMES:
            raise ValueError(
                f"{self.path}: peer models must be .onnx or .tflite files, got suffix {suffix!r}"
            )
        if runtime == "auto":
            runtime = _SUFFIX_RUNTIMES[suffix][0]
        elif runtime not in _SUFFIX_RUNTIMES[suffix]:
            raise ValueError(
                f"{self.path}: runtime {runtime!r} cannot read {suffix} files; use one of "
                f"{', '.join(_SUFFIX_RUNTIMES[suffix])} (or 'auto')"
            )
        self.runtime = runtime
        device = _choice("device", device, DEVICES)
        if runtime == "onnxruntime":
            self.device, providers = onnxruntime_providers(device, self.path)
            self._backend = _OnnxRuntimeBackend(self.path, num_threads, providers)
        else:
            if device == "gpu":
                raise ValueError(
                    f"{self.path}: device='gpu' needs runtime 'onnxruntime'; {runtime} runs on "
                    f"the CPU here (use device='cpu' or 'auto')"
                )
            self.device = "cpu"
            opener = {"litert": _LiteRTBackend, "opencv": _OpenCVBackend}[runtime]
            self._backend = opener(self.path, num_threads)
        self.repaired_inputs = getattr(self._backend, "repaired_inputs", ())
        shape = self._backend.input_shape
        self.input_name = self._backend.input_name
        if layout == "auto":
            layout, self.layout_source = _detect_layout(shape, self.path, self._backend.shape_origin)
        else:
            self.layout_source = "given"
        self.layout = layout
        self.input_size = self._resolve_size(shape, requested_size)
        # Images per runtime call: the file's fixed batch (1 for SFace); 1 for OpenCV, whose 4.x
        # importer freezes a free batch dimension at 1 (larger batches fail or come out NaN);
        # None: whole batches.
        self.call_batch_size = shape[0] if shape is not None and shape[0] else None
        if self.call_batch_size is None and runtime == "opencv":
            self.call_batch_size = 1
        self.embedding_size = self._backend.output_size
        if self.embedding_size is None:
            # The file leaves the output size free (or OpenCV cannot say before running):
            # one blank batch finds it and rejects a non-(B, D) output now rather than mid-run.
            blank = np.zeros((self.call_batch_size or 1, *self.input_size, 3), np.float32)
            self(blank)

    def __call__(self, images):
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"{self.path.name}: expected normalised RGB images (B, H, W, 3), got shape "
                f"{images.shape}"
            )
        if not np.issubdtype(images.dtype, np.floating):
            raise TypeError(
                f"{self.path.name}: expected float images normalised (x - 127.5) / 128, got dtype "
                f"{images.dtype}"
            )
        batch = self.preprocess(images)
        if len(batch) == 0:
            return np.zeros((0, self.embedding_size or 0), np.float32)
        step = self.call_batch_size or len(batch)
        outputs = []
        for start in range(0, len(batch), step):
            chunk = batch[start:start + step]
            count = len(chunk)
            if count < step:
                # A fixed-batch file only takes exactly `step` images: pad, then drop the padding.
                padding = np.zeros((step - count, *chunk.shape[1:]), chunk.dtype)
                chunk = np.concatenate([chunk, padding])
            output = self._backend.run(chunk)
            outputs.append(self._check_output(output, step)[:count])
        embeddings = np.concatenate(outputs).astype(np.float32)
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        return embeddings / np.maximum(norms, 1e-12)

    def preprocess(self, images):
        """Normalised kerasface images -> the float32 array the peer file is fed."""
        pixels = np.asarray(images, np.float32) * np.float32(PIXEL_SCALE) + np.float32(PIXEL_MEAN)
        if tuple(pixels.shape[1:3]) != self.input_size:
            pixels = _resize(pixels, self.input_size)
        if self.channel_order == "bgr":
            pixels = pixels[..., ::-1]
        if self.pixel_range == "0-1":
            pixels = pixels / np.float32(255.0)
        elif self.pixel_range == "-1-1":
            pixels = (pixels - np.float32(127.5)) / np.float32(127.5)
        elif self.pixel_range == "kerasface":
            pixels = (pixels - np.float32(PIXEL_MEAN)) / np.float32(PIXEL_SCALE)
        if self.layout == "nchw":
            pixels = pixels.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(pixels, np.float32)

    def describe(self):
        """One line: file, runtime, input layout and size, batching, channels, range, output."""
        height, width = self.input_size
        batch = self.call_batch_size or "B"
        if self.layout == "nchw":
            shape = f"NCHW {batch}x3x{height}x{width}"
        else:
            shape = f"NHWC {batch}x{height}x{width}x3"
        batching = ("whole batches" if self.call_batch_size is None
                    else "fed image by image" if self.call_batch_size == 1
                    else f"fed {self.call_batch_size} at a time (last call padded)")
        output = f"{self.embedding_size}-d" if self.embedding_size else "?-d"
        repair = ""
        if self.repaired_inputs:
            repair = (f", graph repaired in memory ({len(self.repaired_inputs)} unfed weight "
                      f"inputs read from their dequantised copies)")
        return (f"{self.path.name} via {self.runtime}: input {self.input_name!r} {shape} "
                f"(layout {self.layout_source}), {batching}, {self.channel_order.upper()}, "
                f"pixels {self.pixel_range}, output {output}{repair}")

    def get_config(self):
        """The resolved constructor arguments."""
        return {
            "path": str(self.path),
            "runtime": self.runtime,
            "channel_order": self.channel_order,
            "pixel_range": self.pixel_range,
            "layout": self.layout,
            "input_size": self.input_size,
            "num_threads": self.num_threads,
            "device": self.device,
        }

    def __repr__(self):
        return f"PeerModel({self.describe()})"

    def _resolve_size(self, shape, requested):
        spatial = None
        if shape is not None:
            spatial = shape[2:4] if self.layout == "nchw" else shape[1:3]
            channels = shape[1] if self.layout == "nchw" else shape[3]
            if channels not in (None, 3):
                raise ValueError(
                    f"{self.path}: with layout {self.layout!r} the input {self.input_name!r} of "
                    f"shape {_show_shape(shape)} has {channels} channels, expected 3"
                )
        if spatial is None or None in spatial:
            return requested or (IMAGE_SIZE, IMAGE_SIZE)
        spatial = tuple(int(size) for size in spatial)
        if requested is not None and requested != spatial:
            raise ValueError(
                f"{self.path}: `input_size` {requested} differs from the model input "
                f"{spatial} (input {self.input_name!r} of shape {_show_shape(shape)})"
            )
        return spatial

    def _check_output(self, output, batch_size):
        output = np.asarray(output)
        if output.ndim != 2 or output.shape[0] != batch_size:
            raise ValueError(
                f"{self.path}: the model output must be (batch, D) embeddings, got shape "
                f"{output.shape} for a batch of {batch_size}"
            )
        if self.embedding_size is None:
            self.embedding_size = int(output.shape[1])
        return output


def open_embedder(model_path, **peer_options):
    """The embed function for a model path: kerasface model or peer file.

    Args:
        model_path: a kerasface ``.keras`` file or ``kerasface train`` run directory
            (:func:`kerasface.models.load_embedding_model`), or a ``.onnx``/``.tflite`` file
            (:class:`PeerModel`).
        **peer_options: :class:`PeerModel` arguments (``runtime``, ``channel_order``,
            ``pixel_range``, ``layout``, ``input_size``, ``num_threads``). None values are
            ignored, so a CLI can pass its unset flags; set ones are an error for a kerasface
            model, which has a single input convention.

    Returns:
        a ``keras.Model`` or a :class:`PeerModel`.
    """
    path = Path(model_path)
    options = _given_options(peer_options)
    if path.suffix.lower() in PEER_SUFFIXES:
        return PeerModel(path, **options)
    _check_kerasface_model(path, options)
    from kerasface.models import load_embedding_model

    return load_embedding_model(path)


def model_fingerprint(model_path, **options):
    """Short hash naming a model file and the preprocessing it runs with, for embedding caches.

    Hashes the bytes of the file (for a run directory, of the model file
    ``load_embedding_model`` would load) and, for peer files, the preprocessing options with
    their defaults filled in (so ``runtime="auto"`` and no ``runtime`` agree). ``num_threads``
    does not change embeddings and is left out; the file name is left out too, so a renamed
    copy keeps its cache. The runtime is kept: OpenCV and onnxruntime differ in the last bits.

    Args:
        model_path: as for :func:`open_embedder`.
        **options: as for :func:`open_embedder` (None values ignored).

    Returns:
        16 hex characters.
    """
    path = Path(model_path)
    options = _given_options(options)
    if path.suffix.lower() in PEER_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such model file")
        unknown = sorted(set(options) - set(_PEER_DEFAULTS) - set(_RUN_ONLY_OPTIONS))
        if unknown:
            raise TypeError(f"unknown peer model options {unknown}; allowed: "
                            f"{sorted(_PEER_DEFAULTS) + list(_RUN_ONLY_OPTIONS)}")
        canonical = {**_PEER_DEFAULTS, **options}
        for key in _RUN_ONLY_OPTIONS:
            canonical.pop(key, None)
        for key, allowed in (("runtime", RUNTIMES), ("channel_order", CHANNEL_ORDERS),
                             ("pixel_range", PIXEL_RANGES), ("layout", LAYOUTS)):
            canonical[key] = _choice(key, canonical[key], allowed)
        size = _size_pair(canonical["input_size"])
        canonical["input_size"] = None if size is None else list(size)
    else:
        _check_kerasface_model(path, options)
        from kerasface.models.loading import resolve_model_file

        path = resolve_model_file(path)
        canonical = {}
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    digest.update(json.dumps(canonical, sort_keys=True).encode())
    return digest.hexdigest()[:16]


class _OnnxRuntimeBackend:
    shape_origin = "onnxruntime input shape"

    def __init__(self, path, num_threads, providers=("CPUExecutionProvider",)):
        import onnxruntime

        self.path = path
        # Graph inputs rewired by repair_unfed_weight_inputs (empty when the file ran as is).
        self.repaired_inputs = ()
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # old-IR files warn once per initializer listed as input
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
        session, error = _onnxruntime_session(onnxruntime, str(path), options, providers)
        if error is not None or len(session.get_inputs()) != 1:
            # OpenCV zoo's block-quantised files list their quantised weights as graph inputs
            # that nothing feeds; the dequantised copies exist in the graph, so reading those
            # instead gives the graph OpenCV runs.
            repaired, rewired = _repaired_onnx_bytes(path)
            if rewired:
                repaired_session, repaired_error = _onnxruntime_session(
                    onnxruntime, repaired, options, providers
                )
                if repaired_error is None:
                    session, error, self.repaired_inputs = repaired_session, None, rewired
        if error is not None:
            raise RuntimeError(
                f"{path}: onnxruntime cannot load this file: {error}{_opencv_hint(path)}"
            ) from error
        self.session = session
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            names = [item.name for item in inputs]
            shown = ", ".join(names[:4]) + (f", ... ({len(names)} in all)" if len(names) > 4 else "")
            raise RuntimeError(
                f"{path}: onnxruntime needs values for {len(names)} graph inputs ({shown}); a face "
                f"model takes one image tensor{_opencv_hint(path)}"
            )
        self.input_name = inputs[0].name
        self.input_type = inputs[0].type
        if self.input_type not in ("tensor(float)", "tensor(float16)"):
            raise ValueError(
                f"{path}: input {self.input_name!r} is {self.input_type}; PeerModel feeds float "
                f"tensors (tensor(float) or tensor(float16))"
            )
        self.input_shape = _shape_tuple(inputs[0].shape)
        output_shape = _shape_tuple(self.session.get_outputs()[0].shape)
        self.output_size = output_shape[-1] if output_shape and len(output_shape) == 2 else None

    def run(self, batch):
        if self.input_type == "tensor(float16)":
            batch = batch.astype(np.float16)
        try:
            return self.session.run(None, {self.input_name: batch})[0].astype(np.float32)
        except Exception as error:
            raise RuntimeError(
                f"{self.path}: onnxruntime failed on a batch of shape {batch.shape}: "
                f"{error}{_opencv_hint(self.path)}"
            ) from error


def onnxruntime_providers(device, path=None):
    """``(resolved device, onnxruntime providers)`` for ``device`` "cpu", "gpu" or "auto".

    Raises:
        RuntimeError: "gpu" without ``CUDAExecutionProvider`` (onnxruntime-gpu not installed,
            or no CUDA device), naming the providers that are available.
    """
    import onnxruntime

    device = _choice("device", device, DEVICES)
    available = onnxruntime.get_available_providers()
    cuda = _CUDA_PROVIDER in available
    if device == "gpu" and not cuda:
        where = f"{path}: " if path is not None else ""
        raise RuntimeError(
            f"{where}device='gpu' needs onnxruntime's {_CUDA_PROVIDER}, but onnxruntime "
            f"{onnxruntime.__version__} offers only {', '.join(available)}: install "
            f"onnxruntime-gpu (in place of onnxruntime) with a CUDA GPU, or use device='cpu' or 'auto'"
        )
    if device == "cpu" or not cuda:
        return "cpu", ("CPUExecutionProvider",)
    return "gpu", (_CUDA_PROVIDER, "CPUExecutionProvider")


def _onnxruntime_session(onnxruntime, model, options, providers):
    """``(session, None)`` for a file path or serialized model, or ``(None, error)``."""
    try:
        return onnxruntime.InferenceSession(model, options, providers=list(providers)), None
    except Exception as error:  # onnxruntime raises its own exception types
        return None, error


def repair_unfed_weight_inputs(model):
    """Rewire the graph inputs of an ONNX model that no caller can feed; in place.

    OpenCV zoo's block-quantised files (e.g. SFace ``int8bq``) declare each quantised weight
    ``X`` as a graph input that Conv/Gemm nodes read, while a ``DequantizeLinear`` node makes
    ``X_dequantized`` (and often a ``Reshape`` makes ``X_reshaped``) from the int8 blocks.
    OpenCV resolves this itself; onnxruntime asks the caller for ``X``. Each such input that
    no initializer provides is replaced, in every node reading it, by ``X_reshaped`` (else
    ``X_dequantized``) and dropped from the graph inputs. Initializers that old-IR files
    also list as inputs are dropped from the inputs too, so onnxruntime folds them as
    constants.

    Args:
        model: an ``onnx.ModelProto``.

    Returns:
        the names of the rewired inputs (empty when there was nothing to repair).
    """
    graph = model.graph
    initializers = {tensor.name for tensor in graph.initializer}
    produced = {name for node in graph.node for name in node.output}
    replacements = {}
    for value in graph.input:
        if value.name in initializers:
            continue
        for suffix in ("_reshaped", "_dequantized"):
            if value.name + suffix in produced:
                replacements[value.name] = value.name + suffix
                break
    if not replacements:
        return ()
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in replacements:
                node.input[index] = replacements[name]
    kept = [value for value in graph.input
            if value.name not in replacements and value.name not in initializers]
    del graph.input[:]
    graph.input.extend(kept)
    return tuple(replacements)


def _repaired_onnx_bytes(path):
    """``(serialized repaired model, rewired input names)``; ``(None, ())`` when nothing to do."""
    try:
        import onnx
    except ImportError:
        return None, ()
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not a readable ONNX file: the caller's onnxruntime error stands
        return None, ()
    rewired = repair_unfed_weight_inputs(model)
    if not rewired:
        return None, ()
    return model.SerializeToString(), rewired


class _LiteRTBackend:
    shape_origin = "TFLite input shape"

    def __init__(self, path, num_threads):
        from ai_edge_litert.interpreter import Interpreter

        self.path = path
        kwargs = {} if num_threads is None else {"num_threads": num_threads}
        try:
            self.interpreter = Interpreter(model_path=str(path), **kwargs)
        except Exception as error:
            raise RuntimeError(f"{path}: LiteRT cannot load this file: {error}") from error
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise ValueError(
                f"{path}: a face model takes one image tensor, this file has {len(inputs)} inputs "
                f"({', '.join(item['name'] for item in inputs)})"
            )
        self._input = inputs[0]
        self._output = self.interpreter.get_output_details()[0]
        self.input_name = self._input["name"]
        self.input_shape = _shape_tuple(self._input["shape_signature"])
        output_shape = _shape_tuple(self._output["shape_signature"])
        self.output_size = output_shape[-1] if output_shape and len(output_shape) == 2 else None
        self._batch = None

    def run(self, batch):
        if self._batch != batch.shape:
            # resize_tensor_input also fixes free height/width, not only the batch.
            self.interpreter.resize_tensor_input(self._input["index"], list(batch.shape))
            self.interpreter.allocate_tensors()
            self._batch = batch.shape
        dtype = np.dtype(self._input["dtype"])
        if dtype != np.float32:
            scale, zero_point = self._input["quantization"]
            info = np.iinfo(dtype)
            batch = np.clip(np.round(batch / scale + zero_point), info.min, info.max).astype(dtype)
        self.interpreter.set_tensor(self._input["index"], batch)
        self.interpreter.invoke()
        output = self.interpreter.get_tensor(self._output["index"])
        if np.dtype(self._output["dtype"]) != np.float32:
            scale, zero_point = self._output["quantization"]
            output = (output.astype(np.float32) - zero_point) * scale
        return output


class _OpenCVBackend:
    def __init__(self, path, num_threads):
        try:
            import cv2
        except ImportError:
            raise ImportError(
                "runtime 'opencv' needs OpenCV's DNN module: "
                "pip install opencv-python-headless==4.14.0.94"
            ) from None
        self.path = path
        self._cv2 = cv2
        if num_threads is not None:
            cv2.setNumThreads(num_threads)
        try:
            self.net = cv2.dnn.readNet(str(path))
        except cv2.error as error:
            raise RuntimeError(
                f"{path}: OpenCV {cv2.__version__} cannot read this file: {error}"
            ) from error
        # OpenCV does not report input shapes before a forward pass: read them from the graph.
        self.input_name, self.input_shape, self.shape_origin = _onnx_graph_input(path)
        self.output_size = None

    def run(self, batch):
        try:
            self.net.setInput(batch)
            return self.net.forward()
        except self._cv2.error as error:
            raise RuntimeError(
                f"{self.path}: OpenCV failed on a batch of shape {batch.shape}: {error}"
            ) from error


def _onnx_graph_input(path):
    """(name, shape or None, where the shape came from) of the image input of an ONNX graph."""
    try:
        import onnx
    except ImportError:
        return "?", None, "fallback: NCHW assumed, the `onnx` package to read the graph is missing"
    model = onnx.load(str(path), load_external_data=False)
    initializers = {tensor.name for tensor in model.graph.initializer}
    consumed = {name for node in model.graph.node for name in node.input}
    # Old-IR files list weights as inputs too; the image is the input a node reads that no
    # initializer provides.
    candidates = [value for value in model.graph.input
                  if value.name not in initializers and value.name in consumed]
    if not candidates:
        return "?", None, "fallback: NCHW assumed, the ONNX graph names no image input"
    value = candidates[0]
    dims = value.type.tensor_type.shape.dim
    shape = tuple(dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None
                  for dim in dims)
    return value.name, shape or None, "ONNX graph input shape"


def _opencv_hint(path):
    """Advice for ONNX files onnxruntime rejects: not ONNX at all, or which quirk and runtime='opencv'."""
    reasons = []
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None:
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as error:
            return (f"; the file is not a readable ONNX model (expected an ONNX protobuf; "
                    f"onnx.load: {type(error).__name__}: {_first_line(error)})")
        try:
            blocked = [node for node in model.graph.node if node.op_type == "DequantizeLinear"
                       and any(attr.name == "block_size" and attr.i > 0 for attr in node.attribute)]
            if blocked:
                reasons.append(f"{len(blocked)} block-quantised DequantizeLinear nodes")
            initializers = {tensor.name for tensor in model.graph.initializer}
            consumed = {name for node in model.graph.node for name in node.input}
            dangling = [value.name for value in model.graph.input
                        if value.name not in initializers and value.name not in consumed]
            if dangling:
                reasons.append(f"{len(dangling)} graph inputs that no node reads (e.g. {dangling[0]!r})")
        except Exception:  # the hint is best effort; the caller's error stands on its own
            pass
    found = f"; the file has {' and '.join(reasons)}" if reasons else ""
    return (f"{found}. Files written for OpenCV's DNN module that cannot be repaired in memory "
            f"may still run with runtime='opencv' (--runtime opencv)")


def _first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else ""


def _detect_layout(shape, path, origin):
    if shape is None:
        if origin.startswith("fallback"):
            return "nchw", origin
        return "nchw", f"fallback: NCHW assumed, {origin} unknown; pass layout='nhwc' if wrong"
    if len(shape) != 4:
        raise ValueError(
            f"{path}: expected a 4-D image input, got shape {_show_shape(shape)} ({origin})"
        )
    first, last = shape[1] == 3, shape[3] == 3
    if first and not last:
        return "nchw", f"from {origin} {_show_shape(shape)}"
    if last and not first:
        return "nhwc", f"from {origin} {_show_shape(shape)}"
    return "nchw", (f"fallback: NCHW assumed, {origin} {_show_shape(shape)} does not tell; "
                    f"pass layout='nhwc' if wrong")


def _resize(pixels, size):
    import keras

    resized = keras.ops.image.resize(pixels, size, interpolation="bilinear", antialias=True,
                                     data_format="channels_last")
    return np.asarray(keras.ops.convert_to_numpy(resized), np.float32)


def _choice(name, value, allowed):
    if isinstance(value, str) and _ALIASES.get(value.lower()) in allowed:
        return _ALIASES[value.lower()]
    if not isinstance(value, str) or value.lower() not in allowed:
        aliases = [f"{alias} (= {target})" for alias, target in _ALIASES.items()
                   if target in allowed]
        shown = ", ".join([*allowed, *aliases])
        raise ValueError(f"`{name}` must be one of {shown}; got {value!r}")
    return value.lower()


def _size_pair(size):
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (size, size)
    try:
        pair = tuple(int(side) for side in size)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or min(pair) < 1 or pair != tuple(size):
        raise ValueError(f"`input_size` must be an int or (height, width) > 0, got {size!r}")
    return pair


def _shape_tuple(shape):
    """Runtime shape -> tuple with None for free dimensions (names, -1, 0)."""
    if shape is None:
        return None
    return tuple(int(size) if isinstance(size, (int, np.integer)) and size > 0 else None
                 for size in list(shape))


def _show_shape(shape):
    return "(" + ", ".join("?" if size is None else str(size) for size in shape) + ")"


def _given_options(options):
    return {key: value for key, value in options.items() if value is not None}


def _check_kerasface_model(path, options):
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file or run directory")
    if not path.is_dir() and path.suffix.lower() != ".keras":
        raise ValueError(
            f"{path}: expected a .keras file, a training run directory, or a peer "
            f"{' or '.join(PEER_SUFFIXES)} file; got suffix {path.suffix!r}"
        )
    if options:
        raise ValueError(
            f"{path}: {', '.join(f'{k}={v!r}' for k, v in sorted(options.items()))} only apply "
            f"to peer {' or '.join(PEER_SUFFIXES)} models; a kerasface model takes RGB "
            f"(x - 127.5) / 128 NHWC input"
        )
