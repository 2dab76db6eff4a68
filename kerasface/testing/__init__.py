"""Shared test helpers: the checks every kerasface layer and model must pass, and shared data."""

from kerasface.testing.export_parity_check import (
    EXPORT_FORMATS,
    check_export_parity,
    check_exported_parity,
    check_onnx_parity,
    check_tflite_parity,
)
from kerasface.testing.mirrored_check import check_mirrored, mirrored_strategy
from kerasface.testing.mixed_precision_check import check_mixed_precision
from kerasface.testing.run_all_checks import CHECK_NAMES, run_all_checks
from kerasface.testing.saving_check import check_saving
from kerasface.testing.serialization_check import check_serialization
from kerasface.testing.shared_data import require_shared, shared_dir
from kerasface.testing.xla_check import check_xla

__all__ = [
    "EXPORT_FORMATS",
    "check_export_parity",
    "check_exported_parity",
    "check_onnx_parity",
    "check_tflite_parity",
    "CHECK_NAMES",
    "check_mirrored",
    "check_mixed_precision",
    "check_saving",
    "check_serialization",
    "check_xla",
    "mirrored_strategy",
    "require_shared",
    "run_all_checks",
    "shared_dir",
]
