"""Pick the tf.distribute strategy a training run uses."""

import tensorflow as tf

STRATEGIES = ("auto", "mirrored", "onedevice")


def make_strategy(name="auto"):
    """``auto``: MirroredStrategy over all GPUs when there are 2+, else the default strategy.

    ``mirrored``: MirroredStrategy over every GPU, or over every logical CPU when there is
    no GPU (useful to test multi-replica behaviour on a CPU split into logical devices).
    ``onedevice``: the default (single-device) strategy.
    """
    if name not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {STRATEGIES}, got {name!r}")
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()
