"""Single-thread per-face latency of one MobileFaceNet in every deployment format, in one run.

Compares, on the same faces and the same (shared, noisy) machine:

* Keras: ``model(x, training=False)`` and ``model.predict_on_batch(x)`` on the ``.keras`` model;
* SavedModel (``serving_default``, uint8 in, normalisation in the graph);
* TFLite float32, float16 weights, dynamic-range int8, full-integer int8 (LiteRT + XNNPACK),
  and float32 / int8 on LiteRT's builtin kernels without XNNPACK (to see the delegate's share);
* ONNX Runtime float32;
* the peer OpenCV-zoo SFace int8 ONNX (BGR, 0-255) in onnxruntime and in OpenCV DNN.

Everything is timed as a user calls it: ``FaceEmbedder(...).embed(uint8 faces)`` (Keras: the
model on ``normalize_numpy(uint8)``), preprocessing included, batch 1, 1 thread (TensorFlow:
intra-op 1, inter-op 1). Each variant lives in its own child process
(``kerasface.benchmark.bench_worker.BenchWorker``) loaded once; rounds are interleaved
(A B C ... then A B C ... with the order rotated every round) so slow phases of a shared machine
hit every variant alike. Reported: per variant the median over rounds of each round's median
per-face latency, the spread over rounds, and the ratio to TFLite fp32 taken round by round
(variants measured seconds apart) then medianed. Also batch 1 vs batch 16 throughput for TFLite
int8, TFLite fp32 and ONNX Runtime.

The formats are exported (``kerasface.export.export_model``, int8 calibrated on 200 celeba_dev
train faces, parity checked on 64 val faces) into ``--work-dir`` unless already there.

    python bench/export_latency.py                     # -> docs/export_latency.json + .md
    nice python bench/export_latency.py --rounds 7 --runs 30
"""

import argparse
import concurrent.futures
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kerasface.benchmark.bench_worker import ENGINE_DESCRIPTIONS, BenchWorker, BenchWorkerError  # noqa: E402
from kerasface.budget import file_size_bytes  # noqa: E402
from kerasface.cli.argument_types import integer_at_least, positive_float  # noqa: E402

SHARED = REPO.parent / "shared"
DEFAULT_MODEL = "/work/runs/celeba_arcface/embedding.keras"
DEFAULT_SFACE = SHARED / "models/opencv_zoo/face_recognition_sface_2021dec_int8bq.onnx"
DEFAULT_CALIBRATION = SHARED / "data/celeba_dev/train"
DEFAULT_IMAGES = SHARED / "data/celeba_dev/val"
REFERENCE = "tflite_fp32"
BATCH_VARIANTS = ("tflite_int8", "tflite_fp32", "onnx_fp32")
# label -> (exported file name, export format, quantize, further export_model arguments)
EXPORTS = {
    "savedmodel": ("saved_model", "savedmodel", None, {}),
    "tflite_fp32": ("model_fp32.tflite", "tflite", None, {}),
    "tflite_fp16": ("model_fp16.tflite", "tflite", "float16", {}),
    "tflite_dynamic": ("model_dynamic.tflite", "tflite", "dynamic", {}),
    "tflite_int8": ("model_int8.tflite", "tflite", "int8", {"int8_prelu": "abs"}),
    "tflite_int8_native_prelu": ("model_int8_native_prelu.tflite", "tflite", "int8", {"int8_prelu": "native"}),
    "onnx_fp32": ("model.onnx", "onnx", None, {}),
}
SFACE_OPTIONS = {"channel_order": "bgr", "pixel_range": "0-255"}


def variants(model, work_dir, sface):
    """label -> dict(path, engine, peer_options, description) of everything to time, in table order."""
    files = {label: work_dir / name for label, (name, *_) in EXPORTS.items()}
    table = {
        "keras_call": dict(path=model, engine="keras_call", peer_options={},
                           description="Keras 3 `model(x, training=False)`"),
        "keras_predict_on_batch": dict(path=model, engine="keras_predict_on_batch", peer_options={},
                                       description="Keras 3 `model.predict_on_batch(x)`"),
        "savedmodel": dict(path=files["savedmodel"], engine="embedder", peer_options={},
                           description="SavedModel serving_default (uint8 in), TensorFlow"),
        "tflite_fp32": dict(path=files["tflite_fp32"], engine="embedder", peer_options={},
                            description="TFLite float32, LiteRT + XNNPACK"),
        "tflite_fp16": dict(path=files["tflite_fp16"], engine="embedder", peer_options={},
                            description="TFLite float16 weights, LiteRT + XNNPACK"),
        "tflite_dynamic": dict(path=files["tflite_dynamic"], engine="embedder", peer_options={},
                               description="TFLite dynamic-range int8, LiteRT + XNNPACK"),
        "tflite_int8": dict(path=files["tflite_int8"], engine="embedder", peer_options={},
                            description="TFLite full-integer int8 (float I/O; PReLU in abs form, the default), "
                                        "LiteRT + XNNPACK"),
        "tflite_int8_native_prelu": dict(path=files["tflite_int8_native_prelu"], engine="embedder",
                                         peer_options={},
                                         description="TFLite int8 with TFLite's PRELU op (`--int8-prelu native`), "
                                                     "LiteRT + XNNPACK"),
        "tflite_fp32_no_xnnpack": dict(path=files["tflite_fp32"], engine="litert_no_xnnpack", peer_options={},
                                       description="TFLite float32, LiteRT builtin kernels, no XNNPACK"),
        "tflite_int8_no_xnnpack": dict(path=files["tflite_int8"], engine="litert_no_xnnpack", peer_options={},
                                       description="TFLite int8, LiteRT builtin kernels, no XNNPACK"),
        "onnx_fp32": dict(path=files["onnx_fp32"], engine="embedder", peer_options={},
                          description="ONNX float32, ONNX Runtime (CPU)"),
        "sface_int8_onnxruntime": dict(path=sface, engine="embedder",
                                       peer_options={**SFACE_OPTIONS, "runtime": "onnxruntime"},
                                       description="peer SFace int8 ONNX (OpenCV zoo), ONNX Runtime"),
        "sface_int8_opencv": dict(path=sface, engine="embedder", peer_options={**SFACE_OPTIONS, "runtime": "opencv"},
                                  description="peer SFace int8 ONNX (OpenCV zoo), OpenCV DNN"),
    }
    return table


# ---------------------------------------------------------------- exports


def export_missing(model_path, work_dir, calibration, parity_images, log=sys.stderr):
    """Export every format of ``EXPORTS`` not yet in ``work_dir``; returns label -> parity/size info.

    A file whose metadata disagrees with the export arguments (an int8 file from before
    ``int8_prelu`` existed, say) is exported again.
    """
    from kerasface.export import export_model, read_sidecar
    from kerasface.models import load_embedding_model

    work_dir.mkdir(parents=True, exist_ok=True)
    model = None
    info = {}
    for label, (name, export_format, quantize, options) in EXPORTS.items():
        path = work_dir / name
        stored = read_sidecar(path) if path.exists() else None
        if stored is None or any(stored.get(key) != value for key, value in options.items()):
            model = model or load_embedding_model(model_path)
            print(f"exporting {label} -> {path} ...", file=log, flush=True)
            report = export_model(
                model, path, export_format, quantize=quantize,
                calibration=os.fspath(calibration) if quantize == "int8" else None,
                parity_images=os.fspath(parity_images), num_calibration_images=200,
                raise_on_failure=False, verbose=True, **options,
            )
            info[label] = {"exported_now": True, "export_seconds": report.export_seconds}
        else:
            info[label] = {"exported_now": False}
        metadata = read_sidecar(path) or {}
        parity = metadata.get("parity") or {}
        info[label].update(
            size_bytes=file_size_bytes(path),
            parity_mean_cosine=parity.get("mean_cosine"),
            parity_min_cosine=parity.get("min_cosine"),
            parity_images=parity.get("images"),
            calibration=metadata.get("calibration"),
        )
        if export_format == "tflite":
            from kerasface.export.tflite_export import tflite_op_names

            info[label]["ops"] = tflite_op_names(path)
            info[label]["xnnpack_partitions"], info[label]["op_counts"] = xnnpack_partitions(path)
    return info


def xnnpack_partitions(path):
    """``(partitions, op counts)``: subgraphs LiteRT's XNNPACK delegate takes in ``path``, and ops per name.

    One partition: the whole model runs in XNNPACK. Each op XNNPACK cannot run splits the
    graph: with k unsupported ops in a chain there are about k + 1 partitions, and the
    unsupported ops run on LiteRT's builtin kernels between them.
    """
    import collections

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()  # the delegate is applied here
    # A private helper, but the only Python view of the delegated execution plan.
    counts = collections.Counter(op["op_name"] for op in interpreter._get_ops_details())
    partitions = counts.pop("DELEGATE", 0)
    return partitions, dict(sorted(counts.items()))


# ---------------------------------------------------------------- timing


def start_workers(table, faces_file, log, threads=1, parallel=2):
    """label -> BenchWorker (or the error text when it cannot load), loading ``parallel`` at a time."""
    def start(label):
        spec = table[label]
        began = time.perf_counter()
        try:
            worker = BenchWorker(spec["path"], faces_file, threads=threads, engine=spec["engine"],
                                 peer_options=spec["peer_options"])
        except (BenchWorkerError, ValueError, OSError) as error:
            print(f"  {label}: cannot load: {error}", file=log, flush=True)
            return label, str(error)
        print(f"  {label}: loaded ({worker.info['runtime']}) in {time.perf_counter() - began:.0f} s",
              file=log, flush=True)
        return label, worker

    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        return dict(pool.map(start, list(table)))


def interleaved_rounds(workers, rounds, runs, warmup, max_seconds, batch_variants, batch_runs, log):
    """Per label, per round: the batch-1 record (and batch-16 records for ``batch_variants``)."""
    labels = [label for label, worker in workers.items() if isinstance(worker, BenchWorker)]
    measured = {label: {"batch1": [], "batch16": []} for label in labels}
    for round_index in range(rounds):
        # Rotate the order so no variant always follows the same neighbour or starts a round.
        shift = round_index % len(labels)
        order = labels[shift:] + labels[:shift]
        began = time.perf_counter()
        for label in order:
            try:
                record = workers[label].measure(1, runs=runs, warmup=warmup, max_seconds=max_seconds)
            except BenchWorkerError as error:
                record = {"error": str(error)}
            record["round"] = round_index
            measured[label]["batch1"].append(record)
        for label in [label for label in batch_variants if label in labels]:
            try:
                record = workers[label].measure(16, runs=batch_runs, warmup=1, max_seconds=max_seconds)
            except BenchWorkerError as error:
                record = {"error": str(error)}
            record["round"] = round_index
            measured[label]["batch16"].append(record)
        summary = ", ".join(
            f"{label} {measured[label]['batch1'][-1].get('per_face_median_ms', float('nan')):.1f}"
            for label in labels
        )
        print(f"round {round_index + 1}/{rounds} ({time.perf_counter() - began:.0f} s): ms/face {summary}",
              file=log, flush=True)
    return measured


def summarise(measured, reference=REFERENCE):
    """Medians over rounds, spread, and round-by-round ratios to ``reference``."""
    summary = {}
    reference_rounds = {record["round"]: record.get("per_face_median_ms")
                        for record in measured.get(reference, {}).get("batch1", [])}
    for label, records in measured.items():
        good = [r for r in records["batch1"] if "per_face_median_ms" in r]
        entry = {"rounds": len(good), "errors": [r["error"] for r in records["batch1"] if "error" in r]}
        if good:
            values = np.array([r["per_face_median_ms"] for r in good])
            p90 = np.array([r["per_face_p90_ms"] for r in good])
            entry.update(
                per_face_median_ms=float(np.median(values)),
                per_face_p90_ms=float(np.median(p90)),
                round_min_ms=float(values.min()),
                round_max_ms=float(values.max()),
                faces_per_second=float(1000.0 / np.median(values)),
                timed_calls=int(sum(r["runs"] for r in good)),
            )
            ratios = [r["per_face_median_ms"] / reference_rounds[r["round"]] for r in good
                      if reference_rounds.get(r["round"])]
            if ratios:
                entry["ratio_to_reference"] = float(np.median(ratios))
                entry["ratio_range"] = [float(min(ratios)), float(max(ratios))]
        batch16 = [r for r in records["batch16"] if "per_face_median_ms" in r]
        if batch16:
            per_face = np.array([r["per_face_median_ms"] for r in batch16])
            entry["batch16"] = {
                "per_face_median_ms": float(np.median(per_face)),
                "faces_per_second": float(1000.0 / np.median(per_face)),
                "rounds": len(batch16),
            }
            # Round by round, batch 16 against batch 1 of the same variant.
            one = {r["round"]: r["per_face_median_ms"] for r in good}
            speedups = [one[r["round"]] / r["per_face_median_ms"] for r in batch16 if r["round"] in one]
            if speedups:
                entry["batch16"]["throughput_gain_vs_batch1"] = float(np.median(speedups))
        summary[label] = entry
    return summary


# ---------------------------------------------------------------- report


def markdown(report):
    """docs/export_latency.md from the report."""
    settings = report["settings"]
    machine = report["machine"]
    summary = report["summary"]
    exports = report["exports"]
    lines = [
        "# Export latency: one MobileFaceNet in every format, single thread",
        "",
        f"Model: `{report['model']}` (MobileFaceNet, {report.get('embedding_size', 128)}-d, trained 5 epochs on "
        "celeba_dev train). Peer: OpenCV zoo SFace int8 (`face_recognition_sface_2021dec_int8bq.onnx`, "
        "BGR 0-255, NCHW, batch 1).",
        "",
        "Command:",
        "",
        "```",
        report["command"],
        "```",
        "",
        "What is timed is what a user calls: `kerasface.infer.FaceEmbedder(path, num_threads=1).embed(uint8 "
        "faces)`, preprocessing included (Keras rows: the model on `normalize_numpy(uint8 faces)`), batch 1, "
        "1 thread (TensorFlow: intra-op 1, inter-op 1). Faces: "
        f"{report['inputs']}. Each variant runs in its own process, loaded once; "
        f"{settings['rounds']} interleaved rounds (order rotated each round), each round the median of up to "
        f"{settings['runs']} timed calls after {settings['warmup']} warm-up calls. **ms/face is the median over "
        "rounds** of those medians; *rounds* gives the fastest and slowest round; *x fp32* is the ratio to TFLite "
        "fp32 taken within each round, then medianed.",
        "",
        f"Machine: {machine['cpu_model']}, {machine['usable_cpus']} logical cores **shared with other jobs** "
        f"(load average {report['load_average_start']} at the start, {report['load_average_end']} at the end): "
        "absolute numbers are inflated and noisy; compare ratios measured in the same run.",
        "",
        "| variant | ms/face (median) | p90 | rounds min-max | x TFLite fp32 | size MB | mean cosine to Keras |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, spec in report["variants"].items():
        entry = summary.get(label, {})
        export = exports.get(label, {})
        size = export.get("size_bytes")
        cosine = export.get("parity_mean_cosine")
        if "per_face_median_ms" not in entry:
            error = (entry.get("errors") or [report["load_errors"].get(label, "not measured")])[0]
            lines.append(f"| {spec['description']} | - | - | - | - | - | not measured: {error[:160]} |")
            continue
        ratio = entry.get("ratio_to_reference")
        lines.append(
            f"| {spec['description']} | {entry['per_face_median_ms']:.2f} | {entry['per_face_p90_ms']:.2f} | "
            f"{entry['round_min_ms']:.1f}-{entry['round_max_ms']:.1f} | "
            f"{'-' if ratio is None else f'{ratio:.2f}'} | "
            f"{'-' if size is None else f'{size / 1e6:.2f}'} | {'-' if cosine is None else f'{cosine:.4f}'} |"
        )
    lines += ["", "Batch 1 vs batch 16 (single thread, per face, median over rounds):", "",
              "| variant | batch 1 ms/face | batch 16 ms/face | batch 16 faces/s | throughput gain |",
              "|---|---:|---:|---:|---:|"]
    for label in BATCH_VARIANTS:
        entry = summary.get(label, {})
        if "batch16" not in entry:
            continue
        b16 = entry["batch16"]
        lines.append(
            f"| {report['variants'][label]['description']} | {entry['per_face_median_ms']:.2f} | "
            f"{b16['per_face_median_ms']:.2f} | {b16['faces_per_second']:.1f} | "
            f"{b16.get('throughput_gain_vs_batch1', float('nan')):.2f}x |"
        )
    call, compiled = summary.get("keras_call", {}), summary.get("keras_predict_on_batch", {})
    if call.get("per_face_median_ms") and compiled.get("per_face_median_ms"):
        lines += ["", f"Keras `model(x)` runs eagerly, layer by layer ({call['per_face_median_ms'] / compiled['per_face_median_ms']:.0f}x "
                  "`predict_on_batch`, which runs one compiled `tf.function`): for Keras inference on single faces "
                  "use `predict_on_batch` or an export."]
    b16 = [summary[label]["batch16"].get("throughput_gain_vs_batch1") for label in BATCH_VARIANTS
           if "batch16" in summary.get(label, {})]
    if b16 and max(gain or 0 for gain in b16) < 1.1:
        lines += ["", "Batching does not raise single-thread throughput here (gain <= 1): one face already keeps the "
                  "one core busy, and batch 16's activations (16x larger) probably no longer fit in the caches."]
    lines += ["", "## Targets", ""]
    for line in report["targets"]:
        lines.append(f"- {line}")
    lines += int8_analysis(report)
    lines += ["", "Raw per-round numbers: `docs/export_latency.json`. To time one file of your own the same way "
              "(each thread count in its own process): `kerasface bench --model FILE --threads 1,2 "
              "--batch-sizes 1,16 [--json OUT]`; third-party files take `--runtime`, `--channel-order`, "
              "`--pixel-range`, `--layout`, `--input-size` as in `kerasface eval`.", ""]
    return "\n".join(lines)


def int8_analysis(report):
    """Markdown lines explaining the int8 vs fp32 TFLite latency from this run's numbers."""
    summary, exports = report["summary"], report["exports"]

    def ms(label):
        return summary.get(label, {}).get("per_face_median_ms")

    def ratio(label):
        return summary.get(label, {}).get("ratio_to_reference")

    lines = ["", "## Why int8 is (not) faster than fp32 here", ""]
    partitions = {label: exports.get(label, {}).get("xnnpack_partitions")
                  for label in ("tflite_fp32", "tflite_int8", "tflite_int8_native_prelu")}
    if partitions["tflite_fp32"] is not None and partitions["tflite_int8"] is not None:
        lines.append(
            f"- XNNPACK delegate partitions: fp32 {partitions['tflite_fp32']}, int8 {partitions['tflite_int8']}"
            + (f", int8 with the native PRELU op {partitions['tflite_int8_native_prelu']}"
               if partitions["tflite_int8_native_prelu"] is not None else "")
            + ". One partition means XNNPACK runs the whole network; every op it cannot run splits the "
              "graph and runs on LiteRT's builtin (reference-style) kernel instead."
        )
    counts = exports.get("tflite_int8", {}).get("op_counts")
    if counts:
        lines.append("- TFLite int8 ops: " + ", ".join(f"{name} x{count}" for name, count in counts.items()) + ".")
    if ms("tflite_fp32_no_xnnpack") and ms("tflite_int8_no_xnnpack"):
        lines.append(
            f"- Builtin kernels only (no XNNPACK): fp32 {ms('tflite_fp32_no_xnnpack'):.2f} ms/face, int8 "
            f"{ms('tflite_int8_no_xnnpack'):.2f} ms/face; with XNNPACK: fp32 {ms('tflite_fp32'):.2f}, int8 "
            f"{ms('tflite_int8'):.2f}."
        )
    if ms("tflite_int8_native_prelu"):
        native = exports.get("tflite_int8_native_prelu", {})
        abs_form = exports.get("tflite_int8", {})
        lines.append(
            f"- PReLU form in int8: abs form (default) {ms('tflite_int8'):.2f} ms/face = "
            f"{ratio('tflite_int8'):.2f}x TFLite fp32, mean cosine to Keras {_fmt(abs_form.get('parity_mean_cosine'))}; "
            f"native PRELU op {ms('tflite_int8_native_prelu'):.2f} ms/face = {ratio('tflite_int8_native_prelu'):.2f}x, "
            f"mean cosine {_fmt(native.get('parity_mean_cosine'))}."
        )
    native_parts = partitions["tflite_int8_native_prelu"] or 0
    if native_parts > 1:
        lines += [
            "",
            f"Reading: XNNPACK has no int8 PRELU kernel (ai-edge-litert "
            f"{report['machine'].get('libraries', {}).get('ai_edge_litert') or ''}), so with TFLite's PRELU op it "
            f"cuts the int8 MobileFaceNet into {native_parts} pieces and runs all 33 PReLUs on LiteRT's slow "
            "builtin kernel. `export_tflite` therefore writes int8 PReLU as `s x + |s x| (1 - a) / (1 + a)` with "
            "`s = (1 + a) / 2` folded into the convolution before it (`kerasface.layers.AbsFormPReLU`; `|y|` is "
            "LEAKY_RELU with slope -1): LEAKY_RELU, MUL and ADD, all run by XNNPACK in int8, "
            f"{partitions['tflite_int8']} partitions. On x86 XNNPACK's float32 kernels are so fast that int8 still "
            "does not beat float32 (int8 pays 3 requantised elementwise ops per PReLU); the int8 file is the "
            "choice for its size and for int8-only accelerators, float16/float32 the faster CPU choice here.",
        ]
    return lines


def partitions_of(exports, label):
    return exports.get(label, {}).get("xnnpack_partitions")


def _fmt(value, digits=4):
    return "-" if value is None else f"{value:.{digits}f}"


def targets(summary):
    """The issue's two latency targets, judged on this run."""
    lines = []
    int8 = summary.get("tflite_int8", {})
    ratio = int8.get("ratio_to_reference")
    if ratio is not None:
        low, high = int8["ratio_range"]
        verdict = "MET" if ratio <= 0.6 else "NOT MET"
        lines.append(f"TFLite int8 <= 0.6x TFLite fp32: {verdict} ({ratio:.2f}x, rounds {low:.2f}-{high:.2f}x)")
    runtime = "onnxruntime"
    sface = summary.get("sface_int8_onnxruntime", {})
    if not sface.get("per_face_median_ms"):
        # onnxruntime could not run the file: compare with OpenCV DNN instead, and say so.
        runtime, sface = "OpenCV DNN (onnxruntime could not run it)", summary.get("sface_int8_opencv", {})
    if int8.get("per_face_median_ms") and sface.get("per_face_median_ms"):
        factor = sface["per_face_median_ms"] / int8["per_face_median_ms"]
        verdict = "MET" if factor > 1 else "NOT MET"
        lines.append(
            f"MobileFaceNet TFLite int8 faster per face than SFace int8 in {runtime}: {verdict} "
            f"({int8['per_face_median_ms']:.2f} vs {sface['per_face_median_ms']:.2f} ms/face, {factor:.1f}x)"
        )
    return lines


def _library_versions():
    from kerasface.benchmark.zoo_benchmark import _library_versions as versions

    return {**versions(), "opencv": _version("opencv-python-headless") or _version("opencv-python")}


def _version(distribution):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _load_average():
    try:
        return " / ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="kerasface .keras embedding model or run directory")
    parser.add_argument("--work-dir", default=None,
                        help="where the exported files live / are written (default: <model dir>/export_latency)")
    parser.add_argument("--sface", default=os.fspath(DEFAULT_SFACE), help="peer SFace int8 ONNX file")
    parser.add_argument("--calibration", default=os.fspath(DEFAULT_CALIBRATION),
                        help="aligned faces for int8 calibration (200 sampled)")
    parser.add_argument("--images", default=os.fspath(DEFAULT_IMAGES),
                        help="aligned faces fed to the models (16 sampled) and used for the parity check")
    parser.add_argument("--rounds", type=integer_at_least(1), default=5, help="interleaved rounds (default: 5)")
    parser.add_argument("--runs", type=integer_at_least(3), default=20,
                        help="timed calls per variant per round at batch 1 (default: 20)")
    parser.add_argument("--batch-runs", type=integer_at_least(3), default=5,
                        help="timed calls per round at batch 16 (default: 5)")
    parser.add_argument("--warmup", type=integer_at_least(0), default=3, help="untimed calls first (default: 3)")
    parser.add_argument("--max-seconds", type=positive_float, default=10.0,
                        help="cap on one variant's timed calls per round (default: 10)")
    parser.add_argument("--only", nargs="+", default=None, metavar="LABEL", help="time only these variants")
    parser.add_argument("--json", default="docs/export_latency.json", help="output JSON")
    parser.add_argument("--markdown", default="docs/export_latency.md", help="output Markdown")
    parser.add_argument("--render-only", action="store_true",
                        help="only rewrite --markdown from an existing --json (no exports, no timing)")
    parser.add_argument("--export-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    log = sys.stderr

    if args.render_only:
        report = json.loads(Path(args.json).read_text())
        if "libraries" not in report["machine"]:
            report["machine"]["libraries"] = _library_versions()
            Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        report["targets"] = targets(report["summary"])
        Path(args.markdown).write_text(markdown(report))
        print(f"wrote {args.markdown} from {args.json}", file=log)
        return 0
    model = Path(args.model)
    work_dir = Path(args.work_dir) if args.work_dir else (model if model.is_dir() else model.parent) / "export_latency"
    if args.export_only:
        info = export_missing(model, work_dir, args.calibration, args.images, log)
        (work_dir / "exports.json").write_text(json.dumps(info, indent=1))
        return 0
    from kerasface.benchmark.model_benchmark import check_model_path
    from kerasface.benchmark.zoo_benchmark import machine_info

    check_model_path(model)
    check_model_path(args.sface)
    command = "python " + shlex.join(["bench/export_latency.py", *(sys.argv[1:] if argv is None else argv)])
    began = time.perf_counter()
    # Exports in a child process, so this one stays free of TensorFlow state while timing.
    finished = subprocess.run([sys.executable, __file__, "--export-only", "--model", os.fspath(model),
                               "--work-dir", os.fspath(work_dir), "--calibration", args.calibration,
                               "--images", args.images])
    if finished.returncode != 0:
        print(f"export_latency: exporting into {work_dir} failed (exit {finished.returncode})", file=log)
        return 1
    exports = json.loads((work_dir / "exports.json").read_text())
    table = variants(model, work_dir, Path(args.sface))
    if args.only:
        unknown = sorted(set(args.only) - set(table))
        if unknown:
            parser.error(f"unknown variant(s) {unknown}; available: {', '.join(table)}")
        table = {label: spec for label, spec in table.items() if label in args.only}

    from kerasface.benchmark.model_benchmark import benchmark_images

    faces, inputs = benchmark_images(16, args.images)
    load_start = _load_average()
    with tempfile.TemporaryDirectory(prefix="kerasface_export_latency_") as folder:
        faces_file = Path(folder) / "faces.npy"
        np.save(faces_file, faces)
        print(f"loading {len(table)} variants (one process each) ...", file=log, flush=True)
        workers = start_workers(table, faces_file, log)
        try:
            measured = interleaved_rounds(workers, args.rounds, args.runs, args.warmup, args.max_seconds,
                                          BATCH_VARIANTS, args.batch_runs, log)
        finally:
            for worker in workers.values():
                if isinstance(worker, BenchWorker):
                    worker.close()
    summary = summarise(measured)
    loaded = {label: worker.info for label, worker in workers.items() if isinstance(worker, BenchWorker)}
    report = {
        "schema": 1,
        "model": os.fspath(model),
        "work_dir": os.fspath(work_dir),
        "embedding_size": next((info["embedding_size"] for info in loaded.values()
                                if info.get("format") == "keras"), None),
        "command": command,
        "timed": {label: ENGINE_DESCRIPTIONS[spec["engine"]] for label, spec in table.items()},
        "inputs": f"{inputs['count']} {inputs['source']}",
        "settings": {"threads": 1, "batch_size": 1, "rounds": args.rounds, "runs": args.runs,
                     "batch_runs": args.batch_runs, "warmup": args.warmup, "max_seconds": args.max_seconds,
                     "reference": REFERENCE},
        "machine": {**machine_info(), "libraries": _library_versions()},
        "load_average_start": load_start,
        "load_average_end": _load_average(),
        "seconds": time.perf_counter() - began,
        "variants": {label: {**{k: os.fspath(v) if isinstance(v, Path) else v for k, v in spec.items()},
                             "loaded": loaded.get(label)} for label, spec in table.items()},
        "load_errors": {label: worker for label, worker in workers.items() if not isinstance(worker, BenchWorker)},
        "exports": exports,
        "int8_ops": exports.get("tflite_int8", {}).get("ops"),
        "summary": summary,
        "rounds": measured,
    }
    report["targets"] = targets(summary)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    Path(args.markdown).write_text(text)
    print(text)
    print(f"wrote {args.json} and {args.markdown} in {report['seconds']:.0f} s", file=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
