"""Export embedding models to SavedModel, TFLite and ONNX, run the exported files, check parity."""

from kerasface.export.export_verification import format_verification_table, verify_export
from kerasface.export.exported_metadata import read_metadata, update_metadata
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
from kerasface.export.tflite_export import (
    UnsupportedOpsError,
    export_tflite,
    load_face_images,
    read_embedded_metadata,
    write_tflite_file,
)

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
    "format_verification_table",
    "load_face_images",
    "open_runner",
    "read_embedded_metadata",
    "read_metadata",
    "read_sidecar",
    "update_metadata",
    "verify_export",
    "write_tflite_file",
]
