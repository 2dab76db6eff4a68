"""Activation fake quantisation with ranges learned by moving average (quantisation-aware training)."""

import keras
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="kerasface")
class FakeQuant(keras.layers.Layer):
    """Per-tensor asymmetric fake quantisation of activations, range tracked by EMA, frozen in inference.

    Simulates what a full-integer TFLite model does to a tensor: clamp to ``[min, max]``
    and round to one of ``2**num_bits`` levels, with the zero point nudged so 0.0 is
    exact (``tf.quantization.fake_quant_with_min_max_vars``, whose op the TFLite
    converter turns into the tensor's int8 scale and zero point). Gradients are
    straight-through inside the range and zero outside.

    In training mode the range follows the batch: ``min <- decay * min + (1 - decay) *
    min(batch, 0)`` (likewise ``max``), initialised from the first batch; the range
    always contains 0 because TFLite needs 0.0 representable. Under ``MirroredStrategy``
    the batch extremes are taken over all replicas, so replicas keep equal ranges. In
    inference (and before any training batch) the stored range is used as is.

    Args:
        num_bits: bits per value (8 for int8).
        ema_decay: decay of the range's moving average, in [0, 1); 0 keeps the last batch's.
        narrow_range: quantise to ``[1, 2**num_bits - 1]`` instead of ``[0, 2**num_bits - 1]``.
        **kwargs: ``keras.layers.Layer`` arguments.

    Call arguments:
        inputs: float tensor of any shape.
        training: update the range from this batch first.

    Returns:
        the fake-quantised tensor, same shape and dtype as ``inputs``.
    """

    def __init__(self, num_bits=8, ema_decay=0.99, narrow_range=False, **kwargs):
        super().__init__(**kwargs)
        if not 2 <= int(num_bits) <= 16:
            raise ValueError(f"`num_bits` must be in [2, 16], got {num_bits}")
        if not 0.0 <= float(ema_decay) < 1.0:
            raise ValueError(f"`ema_decay` must be in [0, 1), got {ema_decay}")
        self.num_bits = int(num_bits)
        self.ema_decay = float(ema_decay)
        self.narrow_range = bool(narrow_range)
        self.supports_masking = True

    def build(self, input_shape):
        # float32 whatever the compute dtype: the converter reads them as float32 ranges.
        options = {"shape": (), "initializer": "zeros", "trainable": False, "dtype": "float32", "autocast": False}
        self.range_min = self.add_weight(name="range_min", aggregation="mean", **options)
        self.range_max = self.add_weight(name="range_max", aggregation="mean", **options)
        self.initialized = self.add_weight(name="initialized", aggregation="mean", **options)

    def call(self, inputs, training=None):
        range_min, range_max = self.range_min, self.range_max
        if training:
            range_min, range_max = self._update_range(inputs)
        return keras.quantizers.fake_quant_with_min_max_vars(
            inputs, range_min, range_max, num_bits=self.num_bits, narrow_range=self.narrow_range
        )

    def _update_range(self, inputs):
        values = ops.cast(keras.ops.stop_gradient(inputs), "float32")
        batch_min = ops.minimum(ops.min(values), 0.0)
        batch_max = ops.maximum(ops.max(values), 0.0)
        batch_min, batch_max = _across_replicas(batch_min, batch_max)
        seen = ops.cast(self.initialized, "float32") > 0.5
        decay = self.ema_decay
        new_min = ops.where(seen, decay * self.range_min + (1.0 - decay) * batch_min, batch_min)
        new_max = ops.where(seen, decay * self.range_max + (1.0 - decay) * batch_max, batch_max)
        self.range_min.assign(new_min)
        self.range_max.assign(new_max)
        self.initialized.assign(1.0)
        return new_min, new_max

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_bits": self.num_bits,
            "ema_decay": self.ema_decay,
            "narrow_range": self.narrow_range,
        }


def _across_replicas(batch_min, batch_max):
    # Keras has no distribution API for a cross-replica min/max; tf.distribute's replica
    # context (None or a single replica outside MirroredStrategy) gathers both extremes.
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return batch_min, batch_max
    gathered = context.all_gather(ops.stack([batch_min, batch_max])[None], axis=0)
    return ops.min(gathered[:, 0]), ops.max(gathered[:, 1])
