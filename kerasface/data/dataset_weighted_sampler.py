"""Draw the datasets of a combined source by given weights instead of by their sizes."""

import numpy as np
import tensorflow as tf

from kerasface.data.sampler import Sampler, batches_of


class DatasetWeightedSampler(Sampler):
    """Each draw picks dataset k with probability ``w_k``, then its next record (DAIL mixing).

    An epoch is as many draws as the combined source has records. Within a dataset, records
    come in a fresh random order each epoch and cycle when the dataset is drawn more often
    than it has records, so a small dataset given a large weight repeats its images rather
    than running dry. With weights proportional to the sizes this is plain shuffling in
    expectation.

    Args:
        weights: one positive weight per dataset, normalised here; None uses the source's
            ``weights`` (set by ``kerasface.data.combine(..., weights=...)``), or the sizes.
    """

    def __init__(self, weights=None):
        if weights is not None:
            weights = [float(w) for w in weights]
            if not weights or min(weights) <= 0:
                raise ValueError(f"`weights` must be positive numbers, got {weights}")
        self.weights = weights

    def _weights(self, source):
        if not hasattr(source, "dataset_indices"):
            raise ValueError(
                f"{source.name}: weighted sampling needs a combined source "
                "(kerasface.data.combine([...])) with per-record dataset indices"
            )
        sizes = np.bincount(source.dataset_indices, minlength=len(source.dataset_num_classes))
        weights = self.weights or getattr(source, "weights", None)
        weights = np.asarray(sizes if weights is None else weights, np.float64)
        if len(weights) != len(sizes):
            raise ValueError(
                f"{source.name}: {len(weights)} weights for {len(sizes)} datasets"
            )
        if np.any((weights > 0) & (sizes == 0)):
            raise ValueError(f"{source.name}: a dataset with weight > 0 has no records: {sizes}")
        return weights / weights.sum(), sizes

    def check(self, source, batch_size, num_shards=1):
        self._weights(source)

    def epoch_batches(self, source, batch_size, seed, drop_remainder):
        weights, sizes = self._weights(source)
        members = [np.flatnonzero(source.dataset_indices == k) for k in range(len(sizes))]
        n = source.num_records
        seeds = tf.unstack(tf.random.experimental.stateless_split(seed, len(sizes) + 1))
        draws = tf.random.stateless_categorical(
            tf.math.log(tf.constant(weights[None], tf.float64)), n, seeds[0], dtype=tf.int32
        )[0]
        chosen = tf.zeros([n], tf.int64)
        for k, records in enumerate(members):
            if not len(records):
                continue
            picked = tf.equal(draws, k)
            # The j-th draw of dataset k takes the j-th record of its permutation.
            rank = tf.cumsum(tf.cast(picked, tf.int64)) - 1
            order = tf.random.experimental.stateless_shuffle(tf.constant(records, tf.int64), seeds[k + 1])
            chosen = tf.where(picked, tf.gather(order, tf.math.floormod(rank, len(records))), chosen)
        return batches_of(chosen, batch_size, drop_remainder)

    def get_config(self):
        return {"weights": self.weights}
