"""Trainable face models and loaders."""

from kerasface.models.face_recognizer import FaceRecognizer
from kerasface.models.loading import load_embedding_model

__all__ = ["FaceRecognizer", "load_embedding_model"]
