"""One API to embed, compare and search faces with any kerasface export or third-party face model."""

import warnings
from pathlib import Path

import numpy as np

from kerasface.data.preprocessing import IMAGE_SIZE, normalize_numpy
from kerasface.export.runtimes import l2_normalize as _l2_normalize
from kerasface.infer.top_k_search import DEFAULT_MAX_SCORES, top_k_search

FORMATS = ("tflite", "onnx", "savedmodel", "keras")
RUNTIMES = ("auto", "onnxruntime", "litert", "opencv", "tensorflow")
DEVICES = ("cpu", "gpu", "auto")
DEFAULT_BATCH_SIZE = 64
_PEER_OPTION_DEFAULTS = {"channel_order": None, "pixel_range": None, "layout": "auto",
                         "input_size": None}
_EXPECTED = {
    "tflite": "a TFLite flatbuffer for LiteRT",
    "onnx": "an ONNX model for onnxruntime",
    "savedmodel": "a SavedModel directory from kerasface.export.export_saved_model",
    "keras": "a kerasface .keras embedding model or training run directory",
}


class FaceEmbedder:
    """Aligned face images -> L2-normalised embeddings, whatever file the model is in.

    Reads kerasface exports (``.tflite`` through LiteRT, ``.onnx`` through onnxruntime, a
    SavedModel directory; recognised by their metadata, the ``<path>.json`` sidecar or the
    metadata inside a ``.tflite``), kerasface ``.keras`` files and training run directories
    (through TensorFlow), and third-party ``.onnx``/``.tflite`` face models through
    :class:`kerasface.evaluation.peer_model.PeerModel` (``channel_order``, ``pixel_range``,
    ``layout``, ``input_size`` say what they expect; unset ones take PeerModel's defaults,
    named in :meth:`describe`). Images are always uint8 RGB aligned crops (112x112 for
    kerasface models; third-party models also take crops of their own input size).

    Args:
        path: model file or directory.
        runtime: "auto" (by format: LiteRT, onnxruntime, TensorFlow), "onnxruntime",
            "litert", "opencv" (OpenCV DNN, ``.onnx`` only) or "tensorflow" (SavedModel,
            ``.keras``).
        channel_order, pixel_range, layout, input_size: third-party files only (see
            PeerModel); ignored, with a warning and a note in :meth:`describe`, for kerasface
            files, whose metadata fixes RGB ``(x - 127.5) / 128`` NHWC 112x112.
        num_threads: LiteRT/onnxruntime/OpenCV threads (None: the runtime's default).
            TensorFlow's thread pools are fixed when TensorFlow starts, so it is noted and
            not applied for SavedModel and ``.keras`` models.
        device: "cpu", "gpu" or "auto" (GPU when available). onnxruntime uses
            ``CUDAExecutionProvider`` (onnxruntime-gpu; "gpu" without it is an error);
            TensorFlow places the model on "/CPU:0" or "/GPU:0" ("gpu" without a visible GPU
            is an error; "auto" lets TensorFlow choose); LiteRT and OpenCV run on the CPU and
            ignore "auto" ("gpu" is an error).

    Attributes:
        format: "tflite", "onnx", "savedmodel" or "keras".
        runtime: the runtime that runs the model.
        embedding_size: D.
        input_size: (height, width) the model takes.
        metadata: the kerasface export metadata dict, or None.
        device: the resolved "cpu" or "gpu" ("auto" when TensorFlow places the model itself).
        notes: what was assumed or ignored, as shown by :meth:`describe`.
    """

    def __init__(self, path, runtime="auto", channel_order=None, pixel_range=None,
                 layout="auto", input_size=None, num_threads=None, device="cpu"):
        self.path = Path(path)
        self.num_threads = num_threads
        self.notes = []
        runtime = _choice("runtime", runtime, RUNTIMES)
        device = _choice("device", device, DEVICES)
        if num_threads is not None and (
            isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1
        ):
            raise ValueError(f"`num_threads` must be a positive int or None, got {num_threads!r}")
        peer_options = {"channel_order": channel_order, "pixel_range": pixel_range,
                        "layout": layout, "input_size": input_size}
        given = {key: value for key, value in peer_options.items()
                 if value != _PEER_OPTION_DEFAULTS[key]}
        self.format = _detect_format(self.path)
        self.metadata = None if self.format == "keras" else _read_metadata(self.path)
        self.is_kerasface = self.format in ("savedmodel", "keras") or self.metadata is not None
        if self.is_kerasface and given:
            shown = ", ".join(f"{key}={value!r}" for key, value in sorted(given.items()))
            note = (f"{shown} ignored: a kerasface {self.format} file takes RGB (x - 127.5) / 128 "
                    f"NHWC {IMAGE_SIZE}x{IMAGE_SIZE} (from its metadata)")
            warnings.warn(f"{self.path}: {note}", stacklevel=2)
            self.notes.append(note)
        self._peer = None
        self._runner = None
        self._keras_model = None
        self._tf_device = None
        if self.format in ("savedmodel", "keras"):
            self._open_tensorflow(runtime, device)
        elif self.is_kerasface:
            self._open_export(runtime, device)
        else:
            self._open_peer(runtime, device, peer_options)

    # ------------------------------------------------------------------ opening

    def _open_tensorflow(self, runtime, device):
        if runtime not in ("auto", "tensorflow"):
            raise ValueError(
                f"{self.path}: a {self.format} model runs in TensorFlow; runtime {runtime!r} "
                f"does not apply (use 'auto' or 'tensorflow')"
            )
        self.runtime = "tensorflow"
        import tensorflow as tf

        if device == "gpu" and not tf.config.list_physical_devices("GPU"):
            raise RuntimeError(f"{self.path}: device='gpu' but TensorFlow sees no GPU; use "
                               f"device='cpu' or 'auto'")
        self.device = device
        self._tf_device = {"cpu": "/CPU:0", "gpu": "/GPU:0", "auto": None}[device]
        if self.num_threads is not None:
            self.notes.append(f"num_threads={self.num_threads} not applied: TensorFlow's thread "
                              f"pools are set when it starts")
        try:
            if self.format == "savedmodel":
                from kerasface.export import SavedModelRunner

                self._runner = SavedModelRunner(self.path)
                self.embedding_size = int(self._runner.embedding_size)
                self.input_size = _spatial(self._runner.input_shape)
            else:
                from kerasface.models import load_embedding_model

                self._keras_model = load_embedding_model(self.path)
                shape = tuple(self._keras_model.inputs[0].shape)
                self.embedding_size = int(self._keras_model.outputs[0].shape[-1])
                self.input_size = _spatial(shape[1:])
        except (FileNotFoundError, ImportError):
            raise
        except Exception as error:
            raise ValueError(f"{self.path}: cannot load {_EXPECTED[self.format]}: "
                             f"{type(error).__name__}: {_first_line(error)}") from error

    def _open_export(self, runtime, device):
        native = {"tflite": "litert", "onnx": "onnxruntime"}[self.format]
        if runtime == "auto":
            runtime = native
        if runtime == "opencv" and self.format == "onnx":
            # OpenCV DNN reads our ONNX too: PeerModel with the kerasface input convention.
            self._open_peer(runtime, device, {"channel_order": "rgb", "pixel_range": "kerasface",
                                              "layout": "nhwc", "input_size": None})
            return
        if runtime != native:
            raise ValueError(f"{self.path}: runtime {runtime!r} cannot read .{self.format} files; "
                             f"use {native!r} or 'auto'")
        self.runtime = runtime
        from kerasface.export import OnnxRunner, TFLiteRunner

        try:
            if self.format == "tflite":
                self.device = _cpu_only(self.path, "LiteRT", device, self.notes)
                self._runner = TFLiteRunner(self.path, num_threads=self.num_threads)
            else:
                self._runner = OnnxRunner(self.path, num_threads=self.num_threads, device=device)
                self.device = ("gpu" if "CUDAExecutionProvider" in self._runner.providers
                               else "cpu")
        except (FileNotFoundError, ImportError):
            raise
        except RuntimeError as error:
            if "device='gpu'" in str(error):
                raise
            raise ValueError(self._load_error(error)) from error
        except Exception as error:
            raise ValueError(self._load_error(error)) from error
        self.embedding_size = int(self._runner.embedding_size)
        self.input_size = _spatial(self._runner.input_shape)
        stated = (self.metadata or {}).get("embedding_size")
        if stated is not None and int(stated) != self.embedding_size:
            raise ValueError(f"{self.path}: the metadata says {stated}-d embeddings, the file "
                             f"outputs {self.embedding_size}-d")

    def _open_peer(self, runtime, device, options):
        from kerasface.evaluation.peer_model import PeerModel

        if runtime == "tensorflow":
            raise ValueError(f"{self.path}: runtime 'tensorflow' is for SavedModel and .keras "
                             f"models, not .{self.format} files")
        assumed = {"channel_order": "rgb", "pixel_range": "0-255"}
        defaults = [f"{key}={value!r}" for key, value in assumed.items() if options[key] is None]
        kwargs = {key: value for key, value in options.items() if value is not None}
        if defaults and not self.is_kerasface:
            self.notes.append(
                f"no kerasface metadata ({self.path}.json): third-party model, "
                f"{' and '.join(defaults)} assumed (PeerModel defaults; pass them if the model "
                f"expects otherwise)"
            )
        self._peer = PeerModel(self.path, runtime=runtime, num_threads=self.num_threads,
                               device=device, **kwargs)
        self.runtime = self._peer.runtime
        self.device = self._peer.device
        if device == "auto" and self.runtime != "onnxruntime":
            self.notes.append(f"device='auto': {self.runtime} runs on the CPU")
        self.embedding_size = int(self._peer.embedding_size)
        self.input_size = tuple(self._peer.input_size)

    def _load_error(self, error):
        return (f"{self.path}: cannot load {_EXPECTED[self.format]} (is the file complete and "
                f"really .{self.format}?): {type(error).__name__}: {_first_line(error)}")

    # ------------------------------------------------------------------ embedding

    def embed(self, images, batch_size=DEFAULT_BATCH_SIZE):
        """Aligned faces -> float32 ``(N, D)`` L2-normalised embeddings.

        Args:
            images: uint8 RGB ``(N, H, W, 3)``, one ``(H, W, 3)`` image (gives ``(1, D)``),
                or a list of image file paths (read with PIL, converted to RGB).
            batch_size: images per runtime call.

        Returns:
            float32 ``(N, D)``; ``(0, D)`` for an empty batch.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be an int >= 1, got {batch_size!r}")
        images = self.check_images(images)
        if len(images) == 0:
            return np.zeros((0, self.embedding_size), np.float32)
        outputs = [self._embed_batch(images[i:i + batch_size])
                   for i in range(0, len(images), batch_size)]
        return _l2_normalize(np.concatenate(outputs))

    def __call__(self, images, batch_size=DEFAULT_BATCH_SIZE):
        """Normalised float32 ``(B, H, W, 3)`` images ``(x - 127.5) / 128`` -> ``(B, D)``.

        The embed function that :func:`kerasface.evaluation.evaluate_set` and the benchmarks
        call; :meth:`embed` is the one for pixels.
        """
        images = np.asarray(images)
        if not np.issubdtype(images.dtype, np.floating):
            raise TypeError(f"{self.path.name}: calling the embedder takes normalised float "
                            f"images, got dtype {images.dtype}; use embed() for uint8 pixels")
        self._check_shape(images)
        images = images.astype(np.float32, copy=False)
        if len(images) == 0:
            return np.zeros((0, self.embedding_size), np.float32)
        outputs = [self._run_normalized(images[i:i + batch_size])
                   for i in range(0, len(images), batch_size)]
        return _l2_normalize(np.concatenate(outputs))

    def _embed_batch(self, pixels):
        if self.format == "savedmodel":
            # serving_default takes the pixels and normalises inside the graph.
            return self._in_tf_device(lambda: self._runner.embed(pixels, batch_size=len(pixels)))
        return self._run_normalized(normalize_numpy(pixels))

    def _run_normalized(self, batch):
        if self._peer is not None:
            return self._peer(batch)
        if self._keras_model is not None:
            # predict_on_batch runs a compiled graph: 13x faster per face than an eager call
            # (docs/export_latency.md).
            return self._in_tf_device(lambda: np.asarray(self._keras_model.predict_on_batch(batch)))
        if self.format == "savedmodel":
            return self._in_tf_device(lambda: self._runner(batch, batch_size=len(batch)))
        return self._runner(batch, batch_size=len(batch))

    def _in_tf_device(self, function):
        if self._tf_device is None:
            return function()
        import tensorflow as tf

        with tf.device(self._tf_device):
            return function()

    def check_images(self, images):
        """``images`` as embed() takes them, as a checked uint8 ``(N, H, W, 3)`` array.

        Raises the errors :meth:`embed` raises (dtype, channels, size, unreadable file)
        without running the model, so a caller can skip bad images one by one.
        """
        if isinstance(images, (str, Path)):
            return read_rgb_image(images)[None]
        if isinstance(images, (list, tuple)) and (
            len(images) == 0 or isinstance(images[0], (str, Path))
        ):
            if not images:
                return np.zeros((0, *self.input_size, 3), np.uint8)
            if not all(isinstance(item, (str, Path)) for item in images):
                raise TypeError("embed() takes a list of image paths or an array of images, "
                                "got a list mixing paths and other values")
            images = [read_rgb_image(item) for item in images]
            shapes = sorted({image.shape for image in images})
            if len(shapes) > 1:
                raise ValueError(
                    f"the images have different sizes {', '.join(_show_hw(s) for s in shapes)}; "
                    f"expected {self._expected_sizes()} aligned faces"
                )
            images = np.stack(images)
        images = np.asarray(images)
        if images.dtype != np.uint8:
            hint = (" (for normalised floats (x - 127.5) / 128 call the embedder itself)"
                    if np.issubdtype(images.dtype, np.floating) else "")
            raise TypeError(f"embed() takes uint8 RGB pixels 0-255, got {images.dtype}{hint}")
        if images.ndim == 2:
            raise ValueError(f"embed() got a grayscale image of shape {images.shape}; expected "
                             f"RGB (H, W, 3) (convert it, e.g. PIL's .convert('RGB'))")
        if images.ndim == 3:
            if images.shape[-1] in (1, 3, 4):
                images = images[None]  # one image; 1 or 4 channels are named below
            else:
                raise ValueError(
                    f"embed() takes (N, H, W, 3) images or one (H, W, 3) image, got shape "
                    f"{images.shape} (a batch of grayscale images? convert them to RGB)"
                )
        if images.ndim != 4:
            raise ValueError(f"embed() takes (N, H, W, 3) images or one (H, W, 3) image, got "
                             f"shape {images.shape}")
        self._check_shape(images)
        return images

    def _check_shape(self, images):
        if images.ndim != 4:
            raise ValueError(f"expected (N, H, W, 3) images, got shape {images.shape}")
        channels = images.shape[-1]
        if channels != 3:
            kind = {1: "grayscale (1 channel)", 4: "RGBA (4 channels)"}.get(
                channels, f"{channels}-channel")
            raise ValueError(f"expected RGB images with 3 channels, got {kind} images of shape "
                             f"{images.shape}" + ("; drop the alpha channel (image[..., :3])"
                                                  if channels == 4 else "; convert to RGB"))
        size = tuple(images.shape[1:3])
        if len(images) and size not in self._accepted_sizes():
            raise ValueError(
                f"expected {self._expected_sizes()} aligned faces, got {_show_hw(size)} "
                f"(height x width) in images of shape {images.shape}"
            )

    def _accepted_sizes(self):
        sizes = {tuple(self.input_size)}
        if self._peer is not None:
            sizes.add((IMAGE_SIZE, IMAGE_SIZE))  # PeerModel resizes kerasface crops
        if None in self.input_size:
            return _AnySize()
        return sizes

    def _expected_sizes(self):
        sizes = self._accepted_sizes()
        if isinstance(sizes, _AnySize):
            return "any size of"
        return " or ".join(_show_hw(size) for size in sorted(sizes, key=lambda s: s != (112, 112)))

    # ------------------------------------------------------------------ comparing

    def compare(self, a, b, batch_size=DEFAULT_BATCH_SIZE):
        """Cosine similarity of faces or embeddings ``a`` and ``b``.

        Args:
            a, b: each uint8 image(s) as for :meth:`embed` (an array, a path or a list of
                paths), or float embeddings ``(D,)`` or ``(N, D)``.

        Returns:
            a Python float when both are single (one image, one path or a 1-D embedding);
            else float32 ``(N,)`` for equal numbers of rows (one single side is compared with
            every row of the other).
        """
        first, single_a = self._as_embeddings(a, "a", batch_size)
        second, single_b = self._as_embeddings(b, "b", batch_size)
        if first.shape[1] != second.shape[1]:
            raise ValueError(f"embedding sizes differ: `a` has {first.shape[1]} values, `b` "
                             f"{second.shape[1]}")
        if len(first) != len(second) and 1 not in (len(first), len(second)):
            raise ValueError(f"compare() needs equal numbers of faces or one against many, got "
                             f"{len(first)} and {len(second)}")
        scores = np.sum(_l2_normalize(first) * _l2_normalize(second), axis=1).astype(np.float32)
        if single_a and single_b:
            return float(scores[0])
        return scores

    def search(self, gallery, probes, k=5, batch_size=DEFAULT_BATCH_SIZE,
               max_scores=DEFAULT_MAX_SCORES):
        """The ``k`` most similar gallery faces of each probe (exact cosine search).

        Args:
            gallery: float embeddings ``(G, D)`` (e.g. a memory-mapped ``.npy``) or images.
            probes: float embeddings ``(P, D)``/``(D,)`` or images.
            k: matches per probe; more than ``G`` is clamped to ``G`` (a warning, and
                ``note`` on the result says so).
            max_scores: similarities held in memory at once; the search runs over probe
                chunks and gallery blocks within it.

        Returns:
            :class:`kerasface.infer.SearchResult` (``indices`` int64 ``(P, k)``, ``scores``
            float32 ``(P, k)``, best first).
        """
        gallery, _ = self._as_embeddings(gallery, "gallery", batch_size, normalize=False)
        probes, _ = self._as_embeddings(probes, "probes", batch_size, normalize=False)
        return top_k_search(gallery, probes, k=k, max_scores=max_scores)

    def _as_embeddings(self, values, name, batch_size, normalize=True):
        """``(float (N, D), single)`` for images, paths or embeddings."""
        if isinstance(values, (str, Path)):
            return self.embed([values], batch_size), True
        if isinstance(values, (list, tuple)) and values and isinstance(values[0], (str, Path)):
            return self.embed(list(values), batch_size), False
        array = values if isinstance(values, np.ndarray) else np.asarray(values)
        if array.dtype == np.uint8:
            single = array.ndim == 3 and array.shape[-1] in (1, 3, 4)
            return self.embed(array, batch_size), single
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f"`{name}` must be uint8 images or float embeddings, got dtype "
                            f"{array.dtype}")
        if array.ndim not in (1, 2):
            raise ValueError(f"float `{name}` must be embeddings (D,) or (N, D), got shape "
                             f"{array.shape}; images must be uint8")
        single = array.ndim == 1
        array = array[None] if single else array
        if array.shape[1] != self.embedding_size:
            raise ValueError(f"`{name}` embeddings have {array.shape[1]} values, this model "
                             f"makes {self.embedding_size}")
        return (array.astype(np.float32) if normalize else array), single

    # ------------------------------------------------------------------ describing

    def describe(self):
        """One line: file, format, runtime, input, embedding size, device, and every assumption."""
        if self._peer is not None:
            body = self._peer.describe()
        else:
            height, width = self.input_size
            name = (self.metadata or {}).get("model_name")
            quantization = (self.metadata or {}).get("quantization")
            extras = "".join([f" model {name!r}," if name else "",
                              f" {quantization} quantisation," if quantization else ""])
            body = (f"{self.path.name} ({self.format}) via {self.runtime}:{extras} uint8 RGB "
                    f"{height}x{width} faces -> (x - 127.5) / 128 -> {self.embedding_size}-d")
        threads = "" if self.num_threads is None else f", {self.num_threads} threads"
        notes = "".join(f"; NOTE: {note}" for note in self.notes)
        return f"{body}; device {self.device}{threads}{notes}"

    def get_config(self):
        """The resolved constructor arguments."""
        config = {"path": str(self.path), "runtime": self.runtime,
                  "num_threads": self.num_threads, "device": self.device}
        if self._peer is not None and not self.is_kerasface:
            peer = self._peer.get_config()
            config.update({key: peer[key] for key in _PEER_OPTION_DEFAULTS})
        return config

    def __repr__(self):
        return f"FaceEmbedder({self.describe()})"


def read_rgb_image(path):
    """An image file as uint8 ``(H, W, 3)`` RGB (PIL; grayscale and RGBA are converted).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be decoded, naming it.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ValueError(f"{path}: cannot read the image: {type(error).__name__}: "
                         f"{_first_line(error)}") from None


class _AnySize:
    def __contains__(self, size):
        return True


def _detect_format(path):
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such model file or directory (expected a .tflite or .onnx file, a "
            f"SavedModel directory, a .keras file or a training run directory)"
        )
    if path.is_dir():
        return "savedmodel" if (path / "saved_model.pb").is_file() else "keras"
    suffix = path.suffix.lower()
    formats = {".tflite": "tflite", ".onnx": "onnx", ".keras": "keras"}
    if suffix not in formats:
        raise ValueError(f"{path}: cannot tell the model format from suffix {suffix!r}; expected "
                         f".tflite, .onnx, .keras, a SavedModel directory or a run directory")
    return formats[suffix]


def _read_metadata(path):
    import kerasface.export as export

    # ValueError naming the file: a sidecar that is not JSON, a .tflite that is no flatbuffer.
    reader = getattr(export, "read_metadata", export.read_sidecar)
    return reader(path)


def _cpu_only(path, runtime, device, notes):
    if device == "gpu":
        raise ValueError(f"{path}: device='gpu' is not available with {runtime}, which runs on "
                         f"the CPU here; use device='cpu' or 'auto' (or an .onnx model)")
    if device == "auto":
        notes.append(f"device='auto': {runtime} runs on the CPU")
    return "cpu"


def _spatial(shape):
    height, width = shape[0], shape[1]
    return (None if height is None else int(height), None if width is None else int(width))


def _show_hw(size):
    return "x".join("?" if side is None else str(side) for side in size)


def _choice(name, value, allowed):
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ValueError(f"`{name}` must be one of {', '.join(allowed)}; got {value!r}")
    return value.lower()


def _first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__
