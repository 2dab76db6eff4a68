"""Load what ``kerasface train`` wrote as the model that gets evaluated or exported."""

from pathlib import Path

import keras

import kerasface.backbones  # noqa: F401 - registers backbone classes for deserialization
import kerasface.heads  # noqa: F401 - registers head classes
from kerasface.models.face_recognizer import FaceRecognizer

# Preference order inside a training run directory.
RUN_DIR_FILES = ("embedding.keras", "model.keras")


def resolve_model_file(path):
    """The ``.keras`` file a path names: itself, or the model a training run directory holds.

    A run directory gives ``embedding.keras``, else ``model.keras``, else its latest
    ``checkpoints/epoch_NNN.keras``.
    """
    path = Path(path)
    if not path.is_dir():
        return path
    candidates = [path / name for name in RUN_DIR_FILES] + sorted(
        (path / "checkpoints").glob("epoch_*.keras"), reverse=True
    )
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{path}: no model found (looked for {', '.join(RUN_DIR_FILES)} and checkpoints/epoch_*.keras)"
    )


def load_embedding_model(path):
    """An embedding model (images -> L2-normalised embeddings) from a file or run directory.

    Accepts a ``.keras`` file holding a ``FaceRecognizer`` (its ``embedding_model`` is
    returned) or an embedding model, or a ``kerasface train`` output directory.
    """
    path = resolve_model_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    if path.suffix != ".keras":
        raise ValueError(f"{path}: expected a .keras file or a training run directory, got suffix {path.suffix!r}")
    model = keras.saving.load_model(path, compile=False)
    if isinstance(model, FaceRecognizer):
        return model.embedding_model
    return model
