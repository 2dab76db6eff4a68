"""Export embedding models to SavedModel, TFLite and ONNX, run the exported files, check parity."""

from kerasface.export.onnx_export import export_onnx
from kerasface.export.parity import (
    PARITY_STATISTICS,
    PARITY_THRESHOLDS,
    ExportReport,
    ParityError,
    check_parity,
    export_model,
)
from kerasface.export.runtimes import OnnxRunner, SavedModelRunner, TFLiteRunner, open_runner
from kerasface.export.saved_model_export import (
    check_embedding_model,
    export_saved_model,
    read_sidecar,
)
from kerasface.export.tflite_export import UnsupportedOpsError, export_tflite, load_face_images

__all__ = [
    "PARITY_STATISTICS",
    "PARITY_THRESHOLDS",
    "ExportReport",
    "OnnxRunner",
    "ParityError",
    "SavedModelRunner",
    "TFLiteRunner",
    "UnsupportedOpsError",
    "check_embedding_model",
    "check_parity",
    "export_model",
    "export_onnx",
    "export_saved_model",
    "export_tflite",
    "load_face_images",
    "open_runner",
    "read_sidecar",
]
