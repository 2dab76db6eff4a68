"""Latency and throughput of one face model file, per thread count and batch size.

``benchmark_model`` measures what a user calls, ``FaceEmbedder(path).embed(uint8 faces)``
(preprocessing included), for every (threads, batch size) pair: each thread count in its own
child process (:class:`~kerasface.benchmark.bench_worker.BenchWorker`), because TensorFlow's
thread pools (Keras, SavedModel) can only be sized before it starts, and a fresh process per
setting keeps the measurements independent. Per pair: ``warmup`` untimed calls, then up to
``runs`` timed ones (at most ``max_seconds``); the per-face latency is the call time divided
by the batch size (median and 90th percentile), the throughput is faces per second at the
median.

    kerasface bench --model runs/mfn/model_int8.tflite --threads 1,2 --batch-sizes 1,16
    python -m kerasface.benchmark.model_benchmark --model m.onnx --json bench.json   # same
"""

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kerasface.benchmark.bench_worker import ENGINE_DESCRIPTIONS, BenchWorker, InProcessWorker

SCHEMA_VERSION = 1
DEFAULT_THREADS = (1,)
DEFAULT_BATCH_SIZES = (1, 16)
DEFAULT_RUNS = 50
DEFAULT_WARMUP = 5
DEFAULT_MAX_SECONDS = 30.0
TABLE_COLUMNS = ("threads", "batch", "ms/face median", "ms/face p90", "faces/s", "timed runs")


def check_model_path(model):
    """``model`` as a ``Path``; FileNotFoundError naming it when there is nothing there."""
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such model file or directory (expected a .tflite or .onnx file, a SavedModel "
            f"directory, a .keras file or a run directory)"
        )
    return path


def benchmark_images(count, images=None, seed=0):
    """uint8 (N, 112, 112, 3) deterministic faces, N <= ``count``, and a description of them.

    Args:
        count: faces wanted (the largest batch size; a larger batch cycles through them).
        images: directory of aligned 112x112 faces (``load_face_images``), or None for
            synthetic faces (``synthetic_face_images``).
        seed: sampling seed.

    Returns:
        ``(faces, source)``: the array and a dict ``{"source": ..., "count": N}``.
    """
    from kerasface.export.tflite_export import load_face_images, synthetic_face_images

    if images is None:
        faces = synthetic_face_images(count, seed=seed)
        return faces, {"source": "synthetic faces", "count": int(len(faces))}
    faces = load_face_images(images, count, seed=seed)
    return faces, {"source": f"aligned faces from {os.fspath(images)}", "count": int(len(faces))}


def benchmark_model(
    model,
    threads=DEFAULT_THREADS,
    batch_sizes=DEFAULT_BATCH_SIZES,
    runs=DEFAULT_RUNS,
    warmup=DEFAULT_WARMUP,
    max_seconds=DEFAULT_MAX_SECONDS,
    images=None,
    peer_options=None,
    engine="embedder",
    isolate=True,
    command=None,
    log=None,
):
    """Time ``embed()`` of one model file for every (threads, batch size) pair.

    Args:
        model: ``.tflite``, ``.onnx``, SavedModel directory, ``.keras`` file or run directory.
        threads: thread counts; each one runs in its own child process.
        batch_sizes: faces per ``embed`` call.
        runs: timed calls per pair (>= 3).
        warmup: untimed calls first (>= 0).
        max_seconds: cap on the timed calls of one pair (at least 3 are always made).
        images: directory of aligned faces, or None for synthetic faces.
        peer_options: ``FaceEmbedder`` options for third-party files (``runtime``,
            ``channel_order``, ``pixel_range``, ``layout``, ``input_size``).
        engine: "embedder" (``FaceEmbedder.embed``), or for a ``.keras`` model
            "keras_call" / "keras_predict_on_batch".
        isolate: one child process per thread count (default). False times in this process
            (``InProcessWorker``): quicker to start, but TensorFlow thread counts cannot be set.
        command: command line recorded in the report.
        log: text stream for progress lines (default stderr).

    Returns:
        report dict: ``schema``, ``model``, ``format``, ``runtime``, ``embedding_size``,
        ``engine``, ``timed`` (what one timed call does), ``inputs``, ``settings``,
        ``machine``, ``command`` and ``results``: one record per (threads, batch size) with
        ``threads``, ``batch_size``, ``runs``, ``median_ms``, ``p90_ms`` (per call),
        ``per_face_median_ms``, ``per_face_p90_ms``, ``faces_per_second``.

    Raises:
        FileNotFoundError: no model at ``model`` (or no image directory).
        ValueError: bad settings.
        BenchWorkerError: the model cannot be loaded or timed (the child's error).
    """
    from kerasface.benchmark.zoo_benchmark import machine_info

    log = log or sys.stderr
    path = check_model_path(model)
    threads = _positive_integers("threads", threads)
    batch_sizes = _positive_integers("batch_sizes", batch_sizes)
    if not isinstance(runs, int) or runs < 3:
        raise ValueError(f"`runs` must be an integer >= 3, got {runs!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"`warmup` must be an integer >= 0, got {warmup!r}")
    if not max_seconds > 0:
        raise ValueError(f"`max_seconds` must be > 0, got {max_seconds!r}")
    faces, inputs = benchmark_images(max(batch_sizes), images)
    report = {
        "schema": SCHEMA_VERSION,
        "model": os.fspath(path),
        "format": None,
        "runtime": None,
        "embedding_size": None,
        "engine": engine,
        "timed": ENGINE_DESCRIPTIONS.get(engine, engine),
        "inputs": inputs,
        "settings": {"threads": threads, "batch_sizes": batch_sizes, "runs": runs, "warmup": warmup,
                     "max_seconds": float(max_seconds), "isolate": bool(isolate),
                     "peer_options": {k: v for k, v in (peer_options or {}).items() if v is not None}},
        "machine": machine_info(),
        "command": command,
        "results": [],
    }
    with tempfile.TemporaryDirectory(prefix="kerasface_bench_") as folder:
        faces_file = Path(folder) / "faces.npy"
        np.save(faces_file, faces)
        for count in threads:
            began = time.perf_counter()
            where = "in a child process" if isolate else "in this process"
            print(f"{path.name}: {count} thread(s): loading {where} ...", file=log, flush=True)
            worker_class = BenchWorker if isolate else InProcessWorker
            with worker_class(path, faces_file, threads=count, engine=engine, peer_options=peer_options) as worker:
                report.update({key: worker.info[key] for key in ("format", "runtime", "embedding_size")})
                for batch_size in batch_sizes:
                    record = worker.measure(batch_size, runs=runs, warmup=warmup, max_seconds=max_seconds)
                    report["results"].append(record)
                    print(f"{path.name}: {count} thread(s), batch {batch_size}: "
                          f"{record['per_face_median_ms']:.2f} ms/face", file=log, flush=True)
            print(f"{path.name}: {count} thread(s) done in {time.perf_counter() - began:.0f} s", file=log, flush=True)
    return report


def format_table(report):
    """The report as a Markdown table, with the model, what was timed and the machine above it."""
    settings = report["settings"]
    machine = report["machine"]
    lines = [
        f"model: {report['model']} ({report['format']}, runtime {report['runtime']}, "
        f"{report['embedding_size']}-d embeddings)",
        f"timed: {report['timed']}; inputs: {report['inputs']['count']} {report['inputs']['source']} "
        f"(112x112 uint8 RGB)",
        f"median / p90 of up to {settings['runs']} timed calls after {settings['warmup']} warm-up calls "
        f"(at most {settings['max_seconds']:g} s each); per face = per call / batch size",
        f"machine: {machine['cpu_model']}, {machine['usable_cpus']} of {machine['cpu_count']} logical cores usable",
        "",
        "| " + " | ".join(TABLE_COLUMNS) + " |",
        "|" + "---:|" * len(TABLE_COLUMNS),
    ]
    for record in report["results"]:
        lines.append(
            f"| {record['threads']} | {record['batch_size']} | {record['per_face_median_ms']:.2f} | "
            f"{record['per_face_p90_ms']:.2f} | {record['faces_per_second']:.1f} | {record['runs']} |"
        )
    return "\n".join(lines)


def _positive_integers(name, values):
    values = [values] if isinstance(values, int) else list(values)
    if not values:
        raise ValueError(f"`{name}` must name at least one value, got {values!r}")
    for value in values:
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be integers >= 1, got {value!r}")
    return [int(value) for value in dict.fromkeys(values)]


if __name__ == "__main__":
    import argparse

    from kerasface.cli import bench_command

    parser = argparse.ArgumentParser(
        prog="python -m kerasface.benchmark.model_benchmark",
        description="per-face latency and throughput of one face model file (as `kerasface bench --model`)",
    )
    bench_command.add_model_arguments(parser, required=True)
    sys.exit(bench_command.run_model_bench(parser.parse_args(), prog="python -m kerasface.benchmark.model_benchmark"))
