"""Backbone zoo benchmark: parameters, MACs, TFLite/ONNX sizes and single-thread CPU latency per backbone.

For every backbone (``kerasface.backbones.list()`` or chosen names), each in a fresh Python
process so one backbone's memory and TensorFlow state never affect the next: build it with
its default configuration (plus optional keyword arguments) and seeded random weights
(size and latency do not depend on training), then measure

* parameters, trainable parameters, MACs and FLOPs at batch 1 (``count_macs``);
* TFLite float32 and full-integer int8 file sizes: ``export_tflite`` (int8 calibrated on
  aligned faces: a directory, or synthetic faces) for 112x112 embedding models, the
  generic converter (``tflite_flatbuffer``) for any other single-input model such as the
  LATSE decoder ((B, D) embeddings -> images; calibrated on random-normal embeddings);
* TFLite latency per face at batch 1 with LiteRT (``num_threads`` threads, default 1):
  median of ``runs`` timed invokes after ``warmup`` untimed ones, capped at
  ``max_seconds`` of timed calls; float32 and int8;
* ONNX Runtime float32 latency the same way (``intra_op_num_threads`` = threads).

Each stage that fails is recorded with its error and the others still run (status
``partial``); a backbone that cannot be built, or whose process dies, is ``failed``.
Results are written to a JSON file after every backbone, so an interrupted run resumes:
backbones already measured (status ``ok``) with the same settings, keyword arguments and
CPU are skipped unless ``force``. ``markdown_table`` renders the table with the machine
and the command.

    kerasface bench zoo                                   # every backbone -> docs/zoo.json
    kerasface bench zoo --names mobilefacenet --calibration ../shared/data/celeba_dev/train
    python -m kerasface.benchmark.zoo_benchmark --names mobilefacenet   # same, without the CLI
"""

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from kerasface.cli.argument_types import integer_at_least, name_json_pair, positive_float

SCHEMA_VERSION = 1
DEFAULT_OUT = "docs/zoo.json"
DEFAULT_SETTINGS = {
    "threads": 1,
    "runs": 30,
    "warmup": 5,
    "max_seconds": 20.0,
    "calibration": None,
    "calibration_images": 100,
    "onnx": True,
    "seed": 0,
}
DEFAULT_TIMEOUT_S = 1800
STATUSES = ("ok", "partial", "failed")
# Every measured number in a result; None when its stage failed (see ``errors``).
MEASUREMENT_FIELDS = (
    "params",
    "trainable_params",
    "macs",
    "flops",
    "tflite_fp32_bytes",
    "tflite_int8_bytes",
    "onnx_fp32_bytes",
    "tflite_fp32_ms",
    "tflite_int8_ms",
    "onnx_fp32_ms",
)
MB = 1_000_000


def zoo_settings(**overrides):
    """``DEFAULT_SETTINGS`` updated with ``overrides``, validated.

    Keys: ``threads`` (LiteRT / ONNX Runtime threads), ``runs`` (timed calls, >= 3),
    ``warmup`` (untimed calls first), ``max_seconds`` (cap on the timed calls of one
    measurement), ``calibration`` (directory of aligned 112x112 faces or None for
    synthetic ones), ``calibration_images`` (faces used for int8 calibration), ``onnx``
    (also measure ONNX Runtime), ``seed`` (weights, calibration sample, inputs).
    """
    unknown = sorted(set(overrides) - set(DEFAULT_SETTINGS))
    if unknown:
        raise ValueError(f"unknown zoo settings {unknown}; expected some of {sorted(DEFAULT_SETTINGS)}")
    settings = {**DEFAULT_SETTINGS, **overrides}
    for key in ("threads", "calibration_images"):
        if not isinstance(settings[key], int) or settings[key] < 1:
            raise ValueError(f"`{key}` must be an integer >= 1, got {settings[key]!r}")
    if not isinstance(settings["runs"], int) or settings["runs"] < 3:
        raise ValueError(f"`runs` must be an integer >= 3, got {settings['runs']!r}")
    if not isinstance(settings["warmup"], int) or settings["warmup"] < 0:
        raise ValueError(f"`warmup` must be an integer >= 0, got {settings['warmup']!r}")
    if not settings["max_seconds"] > 0:
        raise ValueError(f"`max_seconds` must be > 0, got {settings['max_seconds']!r}")
    settings["max_seconds"] = float(settings["max_seconds"])
    if settings["calibration"] is not None:
        settings["calibration"] = os.fspath(settings["calibration"])
        if not os.path.isdir(settings["calibration"]):
            raise FileNotFoundError(f"{settings['calibration']}: calibration is not a directory of face images")
    settings["onnx"] = bool(settings["onnx"])
    return settings


def machine_info():
    """CPU model (``/proc/cpuinfo``), logical and usable core counts, platform and library versions."""
    cpu_model = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "cpu_model": cpu_model or platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _library_versions():
    """Installed versions, read from package metadata (importing TensorFlow here would defeat the child processes)."""
    from importlib.metadata import PackageNotFoundError, version

    distributions = {
        "tensorflow": ("tensorflow", "tensorflow-cpu"),
        "keras": ("keras",),
        "ai_edge_litert": ("ai-edge-litert",),
        "onnxruntime": ("onnxruntime",),
        "tf2onnx": ("tf2onnx",),
    }
    versions = {}
    for module, candidates in distributions.items():
        versions[module] = None
        for candidate in candidates:
            try:
                versions[module] = version(candidate)
                break
            except PackageNotFoundError:
                continue
    return versions


# ---------------------------------------------------------------- one backbone, in this process


def measure_backbone(name, settings=None, backbone_kwargs=None, factory=None):
    """Measure one backbone in this process; a failing backbone is a result, not an exception.

    Args:
        name: registry name (also the label when ``factory`` is given).
        settings: dict from ``zoo_settings`` (None: the defaults).
        backbone_kwargs: keyword arguments for ``kerasface.backbones.get(name, ...)``
            (JSON-serialisable; recorded in the result).
        factory: zero-argument callable returning the model instead of the registry,
            e.g. for a model that is not registered; ``backbone_kwargs`` is then only recorded.

    Returns:
        dict: ``name``, ``status`` ("ok" | "partial" | "failed"), ``error`` (why it failed),
        ``errors`` (stage -> message for failed stages), ``kind`` ("embedding": 112x112
        faces -> (B, D); "generic": any other single-input model, e.g. the decoder),
        ``input_shape``, ``output_shape``, ``embedding_size`` (D: the output size of an
        embedding model, the input size of a (B, D) -> image decoder), the
        ``MEASUREMENT_FIELDS`` (bytes are file sizes, ``*_ms`` median milliseconds per face
        at batch 1), ``latency`` (stage -> median/p90/runs), ``tflite_fp32_ops`` /
        ``tflite_int8_ops``, ``cost_complete``, ``uncounted_ops``, ``calibration``
        (where the int8 calibration inputs came from), ``backbone_kwargs``, ``settings``,
        ``machine``, ``model_class``, ``seconds`` (stage -> wall seconds).

    Raises:
        ValueError / FileNotFoundError: bad ``settings`` only.
    """
    settings = zoo_settings(**(settings or {}))
    backbone_kwargs = dict(backbone_kwargs or {})
    result = {
        "name": name,
        "status": "failed",
        "error": None,
        "errors": {},
        "kind": None,
        "model_class": None,
        "input_shape": None,
        "output_shape": None,
        "embedding_size": None,
        **{field: None for field in MEASUREMENT_FIELDS},
        "latency": {},
        "tflite_fp32_ops": None,
        "tflite_int8_ops": None,
        "onnx_ops": None,
        "cost_complete": None,
        "uncounted_ops": None,
        "calibration": None,
        "backbone_kwargs": backbone_kwargs,
        "settings": settings,
        "machine": machine_info(),
        "seconds": {},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    start = time.perf_counter()
    try:
        model = _build(name, backbone_kwargs, factory, settings["seed"], result)
    except Exception as error:  # recorded; the caller goes on with the next backbone
        result["error"] = _describe(error)
        result["seconds"]["total"] = round(time.perf_counter() - start, 3)
        return result
    with tempfile.TemporaryDirectory(prefix="kerasface_zoo_") as work:
        stages = _stages(model, settings, result, Path(work))
        for stage, run in stages:
            began = time.perf_counter()
            try:
                run()
            except Exception as error:  # one stage failing must not hide the others
                result["errors"][stage] = _describe(error)
            result["seconds"][stage] = round(time.perf_counter() - began, 3)
    result["status"] = "partial" if result["errors"] else "ok"
    if result["errors"]:
        result["error"] = "; ".join(f"{stage}: {message}" for stage, message in result["errors"].items())
    result["seconds"]["total"] = round(time.perf_counter() - start, 3)
    return result


def _describe(error):
    text = f"{type(error).__name__}: {error}".strip()
    return text if len(text) <= 2000 else text[:2000] + " ..."


def _build(name, backbone_kwargs, factory, seed, result):
    import keras

    from kerasface.export.generic_conversion import check_single_input_model
    from kerasface.export.saved_model_export import check_embedding_model

    keras.utils.set_random_seed(seed)
    began = time.perf_counter()
    if factory is not None:
        model = factory()
    else:
        from kerasface import backbones

        model = backbones.get(name, **backbone_kwargs)
    result["seconds"]["build"] = round(time.perf_counter() - began, 3)
    if not isinstance(model, keras.Model):
        raise TypeError(f"backbone {name!r}: expected a keras.Model, got {type(model).__name__}")
    result["model_class"] = f"{type(model).__module__}.{type(model).__qualname__}"
    _, input_shape, _ = check_single_input_model(model)
    result["input_shape"] = [int(size) for size in input_shape[1:]]
    result["output_shape"] = [None if size is None else int(size) for size in model.outputs[0].shape[1:]]
    try:
        result["embedding_size"] = check_embedding_model(model)
        result["kind"] = "embedding"
    except ValueError:
        result["kind"] = "generic"
        output_shape = result["output_shape"]
        if len(output_shape) == 1 and output_shape[0]:  # an embedding model at another input size
            result["embedding_size"] = output_shape[0]
        elif len(input_shape) == 2:  # (B, D) -> ...: a decoder of D-dimensional embeddings
            result["embedding_size"] = int(input_shape[1])
    return model


def _stages(model, settings, result, work):
    """(stage name, callable) pairs; the callables fill ``result``."""
    import numpy as np

    from kerasface.data.preprocessing import IMAGE_SIZE, normalize_numpy

    embedding = result["kind"] == "embedding"
    input_shape = tuple(result["input_shape"])
    rng = np.random.default_rng(settings["seed"])
    faces_input = input_shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    state = {}

    def calibration_inputs():
        if "calibration" not in state:
            if faces_input:
                from kerasface.export.tflite_export import load_calibration_images

                faces = load_calibration_images(
                    settings["calibration"], settings["calibration_images"], settings["seed"]
                )
                source = settings["calibration"] or "synthetic faces"
                state["calibration"] = (faces, normalize_numpy(faces))
                result["calibration"] = {"source": source, "count": int(len(faces))}
            else:
                normal = rng.standard_normal((settings["calibration_images"], *input_shape)).astype(np.float32)
                state["calibration"] = (None, normal)
                result["calibration"] = {"source": "random normal", "count": int(len(normal))}
        return state["calibration"]

    def latency_input():
        if "latency_input" not in state:
            if faces_input:
                from kerasface.export.tflite_export import load_calibration_images

                face = load_calibration_images(settings["calibration"], 1, settings["seed"])
                state["latency_input"] = normalize_numpy(face)
            else:
                state["latency_input"] = rng.standard_normal((1, *input_shape)).astype(np.float32)
        return state["latency_input"]

    def cost():
        from kerasface.budget import count_macs

        measured = count_macs(model)
        result["params"] = int(measured.params)
        result["trainable_params"] = int(measured.trainable_params)
        result["macs"] = int(measured.macs)
        result["flops"] = int(measured.flops)
        result["cost_complete"] = bool(measured.complete)
        result["uncounted_ops"] = dict(measured.uncounted_ops) or None

    def tflite(quantize):
        def run():
            from kerasface.export.generic_conversion import TFLiteModelRunner, tflite_flatbuffer
            from kerasface.export.tflite_export import export_tflite, tflite_op_names

            label = "tflite_int8" if quantize else "tflite_fp32"
            path = work / f"{label}.tflite"
            if embedding:
                faces = calibration_inputs()[0] if quantize else None
                export_tflite(
                    model,
                    path,
                    quantize=quantize,
                    calibration=faces,
                    num_calibration_images=settings["calibration_images"],
                    seed=settings["seed"],
                )
            else:
                representative = calibration_inputs()[1] if quantize else None
                path.write_bytes(tflite_flatbuffer(model, quantize=quantize, representative_inputs=representative))
            result[f"{label}_bytes"] = path.stat().st_size
            result[f"{label}_ops"] = tflite_op_names(path)
            runner = TFLiteModelRunner(path, num_threads=settings["threads"])
            _time(runner, latency_input(), settings, result, label)

        return run

    def onnx():
        from kerasface.export.generic_conversion import OnnxModelRunner, onnx_model_proto, onnx_op_names
        from kerasface.export.onnx_export import export_onnx

        path = work / "model.onnx"
        if embedding:
            export_onnx(model, path)
        else:
            path.write_bytes(onnx_model_proto(model).SerializeToString())
        result["onnx_fp32_bytes"] = path.stat().st_size
        result["onnx_ops"] = onnx_op_names(path)
        runner = OnnxModelRunner(path, num_threads=settings["threads"])
        _time(runner, latency_input(), settings, result, "onnx_fp32")

    stages = [("cost", cost), ("tflite_fp32", tflite(None)), ("tflite_int8", tflite("int8"))]
    if settings["onnx"]:
        stages.append(("onnx_fp32", onnx))
    return stages


def _time(runner, batch, settings, result, label):
    from kerasface.benchmark.latency import measure_latency

    load_before = _load_average()
    measured = measure_latency(
        runner, batch, warmup=settings["warmup"], runs=settings["runs"], max_seconds=settings["max_seconds"]
    )
    result[f"{label}_ms"] = measured.per_face_ms
    result["latency"][label] = {
        "median_ms": measured.median_ms,
        "p90_ms": measured.p90_ms,
        "runs": measured.runs,
        "batch_size": measured.batch_size,
        # Other processes on the machine inflate the times; a high load says to measure again.
        "load_average_1min": [load_before, _load_average()],
    }


def _load_average():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


# ---------------------------------------------------------------- the zoo (one process per backbone)


def load_results(path):
    """The report stored at ``path`` (an empty one when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return {"schema": SCHEMA_VERSION, "machine": None, "command": None, "results": {}}
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a valid zoo JSON file ({error}); move it away or pass another --out") from None
    if not isinstance(report, dict) or not isinstance(report.get("results"), dict):
        raise ValueError(f"{path}: not a zoo JSON file (expected an object with a 'results' object)")
    return report


def write_results(path, report):
    """Write ``report`` to ``path`` atomically (a crash never leaves half a file)."""
    path = Path(path)
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(report, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path


def already_measured(result, settings, backbone_kwargs, machine):
    """Whether a stored ``result`` can be reused: status ok, same settings, kwargs and CPU."""
    if not isinstance(result, dict) or result.get("status") != "ok":
        return False
    stored_machine = result.get("machine") or {}
    return (
        result.get("settings") == settings
        and (result.get("backbone_kwargs") or {}) == (backbone_kwargs or {})
        and stored_machine.get("cpu_model") == machine["cpu_model"]
        and stored_machine.get("usable_cpus") == machine["usable_cpus"]
    )


def registered_backbones():
    """``kerasface.backbones.list()``: listing builds nothing (importing ``kerasface`` already loaded the registry)."""
    from kerasface import backbones

    return backbones.list()


def _child_environment():
    environment = dict(os.environ)
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return environment


def measure_in_subprocess(name, settings, backbone_kwargs=None, timeout=DEFAULT_TIMEOUT_S):
    """``measure_backbone`` in a fresh Python process; a crash or timeout becomes a failed result."""
    with tempfile.TemporaryDirectory(prefix="kerasface_zoo_child_") as folder:
        spec = Path(folder) / "spec.json"
        out = Path(folder) / "result.json"
        spec.write_text(json.dumps({"name": name, "settings": settings, "backbone_kwargs": backbone_kwargs or {}}))
        command = [
            sys.executable, "-m", "kerasface.benchmark.zoo_benchmark", "--child-spec", str(spec),
            "--child-out", str(out),
        ]
        began = time.perf_counter()
        try:
            finished = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, env=_child_environment()
            )
        except subprocess.TimeoutExpired:
            return _failed(name, settings, backbone_kwargs, f"timed out after {timeout} s (whole process)")
        if out.is_file():
            return json.loads(out.read_text(encoding="utf-8"))
        code = finished.returncode
        why = f"killed by signal {-code}" + (" (out of memory?)" if code == -9 else "") if code < 0 else f"exit {code}"
        tail = " | ".join((finished.stderr or "").strip().splitlines()[-3:])
        result = _failed(name, settings, backbone_kwargs, f"child process {why} after "
                         f"{time.perf_counter() - began:.0f} s; {tail}"[:2000])
        return result


def _failed(name, settings, backbone_kwargs, error):
    return {
        "name": name,
        "status": "failed",
        "error": error,
        "errors": {},
        "backbone_kwargs": dict(backbone_kwargs or {}),
        "settings": settings,
        "machine": machine_info(),
        **{field: None for field in MEASUREMENT_FIELDS},
    }


def run_zoo(
    names=None,
    out=DEFAULT_OUT,
    settings=None,
    backbone_kwargs=None,
    force=False,
    isolate=True,
    factories=None,
    command=None,
    timeout=DEFAULT_TIMEOUT_S,
    log=None,
):
    """Measure backbones one after another, updating the JSON file at ``out`` after each.

    Args:
        names: backbone names (default: every registered backbone, or every key of
            ``factories`` when given).
        out: JSON file; read first so that an interrupted run resumes.
        settings: dict of ``zoo_settings`` overrides.
        backbone_kwargs: name -> keyword arguments for that backbone (default config otherwise).
        force: measure again even when ``out`` has an ok result with the same settings.
        isolate: measure each backbone in a fresh Python process (default). False measures
            in this process (tests, or a single small model).
        factories: name -> zero-argument model factory used instead of the registry; needs
            ``isolate=False`` (a function cannot be sent to another process).
        command: the command line recorded with the results and under the table.
        timeout: seconds allowed per backbone process.
        log: text stream for progress lines (default stderr).

    Returns:
        the report dict (``schema``, ``machine``, ``command``, ``settings``, ``results``
        name -> result dict, as from ``measure_backbone``), also written to ``out``. The
        names measured or skipped in this call are in ``report["this_run"]``
        (name -> "measured" | "skipped").
    """
    log = log or sys.stderr
    settings = zoo_settings(**(settings or {}))
    backbone_kwargs = {name: dict(kwargs) for name, kwargs in (backbone_kwargs or {}).items()}
    factories = dict(factories or {})
    if factories and isolate:
        raise ValueError("`factories` needs isolate=False: a Python factory cannot be sent to a child process")
    available = None
    if names is None:
        names = list(factories) if factories else (available := registered_backbones())
    names = list(dict.fromkeys(names))
    if not names:
        raise ValueError("no backbones to measure (the backbone registry is empty)")
    from_registry = [name for name in names if name not in factories]
    if from_registry:
        available = available or registered_backbones()
        unknown = [name for name in from_registry if name not in available]
        if unknown:
            raise ValueError(f"unknown backbone(s) {', '.join(unknown)}; available: {', '.join(available)}")
    stray = sorted(set(backbone_kwargs) - set(names))
    if stray:
        raise ValueError(f"keyword arguments given for backbone(s) {stray} that are not being measured ({names})")

    machine = machine_info()
    report = load_results(out)
    report.update(
        schema=SCHEMA_VERSION,
        machine={**machine, "libraries": _library_versions()},
        command=command,
        settings=settings,
    )
    this_run = {}
    for index, name in enumerate(names, 1):
        kwargs = backbone_kwargs.get(name, {})
        previous = report["results"].get(name)
        if not force and already_measured(previous, settings, kwargs, machine):
            print(f"[{index}/{len(names)}] {name}: already measured with these settings, skipped", file=log, flush=True)
            this_run[name] = "skipped"
            continue
        print(f"[{index}/{len(names)}] {name}: measuring ...", file=log, flush=True)
        began = time.perf_counter()
        if isolate:
            result = measure_in_subprocess(name, settings, kwargs, timeout=timeout)
        else:
            result = measure_backbone(name, settings, kwargs, factory=factories.get(name))
        result["command"] = command
        report["results"][name] = result
        this_run[name] = "measured"
        write_results(out, {key: value for key, value in report.items() if key != "this_run"})
        print(f"[{index}/{len(names)}] {name}: {_summary(result)} ({time.perf_counter() - began:.0f} s)",
              file=log, flush=True)
    report["this_run"] = this_run
    return report


def _summary(result):
    if result["status"] == "failed":
        return f"FAILED: {result['error']}"
    text = (
        f"{_quantity(result.get('params'))} params, {_quantity(result.get('macs'))} MACs, "
        f"TFLite fp32 {_ms(result.get('tflite_fp32_ms'))} ms, int8 {_ms(result.get('tflite_int8_ms'))} ms"
    )
    if result["status"] == "partial":
        text += f"; PARTIAL: {result['error']}"
    return text


# ---------------------------------------------------------------- the table


TABLE_COLUMNS = (
    "backbone",
    "embedding D",
    "params",
    "MACs",
    "FLOPs",
    "TFLite fp32 MB",
    "TFLite int8 MB",
    "TFLite fp32 ms/face",
    "TFLite int8 ms/face",
    "ONNX fp32 ms/face",
    "notes",
)


def _quantity(value):
    if value is None:
        return "-"
    from kerasface.budget.budget_check import format_quantity

    return format_quantity(value)


def _megabytes(value):
    return "-" if value is None else f"{value / MB:.2f}"


def _ms(value):
    return "-" if value is None else f"{value:.2f}"


def table_row(result):
    """The table cells of one result (strings, ``TABLE_COLUMNS`` order)."""
    notes = []
    if result.get("kind") == "generic":
        shape = "x".join(str(s) for s in result.get("output_shape") or [])
        inputs = "x".join(str(s) for s in result.get("input_shape") or [])
        notes.append(f"generic conversion, not a 112x112 embedding model: ({inputs}) -> ({shape})")
    if result.get("status") != "ok":
        notes.append(f"{result.get('status', 'failed')}: {result.get('error')}")
    if result.get("cost_complete") is False:
        notes.append(f"ops of unknown cost not in FLOPs: {', '.join(result.get('uncounted_ops') or {})}")
    embedding_size = result.get("embedding_size")
    return (
        result["name"],
        "-" if embedding_size is None else str(embedding_size),
        _quantity(result.get("params")),
        _quantity(result.get("macs")),
        _quantity(result.get("flops")),
        _megabytes(result.get("tflite_fp32_bytes")),
        _megabytes(result.get("tflite_int8_bytes")),
        _ms(result.get("tflite_fp32_ms")),
        _ms(result.get("tflite_int8_ms")),
        _ms(result.get("onnx_fp32_ms")),
        "; ".join(notes).replace("|", "/").replace("\n", " "),
    )


def markdown_table(report, names=None):
    """The Markdown table of ``report`` (from ``run_zoo``/``load_results``), then machine and command lines.

    Args:
        report: dict with ``results`` (name -> result).
        names: rows to show, in order (default: every result in the file).
    """
    results = report.get("results", {})
    names = list(results) if names is None else [name for name in names if name in results]
    lines = [
        "| " + " | ".join(TABLE_COLUMNS) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(TABLE_COLUMNS) - 2) + ["---"]) + "|",
    ]
    lines.extend("| " + " | ".join(table_row(results[name])) + " |" for name in names)
    shown = [results[name] for name in names]
    lines.append("")
    for machine in _distinct(result.get("machine") for result in shown):
        lines.append(
            f"Machine: {machine.get('cpu_model')}, {machine.get('usable_cpus')} usable of "
            f"{machine.get('cpu_count')} logical cores ({machine.get('platform')})."
        )
    for settings in _distinct(result.get("settings") for result in shown):
        calibration = settings.get("calibration") or "synthetic faces"
        lines.append(
            f"Latency: batch 1, {settings.get('threads')} thread(s), median of up to {settings.get('runs')} "
            f"timed runs (capped at {settings.get('max_seconds'):g} s) after {settings.get('warmup')} warm-up, "
            f"LiteRT / ONNX Runtime; int8 = full-integer TFLite calibrated on {settings.get('calibration_images')} "
            f"inputs ({calibration} for 112x112 models, random-normal otherwise); random seeded weights "
            f"(seed {settings.get('seed')})."
        )
    lines.append(
        "MACs: multiply-accumulates at batch 1 (insightface's 'GFLOPs'); FLOPs: 2 x MACs + elementwise ops; "
        "params include BatchNorm statistics; MB = 10**6 bytes."
    )
    for command in _distinct(result.get("command") for result in shown):
        lines.append(f"Command: `{command}`")
    return "\n".join(lines)


def _distinct(items):
    seen, unique = [], []
    for item in items:
        if item is None:
            continue
        key = json.dumps(item, sort_keys=True, default=str)
        if key not in seen:
            seen.append(key)
            unique.append(item)
    return unique


# ---------------------------------------------------------------- command line


def add_arguments(parser):
    """The ``zoo`` options (shared by ``kerasface bench zoo`` and ``python -m``)."""
    parser.add_argument(
        "--names", nargs="+", metavar="NAME",
        help="backbones to measure, as registered in kerasface.backbones (default: every registered backbone)",
    )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, metavar="JSON",
        help="results file, rewritten after every backbone; existing results measured with the same settings "
        "on the same CPU are kept and skipped (default: %(default)s)",
    )
    parser.add_argument(
        "--markdown", metavar="PATH",
        help="also write the Markdown table (always printed to stdout) to this file, e.g. docs/zoo.md-table",
    )
    parser.add_argument(
        "--force", action="store_true", help="measure again backbones already in --out with the same settings"
    )
    parser.add_argument(
        "--calibration", metavar="DIR",
        help="aligned 112x112 faces (searched recursively) for int8 calibration, e.g. "
        "../shared/data/celeba_dev/train (default: synthetic faces)",
    )
    parser.add_argument(
        "--calibration-images", type=integer_at_least(1), default=DEFAULT_SETTINGS["calibration_images"], metavar="N",
        help="inputs used to calibrate the int8 activation ranges (default: %(default)s)",
    )
    parser.add_argument(
        "--threads", type=integer_at_least(1), default=DEFAULT_SETTINGS["threads"], metavar="N",
        help="LiteRT num_threads and ONNX Runtime intra-op threads for the latency (default: %(default)s)",
    )
    parser.add_argument(
        "--runs", type=integer_at_least(3), default=DEFAULT_SETTINGS["runs"], metavar="N",
        help="timed batch-1 calls per latency; the median is reported (default: %(default)s)",
    )
    parser.add_argument(
        "--warmup", type=integer_at_least(0), default=DEFAULT_SETTINGS["warmup"], metavar="N",
        help="untimed calls before timing (default: %(default)s)",
    )
    parser.add_argument(
        "--max-seconds", type=positive_float, default=DEFAULT_SETTINGS["max_seconds"], metavar="S",
        help="stop a latency measurement after S seconds of timed calls (at least 3 calls; default: %(default)s)",
    )
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX export and ONNX Runtime latency")
    parser.add_argument(
        "--kwargs",
        type=name_json_pair("mobilefacenet='{\"width_multiplier\": 0.5}'"),
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="constructor arguments for one backbone instead of its defaults, e.g. "
        "mobilefacenet='{\"embedding_size\": 128}' (repeatable)",
    )
    parser.add_argument(
        "--timeout", type=integer_at_least(1), default=DEFAULT_TIMEOUT_S, metavar="S",
        help="seconds allowed per backbone process before it is recorded as failed (default: %(default)s)",
    )
    return parser


def command_line(args, prefix="kerasface bench zoo"):
    """The full command, every setting spelled out, that reproduces ``args``."""
    parts = shlex.split(prefix)
    if args.names:
        parts += ["--names", *args.names]
    parts += ["--out", args.out]
    if args.markdown:
        parts += ["--markdown", args.markdown]
    if args.calibration:
        parts += ["--calibration", args.calibration]
    parts += [
        "--calibration-images", str(args.calibration_images), "--threads", str(args.threads),
        "--runs", str(args.runs), "--warmup", str(args.warmup), "--max-seconds", f"{args.max_seconds:g}",
    ]
    if args.no_onnx:
        parts.append("--no-onnx")
    for name, kwargs in args.kwargs:
        parts += ["--kwargs", f"{name}={json.dumps(kwargs, separators=(',', ':'))}"]
    if args.force:
        parts.append("--force")
    return shlex.join(parts)


def run_from_args(args, prefix="kerasface bench zoo", out=None, err=None):
    """Run the zoo from parsed ``add_arguments`` options; print the table; return the exit code.

    0 when every backbone measured in this run is ok (or was skipped), 1 when any failed
    or is partial, 2 for bad arguments (unknown names, ...).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        settings = zoo_settings(
            threads=args.threads,
            runs=args.runs,
            warmup=args.warmup,
            max_seconds=args.max_seconds,
            calibration=args.calibration,
            calibration_images=args.calibration_images,
            onnx=not args.no_onnx,
        )
        report = run_zoo(
            names=args.names,
            out=args.out,
            settings=settings,
            backbone_kwargs=dict(args.kwargs),
            force=args.force,
            command=command_line(args, prefix),
            timeout=args.timeout,
            log=err,
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"{prefix}: error: {error}", file=err)
        return 2
    names = list(report["this_run"])
    # The whole file, not only this run: the table documents the zoo measured so far.
    table = markdown_table(report)
    print(table, file=out)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(table + "\n", encoding="utf-8")
    bad = [name for name in names if report["results"][name]["status"] != "ok"]
    print(f"\nwrote {args.out} ({len(names)} backbone(s); {sum(v == 'skipped' for v in report['this_run'].values())} "
          f"skipped as already measured)", file=err)
    if bad:
        print(f"{len(bad)} of {len(names)} backbone(s) not fully measured: {', '.join(bad)}", file=err)
        return 1
    return 0


def _child_main(spec_path, out_path):
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    try:
        result = measure_backbone(spec["name"], spec["settings"], spec["backbone_kwargs"])
    except Exception as error:  # measure_backbone records its own failures; this is a bug guard
        result = _failed(spec["name"], spec["settings"], spec["backbone_kwargs"], _describe(error))
        result["traceback"] = traceback.format_exc()[-4000:]
    Path(out_path).write_text(json.dumps(result, default=str), encoding="utf-8")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m kerasface.benchmark.zoo_benchmark", description=__doc__.split("\n\n")[0]
    )
    add_arguments(parser)
    parser.add_argument("--child-spec", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_spec:
        return _child_main(args.child_spec, args.child_out)
    return run_from_args(args, prefix="python -m kerasface.benchmark.zoo_benchmark")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
