"""Time and peak memory of one margin-head training step at a million classes, per head.

    python bench/head_scale.py --out head_scale.json                  # every head, 1M x 512, batch 128
    python bench/head_scale.py --names arcface --classes 1000 --runs 3  # smoke

For each head, in a FRESH Python process (so each peak belongs to one head alone): build the
head's (dim, classes) kernel, then run ``--warmup`` + ``--runs`` steps of forward, softmax
cross-entropy, backward (gradients for the kernel and the embeddings) and, with ``--sgd``,
a plain SGD update of the kernel. Reports the median step time of the timed runs, the median
CPU time per step (all threads; wall time on a loaded machine mostly measures the load) and
the peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` in the child):

- ``baseline_rss_bytes``: resident memory after building the kernel (runtime + kernel);
- ``peak_rss_bytes``: the high-water mark during the steps (absolute);
- ``step_rss_bytes``: ``peak_rss_bytes - baseline_rss_bytes``, what the step itself adds;
- ``build_peak_rss_bytes``: the high-water mark while building (initialising a kernel can
  hold a temporary copy), kept apart because the peak is reset after building (Linux
  ``/proc/self/clear_refs``; when that is refused, ``peak_rss_bytes`` includes the build
  and ``peak_reset`` is false in the JSON).

Heads that need constructor arguments beyond ``num_classes`` get them from
``DEFAULT_HEAD_KWARGS`` below or ``--head-kwargs NAME=JSON``; a head that still fails to
construct or step (or whose process dies, e.g. out of memory) is reported with the reason.
Prints a Markdown table and writes JSON to ``--out``.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerasface.cli.argument_types import integer_at_least, name_json_pair  # noqa: E402 - after the log level

# name -> extra constructor kwargs (a dict, or a function of the class count returning one)
# for heads that need more than num_classes or whose defaults would skip the costly path;
# --head-kwargs NAME=JSON is merged over them. Heads are called with [embeddings, labels].
DEFAULT_HEAD_KWARGS = {
    # Two datasets splitting the classes and the paper's Crossing Dropout p = 1e-4, so the
    # (B, C) mask and the uniform draw are measured (one dataset skips the mask).
    "dataset_aware": lambda classes: {
        "dataset_num_classes": [classes // 2, classes - classes // 2],
        "crossing_dropout_p": 1e-4,
    },
}


def default_head_kwargs(name, classes):
    """``DEFAULT_HEAD_KWARGS[name]`` resolved for ``classes`` ({} when absent)."""
    kwargs = DEFAULT_HEAD_KWARGS.get(name, {})
    return dict(kwargs(classes) if callable(kwargs) else kwargs)

GIB = 1024**3
RESULT_KEYS = (
    "name",
    "status",
    "reason",
    "step_time_median_s",
    "step_times_s",
    "step_cpu_median_s",
    "load_average_1min",
    "peak_rss_bytes",
    "baseline_rss_bytes",
    "step_rss_bytes",
    "build_peak_rss_bytes",
    "peak_reset",
    "kernel_shape",
    "kernel_bytes",
    "weights_bytes",
    "build_s",
    "wall_s",
)


# ---------------------------------------------------------------- child (one head)


def _current_rss_bytes():
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmRSS line")


def _max_rss_bytes():
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak_rss():
    """Reset the high-water mark to the current RSS; False when the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return _max_rss_bytes() <= _current_rss_bytes() + 64 * 1024**2


def _nbytes(variable):
    import numpy as np

    return int(np.prod(variable.shape)) * np.dtype(variable.dtype).itemsize


def measure_head(name, classes, dim, batch, runs, warmup, sgd=False, learning_rate=0.01, jit=False, kwargs=None):
    """One head in this process: a dict with the ``RESULT_KEYS``."""
    import keras
    import numpy as np
    import tensorflow as tf  # GradientTape/tf.function: Keras 3 has no backend-neutral gradient API

    from kerasface import heads

    start = time.perf_counter()
    head = heads.get(name, num_classes=classes, **(kwargs or {}))
    rng = np.random.default_rng(0)
    embeddings = keras.ops.convert_to_tensor(rng.standard_normal((batch, dim), dtype=np.float32))
    labels = keras.ops.convert_to_tensor(rng.integers(0, classes, size=(batch,), dtype=np.int32))
    head.build([tuple(embeddings.shape), tuple(labels.shape)])
    kernel = getattr(head, "kernel", None)
    kernel_shape = None if kernel is None else [int(d) for d in kernel.shape]
    kernel_bytes = None if kernel is None else _nbytes(kernel)
    weights_bytes = sum(_nbytes(w) for w in head.weights)
    build_s = time.perf_counter() - start
    build_peak = _max_rss_bytes()
    peak_reset = _reset_peak_rss()
    baseline = _current_rss_bytes()

    optimizer = keras.optimizers.SGD(learning_rate=learning_rate) if sgd else None
    if optimizer is not None:
        optimizer.build(head.trainable_weights)

    @tf.function(jit_compile=jit)
    def step(embeddings, labels):
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            logits = head([embeddings, labels], training=True)
            loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
            loss = loss + sum(head.losses) if head.losses else loss
        variables = head.trainable_weights
        gradients = tape.gradient(loss, [embeddings] + variables)
        if optimizer is not None:
            optimizer.apply(gradients[1:], variables)
        return loss, gradients[0]

    times, cpu_times = [], []
    load_before = os.getloadavg()[0]
    for i in range(warmup + runs):
        t0, cpu0 = time.perf_counter(), time.process_time()
        loss, embedding_gradient = step(embeddings, labels)
        # Both outputs to host: the step is only done when they exist.
        loss, embedding_gradient = keras.ops.convert_to_numpy(loss), keras.ops.convert_to_numpy(embedding_gradient)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        if not (np.isfinite(loss) and np.isfinite(embedding_gradient).all()):
            raise FloatingPointError(f"step {i}: loss {loss} or the embedding gradient is not finite")
        if i >= warmup:
            times.append(elapsed)
            cpu_times.append(cpu)
    peak = _max_rss_bytes()
    return {
        "name": name,
        "status": "ok",
        "reason": "",
        "step_time_median_s": statistics.median(times),
        "step_times_s": times,
        # CPU seconds (all threads) per step: less sensitive than wall time to other load.
        "step_cpu_median_s": statistics.median(cpu_times),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "peak_rss_bytes": peak,
        "baseline_rss_bytes": baseline,
        "step_rss_bytes": peak - baseline,
        "build_peak_rss_bytes": build_peak,
        "peak_reset": bool(peak_reset),
        "kernel_shape": kernel_shape,
        "kernel_bytes": kernel_bytes,
        "weights_bytes": weights_bytes,
        "build_s": build_s,
        "wall_s": time.perf_counter() - start,
        "final_loss": float(loss),
    }


def _child_main(args):
    kwargs = json.loads(args.child_kwargs)
    try:
        result = measure_head(
            args.child, args.classes, args.dim, args.batch, args.runs, args.warmup,
            sgd=args.sgd, learning_rate=args.learning_rate, jit=args.jit, kwargs=kwargs,
        )
    except Exception as e:  # reported in the table with its reason, the other heads still run
        result = {"name": args.child, "status": "failed", "reason": f"{type(e).__name__}: {e}"[:2000]}
    with open(args.child_out, "w", encoding="utf-8") as f:
        json.dump(result, f)
    return 0


def _list_main():
    from kerasface import heads

    print(json.dumps(heads.list()))
    return 0


# ---------------------------------------------------------------- parent


def registered_heads():
    """``kerasface.heads.list()``, asked of a child so this process never loads TensorFlow."""
    finished = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--list-heads"], capture_output=True, text=True, timeout=300
    )
    if finished.returncode != 0:
        raise RuntimeError(f"listing kerasface.heads failed:\n{finished.stderr[-2000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def bench_head(name, args, kwargs):
    """Measure one head in a fresh process; a result dict (status ok / failed)."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "result.json")
        command = [
            sys.executable, os.path.abspath(__file__), "--child", name, "--child-out", out,
            "--child-kwargs", json.dumps(kwargs), "--classes", str(args.classes), "--dim", str(args.dim),
            "--batch", str(args.batch), "--runs", str(args.runs), "--warmup", str(args.warmup),
            "--learning-rate", str(args.learning_rate),
        ] + (["--sgd"] if args.sgd else []) + (["--jit"] if args.jit else [])
        start = time.perf_counter()
        try:
            finished = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            return {"name": name, "status": "failed", "reason": f"timed out after {args.timeout} s"}
        if os.path.exists(out):
            with open(out, encoding="utf-8") as f:
                result = json.load(f)
        else:
            code = finished.returncode
            if code < 0:
                why = f"killed by signal {-code}" + (" (out of memory?)" if code == -9 else "")
            else:
                why = f"exit {code}"
            tail = " | ".join(line for line in (finished.stderr or "").strip().splitlines()[-3:])
            result = {"name": name, "status": "failed", "reason": f"child process {why}; {tail}"[:2000]}
        result["process_wall_s"] = time.perf_counter() - start
    for key in RESULT_KEYS:
        result.setdefault(key, None)
    return result


def _gib(value):
    return "" if value is None else f"{value / GIB:.2f}"


def markdown_table(results):
    lines = [
        "| head | median step (s) | CPU s/step | peak RSS (GiB) | step adds (GiB) | after build (GiB) "
        "| build peak (GiB) | kernel (GiB) | status |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        median = "" if r.get("step_time_median_s") is None else f"{r['step_time_median_s']:.3f}"
        cpu = "" if r.get("step_cpu_median_s") is None else f"{r['step_cpu_median_s']:.3f}"
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}"
        lines.append(
            f"| {r['name']} | {median} | {cpu} | {_gib(r.get('peak_rss_bytes'))} | {_gib(r.get('step_rss_bytes'))} | "
            f"{_gib(r.get('baseline_rss_bytes'))} | {_gib(r.get('build_peak_rss_bytes'))} | "
            f"{_gib(r.get('kernel_bytes'))} | {status.replace('|', '/')} |"
        )
    return "\n".join(lines)


def _total_memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--names", nargs="+", metavar="NAME", help="heads to measure (default: every registered head)"
    )
    parser.add_argument("--classes", type=integer_at_least(1), default=1_000_000, help="number of classes C (default 1000000)")
    parser.add_argument("--dim", type=integer_at_least(1), default=512, help="embedding dimension D (default 512)")
    parser.add_argument("--batch", type=integer_at_least(1), default=128, help="batch size B (default 128)")
    parser.add_argument("--runs", type=integer_at_least(1), default=5, help="timed steps per head (default 5)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed steps first (tracing, allocation; default 1)"
    )
    parser.add_argument("--sgd", action="store_true", help="also apply a plain SGD update to the kernel each step")
    parser.add_argument("--learning-rate", type=float, default=0.01, help="SGD learning rate with --sgd (default 0.01)")
    parser.add_argument("--jit", action="store_true", help="compile the step with XLA (jit_compile=True)")
    parser.add_argument(
        "--head-kwargs",
        type=name_json_pair("arcface='{\"margin\": 0.4}'"),
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="extra constructor arguments for one head, e.g. arcface='{\"margin\": 0.4}' (repeatable; "
        "merged over DEFAULT_HEAD_KWARGS in this script)",
    )
    parser.add_argument("--timeout", type=integer_at_least(1), default=1800, help="seconds allowed per head (default 1800)")
    parser.add_argument("--out", help="write the results as JSON to this file")
    # internal: the per-head child process and the registry listing
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    parser.add_argument("--child-kwargs", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--list-heads", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.list_heads:
        return _list_main()
    if args.child:
        return _child_main(args)

    available = registered_heads()
    names = list(dict.fromkeys(args.names)) if args.names else available
    unknown = [n for n in names if n not in available]
    if unknown:
        parser.error(f"--names: unknown head(s) {', '.join(map(repr, unknown))}; available: {', '.join(available)}")
    overrides = dict(args.head_kwargs)
    stray = [n for n in overrides if n not in available]
    if stray:
        parser.error(f"--head-kwargs: unknown head(s) {', '.join(map(repr, stray))}; available: {', '.join(available)}")

    results = []
    for name in names:
        kwargs = {**default_head_kwargs(name, args.classes), **overrides.get(name, {})}
        print(f"{name}: C={args.classes} D={args.dim} B={args.batch} ...", file=sys.stderr, flush=True)
        result = bench_head(name, args, kwargs)
        result["kwargs"] = kwargs
        results.append(result)
        if result["status"] == "ok":
            print(
                f"{name}: {result['step_time_median_s']:.3f} s/step, peak {_gib(result['peak_rss_bytes'])} GiB",
                file=sys.stderr, flush=True,
            )
        else:
            print(f"{name}: {result['status']}: {result['reason']}", file=sys.stderr, flush=True)

    report = {
        "config": {
            "classes": args.classes, "dim": args.dim, "batch": args.batch, "runs": args.runs,
            "warmup": args.warmup, "sgd": args.sgd, "learning_rate": args.learning_rate if args.sgd else None,
            "jit": args.jit, "step": "forward + sparse softmax cross-entropy + gradients (kernel, embeddings)"
            + (" + SGD kernel update" if args.sgd else ""),
        },
        "machine": {
            "cpu_count": os.cpu_count(), "memory_bytes": _total_memory_bytes(), "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "results": results,
    }
    print(
        f"\nHead step at C={args.classes:,}, D={args.dim}, batch {args.batch}"
        f"{' + SGD' if args.sgd else ''}{' (XLA)' if args.jit else ''}: median of {args.runs} run(s) "
        f"after {args.warmup} warm-up, each head in a fresh process, {os.cpu_count()} CPUs\n"
    )
    print(markdown_table(results))
    if args.out:
        if os.path.dirname(args.out):
            os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    failed = [r["name"] for r in results if r["status"] != "ok"]
    if failed:
        print(f"\n{len(failed)} of {len(results)} head(s) not measured: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
