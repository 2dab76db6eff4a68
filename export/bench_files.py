#!/usr/bin/env python3
"""Time exported face models where they will run: LiteRT and onnxruntime only, no TensorFlow.

Usage:
    python bench_files.py model_fp32.tflite model_int8.tflite model.onnx [--threads 1,4]
        [--rounds 5] [--runs 30] [--warmup 5] [--batch 1] [--no-xnnpack] [--json out.json]

Copy it next to the files on the phone-class board or edge box and run it there. Every file
gets its own interpreter/session, loaded once; the files are timed in interleaved rounds
(A B C, then B C A, ...) so that a burst of load on a shared machine hits them all alike.
A round's figure is the median of ``--runs`` timed calls after ``--warmup`` untimed ones;
the printed ms/face is the median over rounds, and ``x first`` the per-round ratio to the
first file, medianed. The input is random pixels in the shape and dtype the file declares
(a free batch dimension becomes ``--batch``), which is what latency depends on; accuracy is
`kerasface export --verify-pairs`'s business. Needs numpy and ai-edge-litert (.tflite) and/or
onnxruntime (.onnx).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path


def parse_threads(text):
    try:
        threads = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--threads takes positive ints like 1,4; got {text!r}") from None
    if not threads or min(threads) < 1:
        raise argparse.ArgumentTypeError(f"--threads takes positive ints like 1,4; got {text!r}")
    return threads


class TFLiteFile:
    """One .tflite file in a LiteRT interpreter, input resized to ``batch``."""

    def __init__(self, path, threads, batch, xnnpack, rng):
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        kwargs = {"num_threads": threads}
        if not xnnpack:
            kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self.interpreter = Interpreter(model_path=str(path), **kwargs)
        except (ValueError, RuntimeError) as error:
            raise SystemExit(f"error: {path}: not a TFLite file LiteRT can load ({error})") from None
        detail = self.interpreter.get_input_details()[0]
        shape = [batch if size < 0 else int(size) for size in detail["shape_signature"]]
        self.interpreter.resize_tensor_input(detail["index"], shape)
        self.interpreter.allocate_tensors()
        self.index = detail["index"]
        self.batch = shape[0]
        self.input = _random_input(np, rng, shape, np.dtype(detail["dtype"]))
        self.engine = f"LiteRT{' + XNNPACK' if xnnpack else ' builtin kernels'}"

    def __call__(self):
        self.interpreter.set_tensor(self.index, self.input)
        self.interpreter.invoke()


class OnnxFile:
    """One .onnx file in an onnxruntime CPU session."""

    def __init__(self, path, threads, batch, rng):
        import numpy as np
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types
            raise SystemExit(f"error: {path}: not an ONNX file onnxruntime can run ({error})") from None
        source = self.session.get_inputs()[0]
        shape = [size if isinstance(size, int) else batch for size in source.shape]
        dtype = np.uint8 if "uint8" in source.type else np.float32
        self.feed = {source.name: _random_input(np, rng, shape, dtype)}
        self.batch = shape[0]
        self.engine = f"onnxruntime {onnxruntime.__version__} CPU"

    def __call__(self):
        self.session.run(None, self.feed)


def _random_input(np, rng, shape, dtype):
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    # Normalised-pixel scale; a 0-255 model sees dark images, which time the same.
    return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)


def open_file(path, threads, batch, xnnpack, rng):
    if path.suffix == ".tflite":
        return TFLiteFile(path, threads, batch, xnnpack, rng)
    if path.suffix == ".onnx":
        return OnnxFile(path, threads, batch, rng)
    raise SystemExit(f"error: {path}: expected a .tflite or .onnx file")


def time_round(run, runs, warmup):
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def main(argv=None):
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help=".tflite and .onnx files; the first is the ratio reference")
    parser.add_argument("--threads", type=parse_threads, default=[1], help="thread counts, e.g. 1,4 (default: 1)")
    parser.add_argument("--batch", type=int, default=1, help="batch for files with a free batch dimension (default: 1)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default: 5)")
    parser.add_argument("--runs", type=int, default=30, help="timed calls per round (default: 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls before each round (default: 5)")
    parser.add_argument("--no-xnnpack", action="store_true", help="LiteRT builtin kernels instead of XNNPACK")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    for name in ("batch", "rounds", "runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    missing = [str(path) for path in args.files if not path.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")

    rng = np.random.default_rng(0)
    results = []
    for threads in args.threads:
        models = [open_file(path, threads, args.batch, not args.no_xnnpack, rng) for path in args.files]
        per_round = [[] for _ in models]
        for round_index in range(args.rounds):
            order = [(round_index + k) % len(models) for k in range(len(models))]
            for k in order:
                per_round[k].append(time_round(models[k], args.runs, args.warmup) / models[k].batch)
        for path, model, times in zip(args.files, models, per_round):
            ratios = [t / ref for t, ref in zip(times, per_round[0])]
            results.append({
                "file": str(path), "engine": model.engine, "threads": threads, "batch": model.batch,
                "ms_per_face": statistics.median(times), "rounds_ms": times,
                "ratio_to_first": statistics.median(ratios),
                "faces_per_second": 1000.0 / statistics.median(times),
            })
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "python": sys.version.split()[0]}
    print(f"{'file':<48} {'engine':<28} {'thr':>3} {'ms/face':>9} {'faces/s':>8} {'x first':>8}")
    for row in results:
        print(f"{Path(row['file']).name:<48} {row['engine']:<28} {row['threads']:>3} "
              f"{row['ms_per_face']:>9.2f} {row['faces_per_second']:>8.1f} {row['ratio_to_first']:>8.2f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "settings": vars(args) | {
            "files": [str(p) for p in args.files], "json": str(args.json)}, "results": results},
            indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
