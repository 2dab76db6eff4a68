"""TFLite export (float32, float16, dynamic-range or full-integer int8) with builtin ops only."""

import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf

from kerasface.data.preprocessing import IMAGE_SIZE, normalize_numpy
from kerasface.export.prelu_rewrite import with_abs_form_prelu
from kerasface.export.saved_model_export import (
    OUTPUT_NAME,
    check_embedding_model,
    export_metadata,
    float32_compute_model,
    native_output_suppressed,
    write_endpoints,
    write_sidecar,
)

QUANTIZATIONS = (None, "float16", "dynamic", "int8")
# How int8 files compute PReLU: "abs" rewrites it as x * (1 + a) / 2 + |x| * (1 - a) / 2
# (AbsFormPReLU), which XNNPACK runs in int8; "native" keeps TFLite's PRELU op, which
# XNNPACK cannot run in int8, so each one splits the delegated graph (docs/export_latency.md).
INT8_PRELU_FORMS = ("abs", "native")
DEFAULT_CALIBRATION_IMAGES = 200
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Name of the flatbuffer Model.metadata entry holding the sidecar JSON.
EMBEDDED_METADATA_NAME = "kerasface"


class UnsupportedOpsError(ValueError):
    """The model needs ops outside the TFLite builtin set (Flex/select TF ops or custom ops).

    Args:
        message: what failed and how to fix it.
        ops: names of the offending ops.
    """

    def __init__(self, message, ops=()):
        super().__init__(message)
        self.ops = list(ops)


def export_tflite(
    model,
    path,
    quantize=None,
    calibration=None,
    int8_io=False,
    num_calibration_images=DEFAULT_CALIBRATION_IMAGES,
    seed=0,
    verbose=False,
    int8_prelu="abs",
):
    """Convert an embedding model to a TFLite flatbuffer using builtin ops only.

    The input is float32 normalised images ``(x - 127.5) / 128`` named ``image``, shape
    (B, 112, 112, 3) with a resizable batch; the output is the (B, D) embedding. With
    ``quantize="int8"`` every op runs in int8 (``TFLITE_BUILTINS_INT8``) with activation
    ranges calibrated on aligned faces; the float32 input and output are kept (quantised
    and dequantised inside the model) unless ``int8_io=True``, which makes both int8 and
    leaves the quantisation parameters to the caller (``TFLiteRunner`` handles them).
    A sidecar ``<path>.json`` records normalisation, embedding size, model name and
    quantisation.

    Args:
        model: embedding model, float32 (None, 112, 112, 3) -> (None, D).
        path: output ``.tflite`` file.
        quantize: None (float32), "float16" (float16 weights), "dynamic" (int8 weights,
            activations quantised on the fly) or "int8" (full-integer).
        calibration: int8 only. A directory of aligned 112x112 face images (searched
            recursively), a uint8 array (N, 112, 112, 3), or None for synthetic faces.
        int8_io: int8 only; int8 input and output tensors instead of float32.
        num_calibration_images: images sampled (deterministically) for calibration.
        seed: sampling seed for the calibration images.
        verbose: let the converter print its log.
        int8_prelu: int8 only. "abs" (default) converts each PReLU in the equivalent form
            ``x * (1 + a) / 2 + |x| * (1 - a) / 2`` that LiteRT's XNNPACK delegate runs in
            int8 (4.9x faster per face on MobileFaceNet than "native", mean cosine to Keras
            0.996 instead of 0.999); "native" keeps the PRELU op.

    Returns:
        ``Path`` of the written file.

    Raises:
        UnsupportedOpsError: the model needs non-builtin (Flex or custom) ops.
    """
    path = Path(path)
    if path.suffix != ".tflite":
        raise ValueError(
            f"TFLite output path must end in .tflite (runners pick the runtime by suffix), got {path}"
        )
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"`quantize` must be one of {QUANTIZATIONS}, got {quantize!r}")
    if int8_io and quantize != "int8":
        raise ValueError(f"`int8_io=True` needs quantize='int8', got quantize={quantize!r}")
    if calibration is not None and quantize != "int8":
        raise ValueError(
            f"`calibration` is only used with quantize='int8', got quantize={quantize!r}"
        )
    check_int8_prelu(int8_prelu)
    embedding_size = check_embedding_model(model)
    float32_model = float32_compute_model(model)
    extra = {"quantization": quantize, "int8_io": bool(int8_io)}
    calibration_images = None
    if quantize == "int8":
        extra["int8_prelu"] = int8_prelu
        calibration_images = load_calibration_images(calibration, num_calibration_images, seed)
        extra["calibration"] = {
            "source": _describe_source(calibration),
            "num_images": int(len(calibration_images)),
            "seed": int(seed),
        }

    def write_saved_model(directory):
        write_endpoints(
            float32_model,
            directory,
            {
                "serving_default": (
                    tflite_embedding_function(
                        float32_model, abs_form_prelu=quantize == "int8" and int8_prelu == "abs"
                    ),
                    tf.float32,
                )
            },
        )

    flatbuffer = convert_saved_model(
        model,
        write_saved_model,
        "serving_default",
        lambda converter: _configure(converter, quantize, calibration_images, int8_io),
        verbose=verbose,
    )
    ops = tflite_op_names(flatbuffer)
    return write_tflite_file(
        path, flatbuffer, export_metadata(model, "tflite", embedding_size, ops=ops, **extra)
    )


def check_int8_prelu(int8_prelu):
    """Raises ValueError unless ``int8_prelu`` is one of ``INT8_PRELU_FORMS``."""
    if int8_prelu not in INT8_PRELU_FORMS:
        raise ValueError(f"`int8_prelu` must be one of {INT8_PRELU_FORMS}, got {int8_prelu!r}")


def write_tflite_file(path, flatbuffer, metadata):
    """Write a ``.tflite`` file carrying ``metadata`` inside it and in the sidecar ``<path>.json``.

    The JSON goes into the flatbuffer as a ``Model.metadata`` entry named ``"kerasface"`` (an
    existing one is replaced), so a file copied without its sidecar still says how to feed
    it; ``read_metadata`` reads either. Interpreters ignore metadata entries they do not know.

    Args:
        path: output file.
        flatbuffer: the converter's ``bytes``.
        metadata: JSON-serialisable dict.

    Returns:
        ``Path`` of the written file.
    """
    path = Path(path)
    path.write_bytes(with_embedded_metadata(flatbuffer, metadata))
    write_sidecar(path, metadata)
    return path


def with_embedded_metadata(flatbuffer, metadata):
    """``flatbuffer`` re-packed with ``metadata`` as JSON in its ``"kerasface"`` metadata entry."""
    import json

    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    data = bytearray(flatbuffer)
    if not schema.Model.ModelBufferHasIdentifier(data, 0):
        raise ValueError("not a TFLite flatbuffer (no 'TFL3' file identifier)")
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    payload = np.frombuffer(
        json.dumps(metadata, sort_keys=True).encode("utf-8"), dtype=np.uint8
    ).copy()
    model.metadata = list(model.metadata or [])
    model.buffers = list(model.buffers or [])
    entry = next(
        (m for m in model.metadata if _decoded(m.name) == EMBEDDED_METADATA_NAME), None
    )
    if entry is None:
        # A new buffer rather than reusing one: buffer 0 is the shared empty buffer.
        model.buffers.append(schema.BufferT())
        entry = schema.MetadataT()
        entry.name = EMBEDDED_METADATA_NAME
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    model.buffers[entry.buffer].data = payload
    builder = flatbuffers.Builder(len(data) + len(payload) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_embedded_metadata(model):
    """The dict in the ``"kerasface"`` metadata entry of a ``.tflite`` path or bytes, or None.

    Raises:
        ValueError: the content is not a TFLite flatbuffer, or the entry is not JSON.
    """
    import json

    from ai_edge_litert import schema_py_generated as schema

    name = "flatbuffer" if isinstance(model, (bytes, bytearray)) else str(model)
    data = bytes(model) if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
    if len(data) < 8 or not schema.Model.ModelBufferHasIdentifier(data, 0):
        raise ValueError(f"{name}: not a valid TFLite file (no 'TFL3' flatbuffer identifier)")
    root = schema.Model.GetRootAs(data, 0)
    for i in range(root.MetadataLength()):
        entry = root.Metadata(i)
        if _decoded(entry.Name()) == EMBEDDED_METADATA_NAME:
            raw = root.Buffers(entry.Buffer()).DataAsNumpy()
            try:
                return json.loads(bytes(raw).decode("utf-8"))
            except (TypeError, ValueError) as error:
                raise ValueError(
                    f"{name}: the {EMBEDDED_METADATA_NAME!r} metadata entry is not JSON: {error}"
                ) from None
    return None


def _decoded(name):
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else name


def convert_saved_model(model, write_saved_model, signature_key, configure, verbose=False):
    """TFLite flatbuffer of the SavedModel ``write_saved_model(directory)`` writes, builtin ops only.

    Args:
        model: the Keras model behind it, named in errors.
        write_saved_model: callable writing a SavedModel into the directory it is given.
        signature_key: the signature to convert.
        configure: callable setting the converter's ops and quantisation.
        verbose: let the converter print its log.

    Raises:
        UnsupportedOpsError: the model needs Flex (select TF) or custom ops.
    """
    failure = None
    with tempfile.TemporaryDirectory(prefix="kerasface_tflite_") as tmp, native_output_suppressed(
        not verbose
    ):
        write_saved_model(tmp)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=[signature_key])
        configure(converter)
        try:
            flatbuffer = converter.convert()
        except Exception as error:  # ConverterError is not public API; match on its text
            failure = error
    if failure is not None:
        # Raised outside the silenced block: the explanation is in the message, not the MLIR dump.
        raise _unsupported_ops_error(failure, model) from failure
    not_builtin = [op for op in tflite_op_names(flatbuffer) if op.startswith("custom:")]
    if not_builtin:
        raise UnsupportedOpsError(
            f"model {model.name!r}: TFLite file would need non-builtin ops {not_builtin}",
            not_builtin,
        )
    return flatbuffer


def tflite_embedding_function(model, abs_form_prelu=False):
    """Like ``embedding_function`` but ending in ``tf.math.l2_normalize``, which TFLite fuses into one op.

    Keras' ``UnitNormalization`` lowers to SQUARE/SUM/RSQRT/MINIMUM/MUL; in int8 the RSQRT
    output alone is quantised so coarsely that rows get clipped (min cosine to Keras fell to
    0.97 on a test model). ``tf.math.l2_normalize`` becomes the builtin L2_NORMALIZATION op,
    which has a proper int8 kernel (0.994 on the same model). A final ``UnitNormalization``
    of the model is therefore replaced, not applied twice; any other model output is
    L2-normalised here, which the embedding-model contract makes a no-op in float.

    ``abs_form_prelu``: run the body with every PReLU as ``AbsFormPReLU``
    (``with_abs_form_prelu``), the form int8 XNNPACK runs.
    """
    import keras

    last = model.layers[-1] if model.layers else None
    body = model
    if (
        isinstance(last, keras.layers.UnitNormalization)
        and _last_axis_only(last.axis)
        and last.output is model.outputs[0]
    ):
        body = keras.Model(model.inputs, last.input, name=f"{model.name}_unnormalized")
    if abs_form_prelu:
        body = with_abs_form_prelu(body)

    def embed(image):
        features = keras.ops.cast(body(image, training=False), "float32")
        return {OUTPUT_NAME: tf.math.l2_normalize(features, axis=-1)}

    return embed


def _last_axis_only(axis):
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    return axes in ([-1], [1])


def _configure(converter, quantize, calibration_images, int8_io):
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize is None:
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        normalized = normalize_numpy(calibration_images)

        def representative_dataset():
            for i in range(len(normalized)):
                yield [normalized[i : i + 1]]

        converter.representative_dataset = representative_dataset
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8


def _unsupported_ops_error(error, model):
    text = str(error)
    ops = []
    for kind in ("Flex", "Custom"):
        for match in re.finditer(rf"{kind} ops: ([^\n]+)", text):
            ops.extend(op.strip() for op in match.group(1).split(",") if op.strip())
    if not ops:
        ops = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", text)))
    if not ops:
        ops = sorted(set(re.findall(r"'tf\.(\w+)' op is not supported", text)))
    if ops:
        return UnsupportedOpsError(
            f"model {model.name!r} uses TensorFlow ops with no TFLite builtin kernel: {', '.join(ops)}. "
            f"kerasface exports builtin ops only (no Flex/select TF ops); replace the layer using them.",
            ops,
        )
    lines = [line for line in text.splitlines() if "error" in line.lower()][:5]
    return RuntimeError(
        f"TFLite conversion of model {model.name!r} failed: " + ("\n".join(lines) or text[-2000:])
    )


def tflite_op_names(model):
    """Sorted op names of a TFLite file path or flatbuffer bytes.

    Builtin ops by their schema name (``CONV_2D``); custom ops, Flex ones included, as
    ``custom:<code>`` (``custom:FlexErf``). Read from the flatbuffer itself, so the list is
    what any runtime sees, before a delegate rewrites the graph.
    """
    from ai_edge_litert import schema_py_generated as schema

    data = bytes(model) if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
    root = schema.Model.GetRootAs(data, 0)
    builtin_names = {
        code: name
        for name, code in vars(schema.BuiltinOperator).items()
        if not name.startswith("_")
    }
    names = set()
    for i in range(root.OperatorCodesLength()):
        operator = root.OperatorCodes(i)
        # Codes below 127 live in the deprecated int8 field, newer ones in the int32 field.
        code = max(operator.BuiltinCode(), operator.DeprecatedBuiltinCode())
        if code == schema.BuiltinOperator.CUSTOM:
            names.add(f"custom:{(operator.CustomCode() or b'?').decode()}")
        else:
            names.add(builtin_names.get(code, f"builtin:{code}"))
    return sorted(names)


def load_calibration_images(calibration, num_images=DEFAULT_CALIBRATION_IMAGES, seed=0):
    """uint8 (N, 112, 112, 3) calibration faces from a directory, an array, or synthetic faces (None)."""
    if calibration is None:
        return synthetic_face_images(num_images, seed)
    return load_face_images(calibration, num_images, seed)


def load_face_images(source, max_images=None, seed=0):
    """Aligned RGB faces as uint8 (N, 112, 112, 3), sampled deterministically.

    Args:
        source: a directory searched recursively for .jpg/.jpeg/.png/.bmp/.webp files, or
            a uint8 array (N, 112, 112, 3).
        max_images: keep at most this many, drawn without replacement with ``seed``;
            None keeps all.
        seed: sampling seed.

    Returns:
        uint8 array. Unreadable or non-112x112 files are skipped, counted and reported in a
        warning; a source with no usable image raises ValueError.
    """
    rng = np.random.default_rng(seed)
    if isinstance(source, np.ndarray):
        if (
            source.dtype != np.uint8
            or source.ndim != 4
            or source.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3)
        ):
            raise ValueError(
                f"face images must be uint8 (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3), got {source.dtype} {source.shape}"
            )
        if len(source) == 0:
            raise ValueError("face image array is empty")
        if max_images is not None and len(source) > max_images:
            source = source[np.sort(rng.choice(len(source), max_images, replace=False))]
        return source
    root = Path(source)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory of face images")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) found")
    wanted = len(files) if max_images is None else min(max_images, len(files))
    images, bad = [], []
    # Walk a seeded permutation so a bad file is replaced by the next one, keeping N stable.
    for index in rng.permutation(len(files)):
        if len(images) == wanted:
            break
        try:
            images.append(read_face_image(files[index]))
        except (OSError, ValueError) as error:
            bad.append(f"{files[index]}: {error}")
    if bad:
        warnings.warn(
            f"{root}: skipped {len(bad)} unusable image(s), first: {'; '.join(bad[:3])}",
            stacklevel=2,
        )
    if not images:
        raise ValueError(
            f"{root}: none of {len(files)} image files is a readable {IMAGE_SIZE}x{IMAGE_SIZE} face"
        )
    return np.stack(images)


def read_face_image(path):
    """One aligned face file as uint8 (112, 112, 3) RGB; ValueError naming the file if the size differs."""
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if pixels.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(
            f"{path}: expected an aligned {IMAGE_SIZE}x{IMAGE_SIZE} face, got {pixels.shape[1]}x{pixels.shape[0]}"
        )
    return pixels


def synthetic_face_images(num_images, seed=0):
    """uint8 (num_images, 112, 112, 3) synthetic faces, from ``kerasface.data.synthetic_faces`` when available."""
    try:
        from kerasface.data.synthetic_faces import write_synthetic_faces
    except ImportError:
        return _simple_synthetic_faces(num_images, seed)
    per_identity = 10
    identities = -(-num_images // per_identity)
    with tempfile.TemporaryDirectory(prefix="kerasface_synthetic_") as tmp:
        # One process: forking a process that has started TensorFlow's threads is unsafe.
        write_synthetic_faces(
            tmp, num_identities=identities, images_per_identity=per_identity, seed=seed, workers=1
        )
        return load_face_images(tmp, num_images, seed)


def _simple_synthetic_faces(num_images, seed):
    # Stand-in while kerasface.data.synthetic_faces is unavailable: a skin-toned ellipse with
    # eyes, nose and mouth on a textured background, so activations look roughly face-like.
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    faces = np.empty((num_images, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    for i in range(num_images):
        background = rng.uniform(0, 255, 3) * (0.6 + 0.4 * (yy / IMAGE_SIZE))[..., None]
        image = background + rng.normal(0, 12, (IMAGE_SIZE, IMAGE_SIZE, 3))
        skin = np.array([rng.uniform(120, 240), rng.uniform(80, 190), rng.uniform(60, 160)])
        cx, cy = 56 + rng.normal(0, 2), 60 + rng.normal(0, 2)
        face = ((xx - cx) / rng.uniform(34, 42)) ** 2 + ((yy - cy) / rng.uniform(44, 52)) ** 2 < 1
        image[face] = skin * (0.85 + 0.15 * np.cos((xx[face] - cx) / 30))[:, None]
        for ex in (cx - 18, cx + 18):
            eye = ((xx - ex) / 7) ** 2 + ((yy - (cy - 12)) / 3.5) ** 2 < 1
            image[eye] = rng.uniform(10, 70, 3)
        nose = (np.abs(xx - cx) < 3) & (yy > cy - 8) & (yy < cy + 10)
        image[nose] *= 0.8
        mouth = ((xx - cx) / 14) ** 2 + ((yy - (cy + 22)) / 3) ** 2 < 1
        image[mouth] = [rng.uniform(120, 200), rng.uniform(40, 90), rng.uniform(40, 90)]
        faces[i] = np.clip(image, 0, 255).astype(np.uint8)
    return faces


def _describe_source(calibration):
    if calibration is None:
        return "synthetic faces"
    if isinstance(calibration, np.ndarray):
        return f"array {tuple(calibration.shape)}"
    return str(calibration)
