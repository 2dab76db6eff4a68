"""Per-identity momentum-mean face images (LATSE eq. 12), kept as compact non-trainable state."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kerasface.heads.margin_head import replica_components

STORAGE_DTYPES = ("uint8", "float16", "float32")
_UINT8_MAX = 255.0


@keras.saving.register_keras_serializable(package="kerasface")
class IdentityMeanImages(keras.layers.Layer):
    """One running mean face per identity, the target image of LATSE's decoder.

    LATSE (Huang et al., ICML 2020), eq. 12: ``y_img^c = (1 - momentum) x^c + momentum y_img^c``.
    In a training call each identity in the batch is updated once, with the mean of its
    images in that batch as ``x^c`` (eq. 12 exactly when an identity appears once per
    batch, the usual case with thousands of classes); an identity seen for the first time
    starts at that mean instead of at black. Training calls return the *updated* images.

    The state is C x r x r x 3 values (``resolution`` r) plus a C-long update counter: at
    112 x 112 in uint8 that is 37.6 kB per identity (376 MB at 10k identities, 3.76 GB at
    100k); ``resolution=56`` quarters it. uint8 storage rounds stochastically (floor of value
    + uniform noise), so small momentum steps are not lost to rounding: the stored mean is
    unbiased. Images are compared in [0, 1]; inputs at another size are resized (area) to r,
    and targets are resized back (bilinear) to the input size.

    Under ``tf.distribute`` the replicas all-gather their images and labels, compute the
    same update, and the first replica's write is kept (``only_first_replica``), so every
    copy of the state stays identical; rows are written with a sparse scatter, so a step
    touches B rows whatever C is.

    With ``sharded=True`` the identities are instead split over the N replicas like a
    :class:`kerasface.heads.ShardedHead`'s centres: replica r keeps rows
    ``[r S, (r + 1) S)``, ``S = ceil(C / N)`` (memory per replica C/N identities). A step
    all-gathers the batch, each replica reads the rows it owns (the others read zeros),
    one all-reduce (sum) gives every replica all the rows, every replica computes the same
    update and writes only its own rows. ``.keras`` files hold all C identities in order.

    Args:
        num_classes: number of identities C.
        resolution: side r of the stored images.
        momentum: eq. 12's momentum in [0, 1).
        storage_dtype: "uint8" (default), "float16" or "float32".
        seed: seed of the stochastic rounding (uint8 only).
        sharded: split the identities over the replicas of the strategy the layer is
            built in (one shard without a strategy).
        **kwargs: passed to ``keras.layers.Layer``.

    Call arguments:
        inputs: ``[images, labels]`` or ``[images, labels, weights]``: float images
            (B, H, W, 3) in [0, 1], int labels (B,) and optional per-sample weights (B,):
            each identity's batch mean is weighted by them, and an identity whose images all
            have weight 0 is left as it was (LATSE's filter in "sample" mode).
        training: update the state with the batch when True.

    Returns:
        float32 (B, H, W, 3) target images in [0, 1]: each sample's identity mean (the
        sample itself for an identity never seen, outside training).
    """

    def __init__(
        self, num_classes, resolution=112, momentum=0.9, storage_dtype="uint8", seed=None, sharded=False, **kwargs
    ):
        kwargs["dtype"] = kwargs.get("dtype") or "float32"
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise ValueError(f"`num_classes` must be >= 1, got {num_classes}")
        if int(resolution) < 1:
            raise ValueError(f"`resolution` must be >= 1, got {resolution}")
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"`momentum` must be in [0, 1), got {momentum}")
        if storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"`storage_dtype` must be one of {STORAGE_DTYPES}, got {storage_dtype!r}")
        self.num_classes = int(num_classes)
        self.resolution = int(resolution)
        self.momentum = float(momentum)
        self.storage_dtype = storage_dtype
        self.seed = seed
        self.sharded = bool(sharded)
        self.seed_generator = keras.random.SeedGenerator(seed, name="rounding_seed")

    @property
    def bytes_per_identity(self):
        """Memory of one identity's image plus its counter, in bytes."""
        itemsize = {"uint8": 1, "float16": 2, "float32": 4}[self.storage_dtype]
        return self.resolution * self.resolution * 3 * itemsize + 4

    def build(self, input_shape):
        if self.sharded:
            self._build_shards()
            return
        shape = (self.num_classes, self.resolution, self.resolution, 3)
        # autocast=False: the call writes into the variable itself, not a float32 copy of it.
        self.images = self.add_weight(
            name="images", shape=shape, dtype=self.storage_dtype, initializer="zeros", trainable=False,
            autocast=False, aggregation="only_first_replica",
        )
        self.counts = self.add_weight(
            name="counts", shape=(self.num_classes,), dtype="int32", initializer="zeros", trainable=False,
            autocast=False, aggregation="only_first_replica",
        )

    def _build_shards(self):
        self.num_shards = tf.distribute.get_strategy().num_replicas_in_sync
        self.shard_size = -(-self.num_classes // self.num_shards)
        # One extra row per shard: where the writes of rows owned by other shards go.
        rows = self.shard_size + 1
        # On-read with no aggregation: one independent value per replica (its shard).
        self.images = keras.Variable(
            np.zeros((rows, self.resolution, self.resolution, 3), self.storage_dtype), trainable=False,
            name="images", autocast=False, synchronization="on_read", aggregation="none",
        )
        self.counts = keras.Variable(
            np.zeros((rows,), np.int32), trainable=False, name="counts", autocast=False,
            synchronization="on_read", aggregation="none",
        )

    def _owned_rows(self, labels):
        """This replica's row of each label (the spare row S for labels other shards own)."""
        context = tf.distribute.get_replica_context()
        replica = context.replica_id_in_sync_group if self.num_shards > 1 else 0
        local = labels - ops.cast(replica, "int32") * self.shard_size
        owned = ops.logical_and(local >= 0, local < self.shard_size)
        return ops.where(owned, local, self.shard_size), owned

    def _gather_owned(self, variable, labels):
        """Rows of ``variable`` for ``labels`` (the same on every replica), summed over shards."""
        rows, owned = self._owned_rows(labels)
        values = ops.cast(tf.gather(variable.value, rows), "float32")
        mask = ops.reshape(ops.cast(owned, "float32"), (-1,) + (1,) * (len(values.shape) - 1))
        values = values * mask
        if self.num_shards > 1:
            values = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, values)
        return values

    def _counts(self, labels):
        if self.sharded:
            return ops.cast(self._gather_owned(self.counts, labels), "int32")
        return ops.take(self.counts.value, labels, axis=0)

    def _stored(self, labels):
        """The stored rows of ``labels`` in the storage dtype."""
        if self.sharded:
            return ops.cast(self._gather_owned(self.images, labels), self.storage_dtype)
        return ops.take(self.images.value, labels, axis=0)

    def _write(self, labels, stored, counts):
        if not self.sharded:
            self.images.value.scatter_update(tf.IndexedSlices(stored, labels))
            self.counts.value.scatter_update(tf.IndexedSlices(counts, labels))
            return
        rows, _ = self._owned_rows(labels)
        # Sync-on-read variables have no scatter methods; in replica context their handle is
        # this replica's own shard.
        tf.raw_ops.ResourceScatterUpdate(resource=self.images.value.handle, indices=rows, updates=stored)
        tf.raw_ops.ResourceScatterUpdate(resource=self.counts.value.handle, indices=rows, updates=counts)

    def all_images(self):
        """The (C, r, r, 3) stored images in identity order (gathered from every shard)."""
        if not self.sharded:
            return self.images.numpy()
        parts = [c.numpy()[: self.shard_size] for c in replica_components(self.images)]
        return np.concatenate(parts, axis=0)[: self.num_classes]

    def save_own_variables(self, store):
        if not self.sharded:
            return super().save_own_variables(store)
        store["images"] = self.all_images()
        counts = np.concatenate([c.numpy()[: self.shard_size] for c in replica_components(self.counts)])
        store["counts"] = counts[: self.num_classes]
        store["seed_state"] = self.seed_generator.state.numpy()

    def load_own_variables(self, store):
        if not self.sharded:
            return super().load_own_variables(store)
        size, classes = self.shard_size, self.num_classes
        images, counts = np.asarray(store["images"]), np.asarray(store["counts"])
        for index, (shard, shard_counts) in enumerate(zip(replica_components(self.images), replica_components(self.counts))):
            rows = np.zeros(shard.shape, shard.dtype.as_numpy_dtype)
            part = images[index * size : min((index + 1) * size, classes)]
            rows[: len(part)] = part
            shard.assign(rows)
            count_rows = np.zeros(shard_counts.shape, np.int32)
            part = counts[index * size : min((index + 1) * size, classes)]
            count_rows[: len(part)] = part
            shard_counts.assign(count_rows)
        self.seed_generator.state.assign(np.asarray(store["seed_state"]))

    def call(self, inputs, training=None):
        images, labels, *weights = inputs
        images = ops.cast(images, "float32")
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        tf.debugging.assert_less(labels, self.num_classes, message=f"labels must be < num_classes={self.num_classes}")
        tf.debugging.assert_non_negative(labels, message="labels must be >= 0")
        size = tuple(images.shape[1:3])
        small = self._at_resolution(images)
        if training:
            if weights:
                weights = ops.reshape(ops.cast(weights[0], "float32"), (-1,))
            else:
                weights = ops.ones_like(labels, "float32")
            targets = self._update(small, labels, weights)
        else:
            read_labels, local = labels, None
            context = tf.distribute.get_replica_context()
            if self.sharded and self.num_shards > 1:
                # Every replica reads the whole batch (its rows), one all-reduce shares them.
                local = ops.shape(labels)[0]
                read_labels = context.all_gather(labels, axis=0)
            seen = self._counts(read_labels) > 0
            stored = self._read(read_labels)
            if local is not None:
                start = context.replica_id_in_sync_group * local
                seen, stored = seen[start:start + local], stored[start:start + local]
            targets = ops.where(seen[:, None, None, None], stored, small)
        if size != (self.resolution, self.resolution):
            targets = ops.image.resize(targets, size, interpolation="bilinear")
        return targets

    def _at_resolution(self, images):
        if tuple(images.shape[1:3]) == (self.resolution, self.resolution):
            return images
        return ops.image.resize(images, (self.resolution, self.resolution), interpolation="area")

    def _read(self, labels):
        rows = ops.cast(self._stored(labels), "float32")
        return rows / _UINT8_MAX if self.storage_dtype == "uint8" else rows

    def _update(self, images, labels, weights):
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            local = ops.shape(labels)[0]
            offset = context.replica_id_in_sync_group * local
            images = context.all_gather(images, axis=0)
            labels = context.all_gather(labels, axis=0)
            weights = context.all_gather(weights, axis=0)
        else:
            local, offset = None, 0
        # Mean of each sample's identity over the batch, via a B x B same-label matrix:
        # static shapes (XLA), and duplicates compute identical rows, so the scatter is
        # deterministic whichever duplicate it writes last.
        same = ops.cast(labels[:, None] == labels[None, :], "float32")
        weighted = same * weights[None, :]
        total = ops.sum(weighted, axis=1, keepdims=True)
        flat = ops.reshape(images, (ops.shape(images)[0], -1))
        batch_mean = ops.reshape(ops.matmul(weighted, flat) / ops.maximum(total, 1e-12), ops.shape(images))
        counts = self._counts(labels)
        old = self._read(labels)
        updated = self.momentum * old + (1.0 - self.momentum) * batch_mean
        new = ops.where((counts > 0)[:, None, None, None], updated, batch_mean)
        # An identity whose every image in the batch has weight 0 keeps its image and count.
        present = total[:, 0] > 0
        new = ops.where(present[:, None, None, None], new, old)
        stored = self._quantize(new, same)
        if self.storage_dtype == "uint8":
            # Unchanged rows are rewritten as they were, not re-rounded.
            stored = ops.where(present[:, None, None, None], stored, self._stored(labels))
        self._write(labels, stored, counts + ops.cast(present, "int32"))
        targets = ops.cast(stored, "float32") / _UINT8_MAX if self.storage_dtype == "uint8" else ops.cast(stored, "float32")
        if local is not None:
            targets = targets[offset:offset + local]
        return targets

    def _quantize(self, values, same):
        if self.storage_dtype != "uint8":
            return ops.cast(values, self.storage_dtype)
        noise = keras.random.uniform(ops.shape(values), seed=self.seed_generator)
        # Duplicates of one identity share the first one's noise, so they store one value.
        first = ops.argmax(same, axis=1)
        noise = ops.take(noise, first, axis=0)
        levels = ops.clip(ops.floor(values * _UINT8_MAX + noise), 0.0, _UINT8_MAX)
        return ops.cast(levels, "uint8")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "resolution": self.resolution,
            "momentum": self.momentum,
            "storage_dtype": self.storage_dtype,
            "seed": self.seed,
            "sharded": self.sharded,
        }
