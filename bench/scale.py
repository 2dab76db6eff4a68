"""Classifier memory and step time vs class count: dense head, Partial FC (lazy and Keras SGD).

    python bench/scale.py --out docs/scale.json                       # 10k..2M x 512, batch 128
    python bench/scale.py --classes 1000 --methods dense pfc --runs 2  # smoke
    python bench/scale.py --largest --methods pfc --classes 2000000 4000000 6000000

``--table`` prints the table of ``--out`` without running anything. Each (method, class
count) runs in a FRESH Python process (so each peak belongs to one
configuration): build an ArcFace head over ``--dim``-d embeddings, an SGD optimizer with
momentum 0.9 and weight decay 5e-4, then ``--warmup`` + ``--runs`` full training steps
(forward, cross-entropy, backward, optimizer update) on a fixed random batch. Methods:

- ``dense``: ``ArcFaceHead`` (a (D, C) kernel) + Keras SGD;
- ``pfc``: ``PartialFCHead(sample_rate=--rate)`` + ``LazySGD`` (only the sampled rows and
  their momentum are read and written);
- ``pfc_keras_sgd``: the same head + Keras SGD, which densifies the row-sparse gradient and
  moves every row with its momentum and decay each step, as torch's SGD does in
  insightface's Partial FC v2.
- ``shardedN``: ``ShardedHead`` under a MirroredStrategy over N logical CPUs of this
  machine (each replica holds C/N centres and their momentum, gets batch/N embeddings and
  all-gathers the rest); ``shardedN_pfc`` adds Partial FC at ``--rate`` inside each shard.
  The replicas share this process's memory and cores, so the peak RSS is that of all N
  replicas together and the step time is not a multi-device speed; the per-replica
  classifier state is what one accelerator would hold.
- ``model_dense`` / ``model_pfc``: the whole training step of a ``FaceRecognizer``
  (half-width MobileFaceNet on 112x112 uint8 images, ``--dim``-d embeddings, ArcFace, dense
  with Keras SGD or Partial FC with ``LazySGD``) through ``model.train_on_batch``: images/s
  against the class count, the shape insightface publishes for Partial FC.

Reported per run: median wall and CPU time per step, peak resident memory of the process
(``ru_maxrss``) and what the steps add over the built state (the high-water mark is reset
after building where Linux allows), the classifier state in bytes (centres + momentum,
counted from the variables), and the loss. A process that exceeds ``--memory-limit-gib``
of resident memory is killed by this script and reported as ``out_of_memory`` (the machine
has 24 GiB; the default limit keeps the rest of it usable). Results are appended to
``--out`` as they finish, and a rerun skips configurations already there (resumable).
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from head_scale import _current_rss_bytes, _max_rss_bytes, _reset_peak_rss  # noqa: E402

METHODS = ("dense", "pfc", "pfc_keras_sgd", "sharded2", "sharded4", "sharded2_pfc", "sharded4_pfc",
           "model_dense", "model_pfc")
GIB = 1024**3


def timed_steps(run_step, batch, runs, warmup, memory, **extra):
    """Run ``warmup + runs`` steps of ``run_step() -> (loss, finite)``; the result dict.

    ``memory`` is ``(baseline, build_peak, peak_reset, build_s)`` from after the build.
    """
    import numpy as np

    baseline, build_peak, peak_reset, build_s = memory
    times, cpu_times, losses = [], [], []
    for i in range(warmup + runs):
        t0, cpu0 = time.perf_counter(), time.process_time()
        loss, finite = run_step()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        if not (np.isfinite(loss) and finite):
            raise FloatingPointError(f"step {i}: loss {loss} or the embedding gradient is not finite")
        losses.append(loss)
        if i >= warmup:
            times.append(elapsed)
            cpu_times.append(cpu)
    peak = _max_rss_bytes()
    return {
        "status": "ok",
        "step_time_median_s": statistics.median(times),
        "step_times_s": times,
        "step_cpu_median_s": statistics.median(cpu_times),
        "images_per_second": batch / statistics.median(times),
        "peak_rss_bytes": peak,
        "baseline_rss_bytes": baseline,
        "step_rss_bytes": peak - baseline,
        "build_peak_rss_bytes": build_peak,
        "peak_reset": bool(peak_reset),
        "losses": losses,
        "build_s": build_s,
        "load_average_1min": round(os.getloadavg()[0], 2),
        **extra,
    }


def after_build(start):
    """``(baseline, build_peak, peak_reset, build_s)``, resetting the peak for the steps."""
    build_s = time.perf_counter() - start
    build_peak = _max_rss_bytes()
    peak_reset = _reset_peak_rss()
    return _current_rss_bytes(), build_peak, peak_reset, build_s


def measure(method, classes, dim, batch, runs, warmup, rate):
    """One configuration in this process: a result dict."""
    import keras
    import numpy as np
    import tensorflow as tf  # GradientTape/tf.function: Keras 3 has no backend-neutral gradient API

    from kerasface import heads
    from kerasface.training import LazySGD

    if method.startswith("sharded"):
        return measure_sharded(method, classes, dim, batch, runs, warmup, rate)
    if method.startswith("model_"):
        return measure_model(method, classes, dim, batch, runs, warmup, rate)
    start = time.perf_counter()
    if method == "dense":
        head = heads.get("arcface", num_classes=classes)
    else:
        head = heads.PartialFCHead("arcface", num_classes=classes, sample_rate=rate)
    rng = np.random.default_rng(0)
    embeddings = tf.constant(rng.standard_normal((batch, dim), dtype=np.float32))
    labels = tf.constant(rng.integers(0, classes, size=(batch,), dtype=np.int32))
    head.build([(batch, dim), (batch,)])
    optimizer_class = LazySGD if method == "pfc" else keras.optimizers.SGD
    optimizer = optimizer_class(learning_rate=0.1, momentum=0.9, weight_decay=5e-4)
    optimizer.build(head.trainable_weights)
    state_bytes = sum(int(np.prod(v.shape)) * 4 for v in head.trainable_weights + list(optimizer.variables)
                      if v.dtype == "float32")
    memory = after_build(start)
    target_first = getattr(head, "target_first", False)

    @tf.function
    def step(embeddings, labels):
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            logits = head([embeddings, labels], training=True)
            targets = tf.zeros_like(labels) if target_first else labels
            loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True))
        gradients = tape.gradient(loss, [embeddings] + head.trainable_weights)
        optimizer.apply(gradients[1:], head.trainable_weights)
        return loss, gradients[0]

    def run_step():
        loss, embedding_gradient = step(embeddings, labels)
        return float(loss), bool(np.isfinite(embedding_gradient.numpy()).all())

    return timed_steps(
        run_step, batch, runs, warmup, memory, classifier_state_bytes=state_bytes,
        sampled_centres=getattr(head, "num_sampled", lambda b: classes)(batch),
    )


def measure_model(method, classes, dim, batch, runs, warmup, rate):
    """A whole FaceRecognizer training step (backbone + head + optimizer): a result dict."""
    import keras
    import numpy as np

    from kerasface import backbones, heads
    from kerasface.models import FaceRecognizer
    from kerasface.training import LazySGD

    start = time.perf_counter()
    head = heads.get("arcface", num_classes=classes)
    optimizer = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, weight_decay=5e-4)
    if method == "model_pfc":
        head = heads.PartialFCHead(head, sample_rate=rate)
        optimizer = LazySGD(learning_rate=0.1, momentum=0.9, weight_decay=5e-4)
    model = FaceRecognizer(backbones.get("mobilefacenet", embedding_size=dim, width_multiplier=0.5), head)
    model.build((None, 112, 112, 3))
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(batch, 112, 112, 3), dtype=np.uint8)
    labels = rng.integers(0, classes, size=(batch,), dtype=np.int32)
    targets = np.zeros_like(labels) if getattr(head, "target_first", False) else labels
    memory = after_build(start)
    return timed_steps(
        lambda: (float(model.train_on_batch((images, labels), targets)), True), batch, runs, warmup, memory,
        classifier_state_bytes=2 * classes * dim * 4,
        sampled_centres=head.num_sampled(batch) if method == "model_pfc" else classes,
    )


def measure_sharded(method, classes, dim, batch, runs, warmup, rate):
    """``ShardedHead`` over N logical CPUs, stepped with strategy.run: a result dict."""
    import numpy as np
    import tensorflow as tf

    replicas = int(method[len("sharded")])
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    import keras

    from kerasface import heads

    start = time.perf_counter()
    strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    per_replica = batch // replicas
    with strategy.scope():
        head = heads.ShardedHead("arcface", num_classes=classes, sample_rate=rate if method.endswith("_pfc") else 1.0)
        head.build([(per_replica, dim), (per_replica,)])
    rng = np.random.default_rng(0)
    embeddings = tf.constant(rng.standard_normal((batch, dim), dtype=np.float32))
    labels = tf.constant(rng.integers(0, classes, size=(batch,), dtype=np.int32))

    def split(values):
        return strategy.experimental_distribute_values_from_function(
            lambda context: values[context.replica_id_in_sync_group * per_replica:][:per_replica]
        )

    x, y = split(embeddings), split(labels)
    shard_bytes = 2 * head.shard_size * dim * 4  # centres + momentum of one replica
    memory = after_build(start)

    @tf.function
    def step(x, y):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                tape.watch([x] + head.shard_variables())
                pair = head([x, y], training=True)
                loss = tf.reduce_sum(
                    keras.losses.sparse_categorical_crossentropy(tf.zeros_like(y), pair, from_logits=True)
                ) / batch
            gradients = tape.gradient(loss, [x] + head.shard_variables())
            head.apply_shard_gradient(gradients[1], 0.1, momentum=0.9, weight_decay=5e-4)
            return loss, gradients[0]

        loss, gradient = strategy.run(replica_step, args=(x, y))
        return strategy.reduce("SUM", loss, axis=None), gradient

    def run_step():
        loss, gradient = step(x, y)
        return float(loss), all(np.isfinite(g.numpy()).all() for g in strategy.experimental_local_results(gradient))

    sampled = classes
    if head.sample_rate < 1:
        sampled = replicas * min(head.shard_size, max(math.ceil(head.shard_size * head.sample_rate), batch))
    return timed_steps(
        run_step, batch, runs, warmup, memory, classifier_state_bytes=shard_bytes * replicas,
        per_replica_state_bytes=shard_bytes, replicas=replicas, sampled_centres=sampled,
    )


def run_child(config, args):
    """Measure ``config`` in a fresh process, killing it past the memory limit."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "result.json")
        command = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(config), "--child-out", out]
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        limit = args.memory_limit_gib * GIB
        highest, killed = 0, False
        while process.poll() is None:
            rss = _rss_of(process.pid)
            highest = max(highest, rss)
            if rss > limit:
                process.kill()
                killed = True
                break
            if time.perf_counter() - started > args.timeout:
                process.kill()
                break
            time.sleep(0.2)
        _, stderr = process.communicate()
        wall = time.perf_counter() - started
        if killed:
            return {"status": "out_of_memory", "reason": f"resident memory passed {args.memory_limit_gib} GiB",
                    "highest_rss_bytes": highest, "wall_s": wall}
        if os.path.exists(out):
            with open(out, encoding="utf-8") as f:
                result = json.load(f)
            result["wall_s"] = wall
            return result
        if wall > args.timeout:
            return {"status": "failed", "reason": f"timed out after {args.timeout} s", "highest_rss_bytes": highest,
                    "wall_s": wall}
        if process.returncode == -9:
            # SIGKILL from outside this script: the kernel's OOM killer, between two RSS samples.
            return {"status": "out_of_memory", "reason": "killed (SIGKILL) by the system, out of memory",
                    "highest_rss_bytes": highest, "wall_s": wall}
        reason = f"exit code {process.returncode}: " + (stderr or "")[-1500:]
        return {"status": "failed", "reason": reason, "highest_rss_bytes": highest, "wall_s": wall}


def _rss_of(pid):
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def format_table(results):
    lines = [
        "| method | classes | centres / step | step (s, median) | images/s | classifier state (GiB) | per replica (GiB) | peak RSS (GiB) | step adds (GiB) | status |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        ok = r.get("status") == "ok"

        def gib(key):
            return f"{r[key] / GIB:.2f}" if ok and r.get(key) is not None else "-"

        lines.append(
            f"| {r['method']} | {r['classes']:,} | {r.get('sampled_centres', '-') if ok else '-'} | "
            f"{r['step_time_median_s']:.3f} | {r['images_per_second']:.0f} | " if ok else
            f"| {r['method']} | {r['classes']:,} | - | - | - | "
        )
        per_replica = gib("per_replica_state_bytes") if r.get("per_replica_state_bytes") else gib("classifier_state_bytes")
        lines[-1] += (f"{gib('classifier_state_bytes')} | {per_replica} | {gib('peak_rss_bytes')} | "
                      f"{gib('step_rss_bytes')} | {r['status']} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--classes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000, 2_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rate", type=float, default=0.1, help="Partial FC sample rate")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--memory-limit-gib", type=float, default=21.0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--largest", action="store_true",
                        help="stop a method at its first class count that runs out of memory")
    parser.add_argument("--out", help="JSON file: results are appended and finished ones skipped")
    parser.add_argument("--table", action="store_true", help="print the table of --out and run nothing")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        config = json.loads(args.child)
        try:
            result = measure(**{k: config[k] for k in ("method", "classes", "dim", "batch", "runs", "warmup", "rate")})
        except Exception as e:  # reported with its reason; the other configurations still run
            result = {"status": "failed", "reason": f"{type(e).__name__}: {e}"[:2000]}
        with open(args.child_out, "w", encoding="utf-8") as f:
            json.dump(result, f)
        return 0

    results = []
    if args.out and os.path.exists(args.out):
        with open(args.out, encoding="utf-8") as f:
            results = json.load(f)["results"]
    if args.table:
        print(format_table(results))
        return 0
    command = "python bench/scale.py " + " ".join(sys.argv[1:] if argv is None else argv)
    for method in args.methods:
        for classes in sorted(args.classes):
            config = {"method": method, "classes": classes, "dim": args.dim, "batch": args.batch,
                      "runs": args.runs, "warmup": args.warmup,
                      "rate": args.rate if "pfc" in method else None}
            done = [r for r in results if all(r.get(k) == v for k, v in config.items())]
            if done:
                result = done[0]
            else:
                print(f"{method} {classes:,} classes ...", flush=True)
                result = {**config, **run_child(config, args), "command": command}
                results.append(result)
                if args.out:
                    with open(args.out, "w", encoding="utf-8") as f:
                        json.dump({"results": results}, f, indent=1)
            print(f"  {method} {classes:,}: {result['status']} "
                  f"{result.get('step_time_median_s', float('nan')):.3f} s/step", flush=True)
            if args.largest and result["status"] == "out_of_memory":
                break
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
