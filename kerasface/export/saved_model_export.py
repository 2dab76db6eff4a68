"""SavedModel export (uint8 RGB in, L2-normalised embeddings out) and the checks every exporter shares."""

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from kerasface.data.preprocessing import IMAGE_SIZE, PIXEL_MEAN, PIXEL_SCALE, normalize_images
from kerasface.layers.all_layers import all_layers

INPUT_NAME = "image"
OUTPUT_NAME = "embedding"
INPUT_SHAPE = (None, IMAGE_SIZE, IMAGE_SIZE, 3)
# Second SavedModel signature: the embedding model itself on normalised floats, so a
# SavedModel can be checked against the TFLite/ONNX files (which take normalised floats).
NORMALIZED_SIGNATURE = "embed_normalized"
# Third signature: flip test, uint8 in, the fused embedding of each face and its mirror.
FLIP_SIGNATURE = "embed_flip"


def check_embedding_model(model):
    """Embedding size D of ``model`` after checking it maps (None, 112, 112, 3) images to (None, D).

    Raises:
        TypeError: ``model`` is not a ``keras.Model``.
        ValueError: the model has several inputs, the wrong input shape, or a non-(None, D) output.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"export needs a keras.Model embedding model, got {type(model).__name__}")
    name = getattr(model, "name", "?")
    if not getattr(model, "inputs", None):
        raise ValueError(
            f"export needs an embedding model with a defined input; model {name!r} has none "
            f"(a subclassed model never built on a symbolic input): wrap it in a functional "
            f"keras.Model(keras.Input({INPUT_SHAPE[1:]}), ...)"
        )
    if len(model.inputs) != 1:
        raise ValueError(
            f"export needs an embedding model with one image input; model {name!r} has {len(model.inputs)}"
        )
    input_shape = tuple(model.inputs[0].shape)
    if input_shape != INPUT_SHAPE:
        raise ValueError(
            f"export needs an embedding model with input shape {INPUT_SHAPE} (aligned RGB faces); "
            f"model {name!r} has input shape {input_shape}"
        )
    if (
        len(model.outputs) != 1
        or len(model.outputs[0].shape) != 2
        or model.outputs[0].shape[-1] is None
    ):
        shapes = [tuple(output.shape) for output in model.outputs]
        raise ValueError(
            f"export needs an embedding model with one (None, D) output; model {name!r} outputs {shapes}"
        )
    return int(model.outputs[0].shape[-1])


def float32_compute_model(model):
    """``model`` itself if every layer computes in float32, else a float32 copy sharing its values.

    A mixed-precision model (``mixed_float16``/``mixed_bfloat16`` policies, e.g. loaded from a
    ``.keras`` file trained that way) lowers to float16 TensorFlow kernels that TFLite has no
    builtin ops for, and to a float16 ONNX graph that CPUs run slowly. Its variables are
    float32 already, so rebuilding the same architecture under the float32 policy and copying
    the weights gives the float32 model the deployment formats promise.
    """
    if all(layer.compute_dtype == "float32" for layer in all_layers(model)):
        return model
    config = _with_float32_dtypes(keras.saving.serialize_keras_object(model))
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")  # subclassed models build their layers in __init__
    try:
        copy = keras.saving.deserialize_keras_object(config)
    except Exception as error:
        raise ValueError(
            f"model {model.name!r} computes in {previous.name if hasattr(previous, 'name') else previous}"
            f" and could not be rebuilt in float32 for export ({type(error).__name__}: {error}); "
            f"build it under keras.config.set_dtype_policy('float32') and copy the weights"
        ) from error
    finally:
        keras.config.set_dtype_policy(previous)
    copy.set_weights(model.get_weights())
    return copy


def _with_float32_dtypes(config):
    if isinstance(config, dict):
        if config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
            return "float32"
        return {
            key: (
                "float32"
                if key == "dtype" and value in ("float16", "bfloat16")
                else _with_float32_dtypes(value)
            )
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [_with_float32_dtypes(item) for item in config]
    return config


def image_spec(dtype):
    """The ``image`` input signature, (None, 112, 112, 3) of ``dtype``."""
    return tf.TensorSpec(INPUT_SHAPE, dtype, name=INPUT_NAME)


def embedding_function(model):
    """Normalised float32 images -> ``{"embedding": float32 (B, D)}``, ``model`` in inference mode."""

    def embed(image):
        # Mixed-precision models may end in float16; exported files promise float32.
        return {OUTPUT_NAME: keras.ops.cast(model(image, training=False), "float32")}

    return embed


def write_endpoints(model, path, endpoints):
    """Write ``model`` as a SavedModel at ``path`` with ``endpoints``: signature name -> (fn, input dtype)."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (fn, dtype) in endpoints.items():
        archive.add_endpoint(name=name, fn=fn, input_signature=[image_spec(dtype)])
    archive.write_out(str(path), verbose=False)
    return Path(path)


def export_saved_model(model, path, verbose=False):
    """Export an embedding model as a SavedModel serving uint8 RGB faces.

    Signatures: ``serving_default`` takes ``image`` uint8 (B, 112, 112, 3) RGB, applies
    ``(x - 127.5) / 128`` inside the graph and returns ``{"embedding": float32 (B, D)}``;
    ``embed_normalized`` takes already normalised float32 images; ``embed_flip`` takes
    uint8 like ``serving_default`` and returns the flip-test embedding: the model's
    embeddings of each face and of its horizontal mirror, summed and L2-normalised (the
    ``flip=True`` convention of ``kerasface.evaluation``). Any batch size is served; other
    image sizes or channel counts fail with an assertion naming the shape.
    A sidecar ``<path>.json`` records the input convention and embedding size.

    Args:
        model: embedding model, float32 (None, 112, 112, 3) -> (None, D).
        path: output directory.
        verbose: let TensorFlow print its saving log.

    Returns:
        ``Path`` of the SavedModel directory.
    """
    embedding_size = check_embedding_model(model)
    embed = embedding_function(model)

    def checked(image, signature):
        shape = tf.shape(image)
        tf.debugging.Assert(
            tf.reduce_all(tf.equal(shape[1:], [IMAGE_SIZE, IMAGE_SIZE, 3])),
            [
                f"{signature}: `{INPUT_NAME}` must be uint8 RGB faces of shape (batch, {IMAGE_SIZE}, "
                f"{IMAGE_SIZE}, 3); got shape",
                shape,
            ],
        )
        return normalize_images(image)

    def serve(image):
        return embed(checked(image, "serving_default"))

    def serve_flip(image):
        normalized = checked(image, FLIP_SIGNATURE)
        # One model call on faces and mirrors together; axis 2 is the width (NHWC).
        both = embed(tf.concat([normalized, tf.reverse(normalized, axis=[2])], axis=0))[OUTPUT_NAME]
        faces, mirrors = tf.split(both, 2, axis=0)
        return {OUTPUT_NAME: tf.math.l2_normalize(faces + mirrors, axis=-1)}

    path = Path(path)
    with native_output_suppressed(not verbose):
        write_endpoints(
            model,
            path,
            {
                "serving_default": (serve, tf.uint8),
                NORMALIZED_SIGNATURE: (embed, tf.float32),
                FLIP_SIGNATURE: (serve_flip, tf.uint8),
            },
        )
    metadata = export_metadata(model, "savedmodel", embedding_size, input_dtype="uint8")
    metadata["signatures"] = {
        "serving_default": "uint8 pixels in [0, 255]",
        NORMALIZED_SIGNATURE: "normalised float32",
        FLIP_SIGNATURE: "uint8 pixels in [0, 255]; flip test: L2-normalised sum of the "
        "embeddings of the face and its horizontal mirror",
    }
    write_sidecar(path, metadata)
    return path


def export_metadata(model, export_format, embedding_size, input_dtype="float32", **extra):
    """The sidecar JSON content describing an exported embedding model."""
    import kerasface

    normalization = {"mean": PIXEL_MEAN, "scale": PIXEL_SCALE, "formula": "(pixel - mean) / scale"}
    metadata = {
        "format": export_format,
        "model_name": model.name,
        "embedding_size": int(embedding_size),
        "input": {
            "name": INPUT_NAME,
            "shape": list(INPUT_SHAPE),
            "layout": "NHWC",
            "color": "RGB",
            "dtype": input_dtype,
            # uint8 inputs are normalised inside the exported graph; float inputs by the caller.
            "normalization": normalization,
            "normalization_inside_model": input_dtype == "uint8",
        },
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "l2_normalized": True},
        "quantization": None,
        "kerasface_version": kerasface.__version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
    }
    metadata.update(extra)
    return metadata


def sidecar_path(path):
    """``<path>.json``: where the metadata of an exported file or directory lives."""
    return Path(f"{os.fspath(path).rstrip('/')}.json")


def write_sidecar(path, metadata):
    """Write ``metadata`` to ``<path>.json``; returns that path."""
    target = sidecar_path(path)
    target.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return target


def read_sidecar(path):
    """The metadata dict stored in ``<path>.json``, or None when there is no sidecar."""
    target = sidecar_path(path)
    if not target.is_file():
        return None
    try:
        return json.loads(target.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{target}: not valid JSON metadata: {error}") from None


@contextlib.contextmanager
def native_output_suppressed(enabled=True):
    """Silence what C++ converters print to stdout/stderr; their errors still arrive as exceptions.

    The text is kept in a temporary file and replayed to stderr if the block raises, so
    nothing needed for diagnosis is lost.
    """
    if not enabled:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            if failed:
                sink.seek(0)
                captured = sink.read().decode("utf-8", "replace")
                if captured.strip():
                    sys.stderr.write(captured[-20000:])
