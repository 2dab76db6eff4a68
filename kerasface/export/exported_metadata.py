"""Read the metadata of an exported file: its sidecar JSON, else what the file itself carries."""

from pathlib import Path

from kerasface.export.saved_model_export import read_sidecar


def read_metadata(path):
    """The metadata dict of an exported model, or None when it has none.

    Looks at the sidecar ``<path>.json`` first (it also holds what was added after the
    export, such as parity and verification results), then, for a ``.tflite`` file, at the
    ``"kerasface"`` entry ``write_tflite_file`` embeds in the flatbuffer.

    Args:
        path: ``.tflite`` / ``.onnx`` file or SavedModel directory.

    Raises:
        FileNotFoundError: neither ``path`` nor its sidecar exists.
        ValueError: the sidecar is not JSON, or a ``.tflite`` file is not a TFLite flatbuffer.
    """
    from kerasface.export.tflite_export import read_embedded_metadata

    path = Path(path)
    metadata = read_sidecar(path)
    if metadata is not None:
        return metadata
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such exported model (and no sidecar {path}.json)")
    if path.suffix == ".tflite" and path.is_file():
        return read_embedded_metadata(path)
    return None


def update_metadata(path, **fields):
    """Add ``fields`` to an exported model's metadata, in the sidecar and inside a ``.tflite``.

    Returns:
        the updated metadata dict.
    """
    from kerasface.export.saved_model_export import write_sidecar
    from kerasface.export.tflite_export import write_tflite_file

    path = Path(path)
    metadata = read_metadata(path) or {}
    metadata.update(fields)
    if path.suffix == ".tflite" and path.is_file():
        # Keeps the copy inside the file in step with the sidecar.
        write_tflite_file(path, path.read_bytes(), metadata)
    else:
        write_sidecar(path, metadata)
    return metadata
