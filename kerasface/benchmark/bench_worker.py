"""A child Python process that holds one loaded face model and times ``embed()`` on request.

Thread counts of TensorFlow (Keras, SavedModel) can only be set before TensorFlow runs its
first op, and a process that already ran one model would colour the next one's numbers
(warm caches, allocator state, a thread pool with another size). So every (model, threads)
pair is measured in a fresh process: :class:`BenchWorker` starts it, the child sets
``tf.config.threading`` intra-op = ``threads`` and inter-op = 1 (at most ``threads`` threads
compute, like LiteRT's and ONNX Runtime's ``num_threads``) and ``OMP_NUM_THREADS``, loads the
model once, then answers one request per line: "time embed() on a batch of B faces". A
worker stays alive between requests, so a benchmark can interleave rounds over several
models (A B C ... A B C ...) without paying the model load again.

What is timed is what a user calls: ``kerasface.infer.FaceEmbedder(...).embed(uint8 faces)``,
preprocessing (normalisation, channel order, layout) included. Two extra engines time a
``.keras`` model directly: ``keras_call`` (``model(x, training=False)``) and
``keras_predict_on_batch`` (``model.predict_on_batch(x)``), both on
``normalize_numpy(uint8 faces)`` so they also include the preprocessing; and
``litert_no_xnnpack`` times a kerasface ``.tflite`` file on LiteRT's builtin kernels without
its default XNNPACK delegate, to tell the delegate's share of a TFLite time.

Protocol (one JSON object per line; answers on stdout prefixed by ``REPLY_PREFIX`` so that
library chatter on stdout is ignored): the child answers ``{"ok": true, "info": {...}}`` once
loaded, then each request ``{"batch_size", "runs", "warmup", "max_seconds"}`` with
``{"ok": true, "result": {...}}`` or ``{"ok": false, "error": "..."}``; ``{"quit": true}`` or
end of input stops it.
"""

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPLY_PREFIX = "@@kerasface-bench "
ENGINES = ("embedder", "keras_call", "keras_predict_on_batch", "litert_no_xnnpack")
# What each engine times, for tables and JSON.
ENGINE_DESCRIPTIONS = {
    "embedder": "FaceEmbedder.embed(uint8 RGB faces), preprocessing included",
    "keras_call": "model(normalize_numpy(uint8 faces), training=False)",
    "keras_predict_on_batch": "model.predict_on_batch(normalize_numpy(uint8 faces))",
    "litert_no_xnnpack": "TFLiteRunner(xnnpack=False).embed(uint8 RGB faces): LiteRT builtin kernels, no XNNPACK",
}
DEFAULT_LOAD_TIMEOUT_S = 600


class BenchWorkerError(RuntimeError):
    """The worker process could not load the model, failed a request, or died."""


class BenchWorker:
    """One model loaded in a child process with a fixed thread count; times ``embed()`` on request.

    Args:
        model: model path (``.tflite``, ``.onnx``, SavedModel directory, ``.keras`` file or
            run directory).
        images: ``.npy`` file with uint8 (N, H, W, 3) RGB faces; a batch of B faces takes the
            first B, cycling through the N when B > N.
        threads: compute threads (LiteRT / ONNX Runtime / OpenCV ``num_threads``;
            TensorFlow intra-op threads, inter-op 1).
        engine: "embedder" (``FaceEmbedder.embed``), "keras_call" or
            "keras_predict_on_batch" (a ``.keras`` model only), "litert_no_xnnpack" (a
            kerasface ``.tflite`` file only).
        peer_options: ``FaceEmbedder`` options for third-party files (``runtime``,
            ``channel_order``, ``pixel_range``, ``layout``, ``input_size``); None values are
            left out.
        load_timeout: seconds allowed for the child to start and load the model.

    Attributes:
        info: what the child loaded: ``format``, ``runtime``, ``embedding_size``,
            ``engine``, ``timed`` (what a timed call does), ``load_seconds``.
    """

    def __init__(self, model, images, threads=1, engine="embedder", peer_options=None,
                 load_timeout=DEFAULT_LOAD_TIMEOUT_S):
        if engine not in ENGINES:
            raise ValueError(f"`engine` must be one of {ENGINES}, got {engine!r}")
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"`threads` must be an integer >= 1, got {threads!r}")
        self.model = os.fspath(model)
        self.images = os.fspath(images)
        self.threads = threads
        self.engine = engine
        self.peer_options = {key: value for key, value in (peer_options or {}).items() if value is not None}
        self.load_timeout = load_timeout
        spec = {"model": self.model, "images": self.images, "threads": threads, "engine": engine,
                "peer_options": self.peer_options}
        environment = dict(os.environ)
        environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        # Libraries built on OpenMP would otherwise start one thread per core.
        environment["OMP_NUM_THREADS"] = str(threads)
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "kerasface.benchmark.bench_worker", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
            env=environment, bufsize=1,
        )
        self._replies = queue.Queue()
        self._reader = threading.Thread(target=self._read_replies, daemon=True)
        self._reader.start()
        reply = self._reply(load_timeout, "loading the model")
        self.info = reply["info"]

    def measure(self, batch_size, runs=50, warmup=5, max_seconds=30.0, timeout=None):
        """Time ``embed`` on ``batch_size`` faces; returns the result dict (see ``latency_record``)."""
        request = {"batch_size": int(batch_size), "runs": int(runs), "warmup": int(warmup),
                   "max_seconds": float(max_seconds)}
        self._send(request)
        # Warm-up calls are not capped by max_seconds: allow for them generously.
        timeout = timeout or (max_seconds * 4 + 300)
        return self._reply(timeout, f"timing batch {batch_size}")["result"]

    def close(self):
        """Stop the child process (idempotent)."""
        if self._process.poll() is None:
            try:
                self._process.stdin.write(json.dumps({"quit": True}) + "\n")
                self._process.stdin.flush()
                self._process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        self._stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return f"BenchWorker({self.model!r}, threads={self.threads}, engine={self.engine!r})"

    def _read_replies(self):
        for line in self._process.stdout:
            if line.startswith(REPLY_PREFIX):
                self._replies.put(json.loads(line[len(REPLY_PREFIX):]))
        self._replies.put(None)  # end of output: the child exited

    def _send(self, request):
        if self._process.poll() is not None:
            raise BenchWorkerError(f"{self.model}: the benchmark process has exited ({self._stderr_tail()})")
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()

    def _reply(self, timeout, doing):
        try:
            reply = self._replies.get(timeout=timeout)
        except queue.Empty:
            self._process.kill()
            raise BenchWorkerError(
                f"{self.model}: no answer after {timeout:.0f} s while {doing} (threads={self.threads}); "
                f"process killed"
            ) from None
        if reply is None:
            code = self._process.wait()
            why = f"killed by signal {-code}" if code < 0 else f"exit {code}"
            raise BenchWorkerError(
                f"{self.model}: the benchmark process died while {doing} ({why}): {self._stderr_tail()}"
            )
        if not reply.get("ok"):
            raise BenchWorkerError(f"{self.model}: {reply.get('error')}")
        return reply

    def _stderr_tail(self, lines=3):
        try:
            self._stderr.seek(0)
            text = self._stderr.read()
        except (OSError, ValueError):
            return "no error output"
        tail = [line for line in text.strip().splitlines() if line.strip()][-lines:]
        return " | ".join(tail)[-2000:] or "no error output"


def latency_record(latency, threads):
    """A ``LatencyResult`` of one call on a batch as a per-face JSON record.

    Keys: ``threads``, ``batch_size``, ``runs``, ``median_ms`` / ``p90_ms`` (per call),
    ``per_face_median_ms`` / ``per_face_p90_ms`` (per call divided by the batch size) and
    ``faces_per_second`` (batch size / median call time).
    """
    batch = latency.batch_size
    return {
        "threads": int(threads),
        "batch_size": int(batch),
        "runs": int(latency.runs),
        "median_ms": latency.median_ms,
        "p90_ms": latency.p90_ms,
        "per_face_median_ms": latency.median_ms / batch,
        "per_face_p90_ms": latency.p90_ms / batch,
        "faces_per_second": 1000.0 * batch / latency.median_ms,
    }


def time_embed(embed, images, threads, batch_size, runs, warmup, max_seconds):
    """``latency_record`` of ``embed`` on ``batch_size`` faces (the first ones, cycling through ``images``)."""
    from kerasface.benchmark.latency import measure_latency

    batch = images[np.arange(batch_size) % len(images)]
    latency = measure_latency(embed, batch, warmup=warmup, runs=runs, max_seconds=max_seconds)
    return latency_record(latency, threads)


class InProcessWorker:
    """:class:`BenchWorker`'s interface without the child process: loads and times in this process.

    Starts in a fraction of the time, but TensorFlow's thread pools keep whatever size they
    already have (Keras and SavedModel ignore ``threads``; LiteRT, ONNX Runtime and OpenCV
    honour it), and the model shares the process with whatever ran before.

    Args:
        as :class:`BenchWorker` (``load_timeout`` is ignored).
    """

    def __init__(self, model, images, threads=1, engine="embedder", peer_options=None, load_timeout=None):
        if engine not in ENGINES:
            raise ValueError(f"`engine` must be one of {ENGINES}, got {engine!r}")
        self.model = os.fspath(model)
        self.threads = threads
        self.engine = engine
        self._images = np.load(images)
        began = time.perf_counter()
        try:
            self._embed, self.info = open_timed_function(model, threads, engine, peer_options)
        except Exception as error:  # noqa: BLE001 - the same message as from a child process
            raise BenchWorkerError(f"{self.model}: cannot load the model: {type(error).__name__}: {error}") from error
        self.info.update(engine=engine, timed=ENGINE_DESCRIPTIONS[engine], threads=threads,
                         load_seconds=time.perf_counter() - began)

    def measure(self, batch_size, runs=50, warmup=5, max_seconds=30.0, timeout=None):
        """As :meth:`BenchWorker.measure`."""
        try:
            return time_embed(self._embed, self._images, self.threads, batch_size, runs, warmup, max_seconds)
        except Exception as error:  # noqa: BLE001
            raise BenchWorkerError(f"{self.model}: batch {batch_size}: {type(error).__name__}: {error}") from error

    def close(self):
        self._embed = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def limit_tensorflow_threads(threads):
    """intra-op = ``threads``, inter-op = 1; must run before TensorFlow executes anything."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def open_timed_function(model, threads, engine="embedder", peer_options=None):
    """``(embed, info)``: ``embed(uint8 faces) -> embeddings`` as the engine runs it, and what was loaded."""
    peer_options = {key: value for key, value in (peer_options or {}).items() if value is not None}
    if engine == "embedder":
        from kerasface.infer import FaceEmbedder

        embedder = FaceEmbedder(model, num_threads=threads, **peer_options)
        info = {"format": embedder.format, "runtime": embedder.runtime,
                "embedding_size": embedder.embedding_size, "describe": embedder.describe()}
        return (lambda images: embedder.embed(images, batch_size=len(images))), info
    if peer_options:
        raise ValueError(f"engine {engine!r} times a kerasface model, which takes no peer options "
                         f"(got {sorted(peer_options)})")
    if engine == "litert_no_xnnpack":
        from kerasface.export.runtimes import TFLiteRunner

        runner = TFLiteRunner(model, num_threads=threads, xnnpack=False)
        info = {"format": "tflite", "runtime": "litert (no XNNPACK)", "embedding_size": runner.embedding_size}
        return (lambda images: runner.embed(images, batch_size=len(images))), info
    import keras

    from kerasface.data.preprocessing import normalize_numpy
    from kerasface.export.runtimes import l2_normalize
    from kerasface.models import load_embedding_model

    network = load_embedding_model(model)
    # Normalised again like every runner's output (a no-op for a kerasface embedding model).
    if engine == "keras_call":
        def embed(images):
            return l2_normalize(keras.ops.convert_to_numpy(network(normalize_numpy(images), training=False)))
    else:
        def embed(images):
            return l2_normalize(network.predict_on_batch(normalize_numpy(images)))
    info = {"format": "keras", "runtime": f"keras ({keras.backend.backend()})",
            "embedding_size": int(network.output_shape[-1])}
    return embed, info


def _child(spec):
    def reply(message):
        sys.stdout.write(REPLY_PREFIX + json.dumps(message) + "\n")
        sys.stdout.flush()

    began = time.perf_counter()
    try:
        limit_tensorflow_threads(spec["threads"])
        images = np.load(spec["images"])
        embed, info = open_timed_function(spec["model"], spec["threads"], spec["engine"], spec["peer_options"])
    except Exception as error:  # noqa: BLE001 - reported to the parent, which raises it
        reply({"ok": False, "error": f"cannot load the model: {type(error).__name__}: {error}"})
        return 1
    info.update(engine=spec["engine"], timed=ENGINE_DESCRIPTIONS[spec["engine"]], threads=spec["threads"],
                load_seconds=time.perf_counter() - began)
    reply({"ok": True, "info": info})
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if request.get("quit"):
            break
        try:
            record = time_embed(embed, images, spec["threads"], request["batch_size"], request["runs"],
                                request["warmup"], request["max_seconds"])
            reply({"ok": True, "result": record})
        except Exception as error:  # noqa: BLE001 - one failed request does not end the worker
            reply({"ok": False, "error": f"batch {request.get('batch_size')}: {type(error).__name__}: {error}"})
    return 0


if __name__ == "__main__":
    sys.exit(_child(json.loads(sys.argv[1])))
