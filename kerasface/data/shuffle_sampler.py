"""Every record once per epoch, in a fresh random order each epoch."""

import tensorflow as tf

from kerasface.data.sampler import Sampler, batches_of


class ShuffleSampler(Sampler):
    """Each record once per epoch, reshuffled every epoch (the standard epoch).

    The permutation is drawn in-graph over the whole index range at once
    (``stateless_shuffle``), so a 5M-record epoch costs one 40 MB int64 vector rather than
    a 5M-element ``Dataset.shuffle`` buffer, and it is an exact shuffle, not a windowed one.

    Args:
        shuffle: False keeps the records in source order (evaluation, conversion).
    """

    def __init__(self, shuffle=True):
        self.shuffle = bool(shuffle)

    def epoch_batches(self, source, batch_size, seed, drop_remainder):
        indices = tf.range(source.num_records, dtype=tf.int64)
        if self.shuffle:
            indices = tf.random.experimental.stateless_shuffle(indices, seed)
        return batches_of(indices, batch_size, drop_remainder)

    def get_config(self):
        return {"shuffle": self.shuffle}
