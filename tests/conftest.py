import itertools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

# Two logical CPUs (KERASFACE_TEST_CPUS to change it) so MirroredStrategy tests run on a
# CPU-only machine. This has to happen before TensorFlow initialises its devices, hence at
# conftest import time.
_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * int(os.environ.get("KERASFACE_TEST_CPUS", "2"))
    )
except RuntimeError:
    pass

# Every MirroredStrategy built in one process starts its collective keys at the same base, so a
# second strategy's all-reduce collides with the first one's ("Shape mismatch in the collective
# instance"). ``_collective_key_base`` is TensorFlow's own knob for this in its tests.
_strategy_keys = itertools.count(1)
_mirrored_init = tf.distribute.MirroredStrategy.__init__


def _mirrored_init_with_own_keys(self, *args, **kwargs):
    self._collective_key_base = 1000 * next(_strategy_keys)
    _mirrored_init(self, *args, **kwargs)


tf.distribute.MirroredStrategy.__init__ = _mirrored_init_with_own_keys
