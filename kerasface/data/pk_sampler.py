"""PK batches: P identities with K images each."""

import numpy as np
import tensorflow as tf

from kerasface.data.sampler import Sampler


class PKSampler(Sampler):
    """Batches of P identities x K images each (LFRC Sec. 4.2, "PK mining").

    Every epoch visits each identity that has images once, in a new random order, P per
    batch (the last ``C mod P`` identities of the order wait for the next epoch). Each
    identity contributes K of its images, drawn without replacement when it has at least K,
    and cycling through its (shuffled) images otherwise, so small identities repeat images
    rather than being left out. A batch holds the K images of an identity next to each
    other, so slicing a batch between workers on multiples of K keeps identities whole.

    Args:
        identities_per_batch: P, or None for ``batch_size // K`` (``"pk:K"`` from a string:
            "K images per identity" whatever the batch size, LFRC's "batch id=4").
        images_per_identity: K; the batch size must be P * K.
    """

    whole_batches = True

    def __init__(self, identities_per_batch, images_per_identity):
        for name, value in (
            ("identities_per_batch", 1 if identities_per_batch is None else identities_per_batch),
            ("images_per_identity", images_per_identity),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{name}` must be an int >= 1, got {value!r}")
        self.identities_per_batch = None if identities_per_batch is None else int(identities_per_batch)
        self.images_per_identity = int(images_per_identity)

    def _p(self, batch_size):
        return self.identities_per_batch or max(1, int(batch_size) // self.images_per_identity)

    def check(self, source, batch_size, num_shards=1):
        p, k = self._p(batch_size), self.images_per_identity
        if batch_size != p * k:
            raise ValueError(
                f"PK sampling with P={p} identities x K={k} images needs batch_size {p * k}, "
                f"got {batch_size}"
            )
        if batch_size % num_shards or (batch_size // num_shards) % k:
            raise ValueError(
                f"PK batches of {p}x{k} cannot be split into {num_shards} shards of whole "
                f"identities: each shard's batch must be a multiple of K={k}"
            )
        present = int(np.count_nonzero(source.class_counts()))
        if present < p:
            raise ValueError(
                f"{source.name}: PK sampling needs at least P={p} identities with images, "
                f"got {present}"
            )

    def steps_per_epoch(self, source, batch_size, drop_remainder):
        return int(np.count_nonzero(source.class_counts())) // self._p(batch_size)

    def epoch_batches(self, source, batch_size, seed, drop_remainder):
        p, k = self._p(batch_size), self.images_per_identity
        counts = source.class_counts()
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        present = np.flatnonzero(counts).astype(np.int64)
        num_batches = len(present) // p
        labels = tf.constant(source.labels, tf.int32)
        shuffle_seed, class_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        # Shuffle, then stable-sort by label: records grouped by class, random within a class.
        order = tf.random.experimental.stateless_shuffle(
            tf.range(source.num_records, dtype=tf.int64), shuffle_seed
        )
        order = tf.gather(order, tf.argsort(tf.gather(labels, order), stable=True))
        classes = tf.random.experimental.stateless_shuffle(tf.constant(present), class_seed)
        classes = tf.reshape(classes[: num_batches * p], [num_batches, p, 1])
        positions = tf.gather(tf.constant(starts, tf.int64), classes) + tf.math.floormod(
            tf.range(k, dtype=tf.int64), tf.gather(tf.constant(counts, tf.int64), classes)
        )
        batches = tf.reshape(tf.gather(order, positions), [num_batches, p * k])
        return tf.data.Dataset.from_tensor_slices(batches)

    def get_config(self):
        return {
            "identities_per_batch": self.identities_per_batch,
            "images_per_identity": self.images_per_identity,
        }
