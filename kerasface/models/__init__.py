"""Trainable face models and loaders."""

from kerasface.models.dail_recognizer import DAILRecognizer
from kerasface.models.distiller import Distiller
from kerasface.models.face_recognizer import FaceRecognizer
from kerasface.models.latse_recognizer import LATSERecognizer
from kerasface.models.loading import load_embedding_model

__all__ = ["DAILRecognizer", "Distiller", "FaceRecognizer", "LATSERecognizer", "load_embedding_model"]
