"""Pick the tf.distribute strategy a training run uses."""

import json
import os

import tensorflow as tf

STRATEGIES = ("auto", "mirrored", "multiworker", "onedevice")


def make_strategy(name="auto"):
    """``auto``: MirroredStrategy over all GPUs when there are 2+, else the default strategy.

    ``mirrored``: MirroredStrategy over every GPU, or over every logical CPU when there is
    no GPU (useful to test multi-replica behaviour on a CPU split into logical devices).
    ``multiworker``: MultiWorkerMirroredStrategy over the workers ``TF_CONFIG`` lists (each
    worker's GPUs, or its CPU), all-reducing with collectives. It must be created before
    TensorFlow runs any op in the process, which :func:`kerasface.training.train` does.
    ``onedevice``: the default (single-device) strategy.
    """
    if name not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {STRATEGIES}, got {name!r}")
    if name == "multiworker":
        cluster = worker_cluster()
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:
            raise RuntimeError(
                f"MultiWorkerMirroredStrategy for worker {cluster['index']} of {cluster['num_workers']} could not "
                f"start ({error}); it must be created before TensorFlow runs its first op"
            ) from error
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def worker_cluster(environ=None):
    """This process's place in a multi-worker run, from ``TF_CONFIG``.

    Returns ``{"index": i, "num_workers": n, "is_chief": bool}``; worker 0 is the chief
    unless the cluster names a ``chief`` task. Without ``TF_CONFIG`` it is worker 0 of 1.

    Raises:
        ValueError: ``TF_CONFIG`` is not JSON, lacks ``cluster``/``task``, or names a task
            the cluster does not have.
    """
    environ = os.environ if environ is None else environ
    text = environ.get("TF_CONFIG")
    if not text:
        return {"index": 0, "num_workers": 1, "is_chief": True}
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        kind, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"TF_CONFIG must be JSON with 'cluster' and 'task': {{'type', 'index'}}, got {text!r} ({error})"
        ) from None
    if kind not in cluster or not 0 <= index < len(cluster[kind]):
        raise ValueError(f"TF_CONFIG task {kind}:{index} is not in its cluster {cluster}")
    num_workers = sum(len(cluster.get(k, [])) for k in ("chief", "worker"))
    has_chief = bool(cluster.get("chief"))
    is_chief = kind == "chief" or (kind == "worker" and index == 0 and not has_chief)
    # With a chief task, workers are numbered after it.
    global_index = index + (1 if has_chief and kind == "worker" else 0)
    return {"index": global_index, "num_workers": num_workers, "is_chief": is_chief}
