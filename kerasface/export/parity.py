"""Export an embedding model and check that the exported file embeds faces like the Keras model."""

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasface.budget import file_size_bytes
from kerasface.data.preprocessing import normalize_numpy
from kerasface.export.onnx_export import export_onnx
from kerasface.export.runtimes import open_runner, row_cosines
from kerasface.export.exported_metadata import update_metadata
from kerasface.export.saved_model_export import export_saved_model
from kerasface.export.tflite_export import export_tflite, load_face_images, synthetic_face_images

FORMATS = ("savedmodel", "tflite", "onnx")
DEFAULT_PARITY_IMAGES = 64
# Cosine between exported and Keras embeddings of the same face that an export must reach,
# and which statistic over the parity faces is held to it.
#  - float32 files (SavedModel, ONNX, TFLite): only op reordering/fusion differs, so the
#    error is float32 rounding (~1e-6); every face (min) must reach 0.9999, which still
#    catches a wrong BN fold, layout or normalisation.
#  - float16 weights: each weight is rounded to 11 significant bits (relative error
#    <= 2^-11 ~ 5e-4), activations stay float32; measured min cosines are 0.99993+ on a
#    trained MobileFaceNet-0.25. Every face must reach 0.999: 10x looser than fp32.
#  - dynamic range and int8: 8-bit weights (and activations: on the fly for dynamic,
#    calibrated for int8). Quantisation noise accumulates through ~50 layers and a few faces
#    are always worse than the rest, so the min depends on how many faces are checked;
#    the mean is what tracks verification accuracy, and it must reach 0.99.
PARITY_THRESHOLDS = {None: 0.9999, "float16": 0.999, "dynamic": 0.99, "int8": 0.99}
PARITY_STATISTICS = {None: "min", "float16": "min", "dynamic": "mean", "int8": "mean"}


@dataclass
class ExportReport:
    """What ``export_model`` wrote and how close it is to the Keras model.

    Args:
        path: exported file (or SavedModel directory).
        format: "savedmodel", "tflite" or "onnx".
        quantize: TFLite quantisation or None.
        size_bytes: size on disk (a SavedModel counts every file in it).
        parity: the ``check_parity`` dict, plus ``images`` (where the faces came from).
        export_seconds: wall time of the conversion alone.
    """

    path: Path
    format: str
    quantize: str = None
    size_bytes: int = 0
    parity: dict = field(default_factory=dict)
    export_seconds: float = 0.0

    @property
    def passed(self):
        return bool(self.parity.get("passed", False))

    def summary(self):
        """One line for logs and the CLI."""
        kind = self.format + (f"/{self.quantize}" if self.quantize else "")
        line = f"exported {kind} to {self.path} ({self.size_bytes / 1e6:.2f} MB) in {self.export_seconds:.1f} s"
        if not self.parity:
            return line
        p = self.parity
        verdict = "PASSED" if p["passed"] else "FAILED"
        return (
            f"{line}; parity vs Keras on {p['num_images']} {p.get('images', 'images')}: min cosine "
            f"{p['min_cosine']:.6f}, mean {p['mean_cosine']:.6f}, max |diff| {p['max_abs_diff']:.2e} "
            f"(needs {p['statistic']} >= {p['min_cosine_threshold']}): {verdict}"
        )


class ParityError(RuntimeError):
    """An exported model embeds faces too differently from the Keras model.

    Args:
        report: the ``ExportReport`` of the failed export (its file is kept for inspection).
    """

    def __init__(self, report):
        super().__init__(report.summary() + f"; the file is kept at {report.path} for inspection")
        self.report = report


def keras_embeddings(model, images, batch_size=64):
    """L2-normalised float32 embeddings of uint8 faces by the Keras model (the reference)."""
    normalized = normalize_numpy(images)
    outputs = [
        np.asarray(model(normalized[i : i + batch_size], training=False), dtype=np.float32)
        for i in range(0, len(normalized), batch_size)
    ]
    embeddings = np.concatenate(outputs)
    return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)


def check_parity(model, exported, images, min_cosine, statistic="min", batch_size=64):
    """Compare the embeddings of ``images`` by ``model`` and by an exported file.

    Args:
        model: the Keras embedding model (reference).
        exported: a runner from ``kerasface.export.runtimes`` or a path (.tflite, .onnx,
            SavedModel directory).
        images: uint8 RGB faces (N, 112, 112, 3).
        min_cosine: the threshold ``statistic`` must reach for ``passed``.
        statistic: "min" (every face must reach ``min_cosine``) or "mean".
        batch_size: images per call.

    Returns:
        dict with ``num_images``, ``min_cosine``, ``mean_cosine``, ``max_abs_diff`` (between
        the normalised embeddings), ``min_cosine_threshold``, ``statistic`` and ``passed``.
    """
    if statistic not in ("min", "mean"):
        raise ValueError(f"`statistic` must be 'min' or 'mean', got {statistic!r}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) == 0:
        raise ValueError(
            f"parity images must be a non-empty uint8 (N, H, W, 3) array, got {images.dtype} {images.shape}"
        )
    runner = open_runner(exported)
    reference = keras_embeddings(model, images, batch_size)
    candidate = runner.embed(images, batch_size=batch_size)
    if candidate.shape != reference.shape:
        raise ValueError(
            f"{runner.path}: embeddings have shape {candidate.shape}, the Keras model gives {reference.shape}"
        )
    cosine = row_cosines(reference, candidate)
    return {
        "num_images": int(len(images)),
        "min_cosine": float(cosine.min()),
        "mean_cosine": float(cosine.mean()),
        "max_abs_diff": float(np.abs(reference - candidate).max()),
        "min_cosine_threshold": float(min_cosine),
        "statistic": statistic,
        "passed": bool((cosine.min() if statistic == "min" else cosine.mean()) >= min_cosine),
    }


def export_model(
    model,
    out_path,
    format,  # noqa: A002 - the CLI flag's name
    quantize=None,
    calibration=None,
    parity_images=None,
    int8_io=False,
    opset=17,
    min_cosine=None,
    num_parity_images=DEFAULT_PARITY_IMAGES,
    num_calibration_images=200,
    raise_on_failure=True,
    verbose=True,
    int8_prelu="abs",
):
    """Export ``model`` to ``format``, check parity against Keras, print and return the result.

    Args:
        model: embedding model, float32 (None, 112, 112, 3) -> (None, D).
        out_path: output file (.tflite/.onnx) or directory (SavedModel).
        format: "savedmodel", "tflite" or "onnx".
        quantize: TFLite only: None, "float16", "dynamic" or "int8".
        calibration: int8 only: face directory, uint8 array or None (synthetic faces).
        parity_images: faces for the parity check: a directory, a uint8 array, or None
            for synthetic faces (drawn with another seed than the calibration faces).
        int8_io: int8 only: int8 input/output tensors.
        opset: ONNX opset.
        min_cosine: parity threshold; None picks ``PARITY_THRESHOLDS[quantize]``. It applies
            to the min cosine over the faces for float formats, to the mean for "dynamic"
            and "int8" (``PARITY_STATISTICS``).
        num_parity_images: at most this many parity faces, sampled deterministically.
        num_calibration_images: int8 only: calibration faces sampled deterministically.
        raise_on_failure: raise ``ParityError`` when parity fails (else return the report).
        verbose: print the one-line summary.
        int8_prelu: int8 only: "abs" (PReLU in the form XNNPACK runs in int8) or "native"
            (see ``export_tflite``).

    Returns:
        ``ExportReport``; its parity is also stored in the sidecar ``<out_path>.json``.
    """
    if format not in FORMATS:
        raise ValueError(f"`format` must be one of {FORMATS}, got {format!r}")
    if quantize is not None and format != "tflite":
        raise ValueError(
            f"`quantize` applies to the tflite format only, got format={format!r} quantize={quantize!r}"
        )
    if quantize not in PARITY_THRESHOLDS:
        raise ValueError(f"`quantize` must be one of {tuple(PARITY_THRESHOLDS)}, got {quantize!r}")
    threshold = PARITY_THRESHOLDS[quantize] if min_cosine is None else float(min_cosine)
    suffix = {"tflite": ".tflite", "onnx": ".onnx"}.get(format)
    if suffix and Path(out_path).suffix != suffix:
        raise ValueError(f"the {format} output path must end in {suffix}, got {out_path}")

    # Load parity faces before the (slow) conversion so a bad folder fails fast.
    if parity_images is None:
        faces, source = synthetic_face_images(num_parity_images, seed=1), "synthetic faces"
    else:
        faces = load_face_images(parity_images, num_parity_images, seed=1)
        source = (
            "faces from an array"
            if isinstance(parity_images, np.ndarray)
            else f"faces from {parity_images}"
        )

    start = time.perf_counter()
    if format == "savedmodel":
        path = export_saved_model(model, out_path)
    elif format == "tflite":
        path = export_tflite(
            model,
            out_path,
            quantize=quantize,
            calibration=calibration,
            int8_io=int8_io,
            num_calibration_images=num_calibration_images,
            **({"int8_prelu": int8_prelu} if quantize == "int8" else {}),
        )
    else:
        path = export_onnx(model, out_path, opset=opset)
    seconds = time.perf_counter() - start

    parity = check_parity(model, path, faces, threshold, statistic=PARITY_STATISTICS[quantize])
    parity["images"] = source
    update_metadata(path, parity=parity)
    report = ExportReport(
        path=Path(path),
        format=format,
        quantize=quantize,
        size_bytes=file_size_bytes(path),
        parity=parity,
        export_seconds=seconds,
    )
    if verbose:
        print(report.summary(), flush=True)
    if not report.passed and raise_on_failure:
        raise ParityError(report)
    return report
