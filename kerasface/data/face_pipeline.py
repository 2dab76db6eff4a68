"""The tf.data training pipeline shared by every record source: sample, read, decode, augment."""

import numpy as np
import tensorflow as tf

from kerasface.data.bad_record_tracker import (
    BadRecordTracker,
    describe_bad_records,
    looks_like_image,
)
from kerasface.data.preprocessing import IMAGE_SIZE, decode_rgb, normalize_images
from kerasface.data.sampler import get_sampler

_MAX_NAMED = 20
# Batches decoded at once, and parallel decodes inside each (see FacePipeline.build).
_BATCHES_IN_FLIGHT = 2
_DECODE_CALLS = tf.data.AUTOTUNE


class FacePipeline:
    """Training batches from any :class:`kerasface.data.RecordSource`, never input-bound.

    Per epoch the sampler lays out the global batches as record indices (the same on
    every worker, from the epoch's seed); each worker slices its part of every batch, so
    workers see disjoint records. The records are then read (in chunks for memory-mapped
    sources), decoded in parallel and re-batched. A record that cannot be read (missing
    file, truncated JPEG, broken RecordIO record) is dropped, counted and reported with its
    location (:meth:`bad_records`, :class:`kerasface.data.BadRecordReport`), never a crash.
    PK batches are decoded batch by batch instead, so a failed record drops out of its own
    batch only, which (with ``drop_remainder``) is refilled to full size by repeating its
    good images: identities stay together. Images not 112x112 are resized and counted.
    Flips run per image after decoding; other augmentations on whole uint8 batches,
    seeded per batch, before normalisation.

    Args:
        source: the records (folders, RecordIO, TFRecords, ``combine([...])``, subsets).
        batch_size: global batch size (all workers and replicas together).
        sampler: a :class:`kerasface.data.Sampler` or a string for
            :func:`kerasface.data.get_sampler` (``"shuffle"``, ``"sequential"``,
            ``"weighted"``, ``"pk:PxK"``).
        augmentation: a :class:`kerasface.data.FaceAugmentation`, a string for its
            ``from_string`` (``"flip=0.5,blur=0.1"``), True for the default (flip), or
            None/False for none.
        seed: seed of the sampling and the augmentation; the same seed gives the same
            batches. None draws one (and lets tf.data reorder elements for speed).
        repeat: yield epochs forever (give ``steps_per_epoch`` to ``fit``).
        drop_remainder: leave out the last incomplete batch of an epoch, and keep every
            batch at full size (static shapes for XLA and distribution).
        class_weights: optional float array (C,); batches then carry per-sample weights
            ``class_weights[label]`` as a third element (e.g.
            ``kerasface.losses.class_balanced_weights``).
        with_dataset_index: yield ``({"images": x, "dataset": d}, labels)``, the dataset index
            of each sample taken from a combined source (for dataset-aware training).
        record_features: optional ``{name: array}``, each array with one row per record
            (``source.num_records`` first); batches then carry ``{"images": x, name: rows}``,
            the rows of the records in the batch (e.g. a teacher's precomputed embeddings
            for :class:`kerasface.models.Distiller`; ``{"record": np.arange(n)}`` gives the
            record indices). The arrays stay in host memory, gathered per batch.
        normalize: yield float32 ``(x - 127.5) / 128`` images; False yields the uint8 pixels,
            4x less data to move, for models that normalise on the device
            (:class:`kerasface.models.FaceRecognizer` does). On this 2-core machine the
            float conversion alone halves the pipeline's throughput.
        start_epoch: epoch number to start from (a resumed run gets the batches it would have
            had).

    Attributes:
        dataset: the ``tf.data.Dataset`` for one input pipeline (built on first use) of
            ``(float32 (B,112,112,3) images, int32 (B,) labels)`` (uint8 images without
            ``normalize``).
        steps_per_epoch: batches per epoch.
    """

    def __init__(
        self,
        source,
        batch_size=128,
        sampler="shuffle",
        augmentation=True,
        seed=0,
        repeat=False,
        drop_remainder=True,
        class_weights=None,
        with_dataset_index=False,
        record_features=None,
        start_epoch=0,
        normalize=True,
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"`batch_size` must be an int >= 1, got {batch_size!r}")
        self.source = source
        self.batch_size = int(batch_size)
        self.sampler = get_sampler(sampler)
        self.augmentation = _get_augmentation(augmentation)
        # The flip runs per image right after decoding, while the image is in cache: on the
        # whole batch it costs as much as the decode (memory-bound copies on this machine).
        self._flip = self.augmentation.flip if self.augmentation is not None else 0.0
        self._batch_augmentation = None
        if self.augmentation is not None and set(self.augmentation.enabled_ops) - {"flip"}:
            config = dict(self.augmentation.get_config(), flip=0.0)
            self._batch_augmentation = type(self.augmentation).from_config(config)
        self.seed = seed
        self.repeat = repeat
        self.drop_remainder = drop_remainder
        self.with_dataset_index = with_dataset_index
        self.start_epoch = int(start_epoch)
        self.normalize = bool(normalize)
        if class_weights is not None:
            class_weights = np.asarray(class_weights, np.float32)
            if class_weights.shape != (source.num_classes,):
                raise ValueError(
                    f"`class_weights` must have shape ({source.num_classes},), got "
                    f"{class_weights.shape}"
                )
        self.class_weights = class_weights
        self.record_features = _check_record_features(record_features, source)
        if with_dataset_index and not hasattr(source, "dataset_indices"):
            raise ValueError(
                f"{source.name}: `with_dataset_index` needs a combined source "
                "(kerasface.data.combine([...]))"
            )
        self.sampler.check(source, self.batch_size)
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"{source.name}: {source.num_records} records make no full batch of "
                f"{self.batch_size} with {self.sampler!r}; lower batch_size or pass "
                "drop_remainder=False"
            )
        self._seed = int(seed) if seed is not None else int(np.random.randint(2**31))
        self._tracker = BadRecordTracker(source)
        self._dataset = None
        # Eager tensors, captured by reference by every tf.data graph (not copied into it).
        with tf.device("/CPU:0"):
            self._labels = tf.constant(source.labels, tf.int32)
            self._datasets = (
                tf.constant(source.dataset_indices, tf.int32) if with_dataset_index else None
            )
            self._record_features = {
                name: tf.constant(values) for name, values in self.record_features.items()
            }

    @property
    def steps_per_epoch(self):
        return self.sampler.steps_per_epoch(self.source, self.batch_size, self.drop_remainder)

    @property
    def dataset(self):
        if self._dataset is None:
            self._dataset = self.build()
        return self._dataset

    # ---- distribution --------------------------------------------------------------------

    def dataset_fn(self, input_context):
        """For ``strategy.distribute_datasets_from_function``: this worker's shard, per-replica batches."""
        return self.build(
            num_shards=input_context.num_input_pipelines,
            shard_index=input_context.input_pipeline_id,
            per_replica_batch_size=input_context.get_per_replica_batch_size(self.batch_size),
        )

    def distribute(self, strategy):
        """A distributed dataset for ``model.fit`` under ``strategy``: each worker reads its shard."""
        return strategy.distribute_datasets_from_function(self.dataset_fn)

    # ---- reporting -----------------------------------------------------------------------

    def bad_records(self):
        """``{where: (times skipped, reason)}`` of the records that could not be read so far."""
        return self._tracker.bad_records()

    def num_resized(self):
        """How many distinct records so far were not 112x112 and were resized."""
        return self._tracker.num_resized()

    def report(self, max_listed=_MAX_NAMED, list_path=None):
        """Human summary of everything skipped or resized so far ("" when nothing was)."""
        lines = []
        bad = describe_bad_records(self.bad_records(), max_listed, list_path)
        if bad:
            lines.append(f"{self.root}: {bad}")
        resized = self.num_resized()
        if resized:
            lines.append(
                f"{self.root}: {resized} images were not {IMAGE_SIZE}x{IMAGE_SIZE} and "
                "were resized (aspect ratio not kept); align faces first for best accuracy"
            )
        return "\n".join(lines)

    @property
    def root(self):
        """The source's folder, or its name: how messages refer to it."""
        return getattr(self.source, "root", self.source.name)

    @property
    def skipped_files(self):
        """Entries the source left out when it was indexed (non-images in a folder)."""
        return list(getattr(self.source, "skipped_files", []))

    def __repr__(self):
        return (
            f"FacePipeline({self.source!r}, batch_size={self.batch_size}, "
            f"sampler={self.sampler!r}, augmentation={self.augmentation!r})"
        )

    # ---- the pipeline --------------------------------------------------------------------

    def build(self, num_shards=1, shard_index=0, per_replica_batch_size=None):
        """The dataset of input pipeline ``shard_index`` of ``num_shards``.

        Each shard gets ``batch_size / num_shards`` records of every global batch, cut into
        batches of ``per_replica_batch_size`` when given (several replicas per worker).
        """
        if self.batch_size % num_shards:
            raise ValueError(
                f"batch_size {self.batch_size} does not split into {num_shards} input pipelines"
            )
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"`shard_index` must be in [0, {num_shards}), got {shard_index}")
        self.sampler.check(self.source, self.batch_size, num_shards)
        shard_batch = self.batch_size // num_shards
        deterministic = self.seed is not None
        seed = tf.constant(self._seed, tf.int64)
        source, sampler = self.source, self.sampler

        if self.repeat:
            epochs = tf.data.Dataset.counter(self.start_epoch)
        else:
            # One epoch per iteration, a new one each time the dataset is iterated again
            # (as ``model.fit`` does every epoch), reproducible under the seed.
            epochs = tf.data.Dataset.random(
                seed=self._seed + self.start_epoch, rerandomize_each_iteration=True
            ).take(1)
        batches = epochs.flat_map(
            lambda epoch: sampler.epoch_batches(
                source, self.batch_size, tf.stack([seed, epoch]), self.drop_remainder
            )
        )
        if num_shards > 1:
            start = shard_index * shard_batch
            batches = batches.map(lambda ids: ids[start : start + shard_batch])
            batches = batches.filter(lambda ids: tf.size(ids) > 0)
        if sampler.whole_batches:
            # Identities must stay together: each batch is decoded on its own.
            dataset = batches.enumerate().interleave(
                self._load_batch,
                cycle_length=_BATCHES_IN_FLIGHT,
                num_parallel_calls=_BATCHES_IN_FLIGHT,
                deterministic=deterministic,
            )
            if self.drop_remainder:
                dataset = dataset.filter(lambda step, ids, images: tf.size(ids) > 0)
        else:
            dataset = self._load_stream(batches, shard_batch)
        full_size = shard_batch if self.drop_remainder else None
        dataset = dataset.map(
            lambda step, ids, images: self._finish_batch(step, ids, images, full_size),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )
        if per_replica_batch_size is not None and per_replica_batch_size != shard_batch:
            dataset = dataset.rebatch(per_replica_batch_size)
        options = tf.data.Options()
        # Sharding is done on the record indices above; tf.distribute must not shard again.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)

    def _decode(self, index, data, flip_key, track=False):
        """``(index, uint8 112x112 image, ok)``; ``track`` marks the record done when decoded."""
        tracker, flip = self._tracker, self._flip
        ok = looks_like_image(data)

        def decoded():
            image = decode_rgb(data)
            image.set_shape([None, None, 3])
            if track:
                image = tracker.end(index, image)
            return _to_image_size(image, index, tracker)

        image = tf.cond(ok, decoded, lambda: tf.zeros([IMAGE_SIZE, IMAGE_SIZE, 3], tf.uint8))
        if flip > 0:
            draw = tf.random.stateless_uniform(
                [], tf.stack([tf.constant(self._seed, tf.int64), flip_key])
            )
            image = tf.cond(draw < flip, lambda: tf.reverse(image, [1]), lambda: image)
        return index, tf.ensure_shape(image, [IMAGE_SIZE, IMAGE_SIZE, 3]), ok

    def _load_stream(self, batches, shard_batch):
        """The sampler's records as one stream: read, decode in parallel, re-batch.

        Faster than a sub-pipeline per batch (about 2x here); a record that fails shifts
        the following batch boundaries by one, which only PK batches would mind.
        """
        source, tracker = self.source, self._tracker
        deterministic = self.seed is not None
        records = batches.unbatch().enumerate()  # (position in the stream, record index)
        if source.read_chunk > 1:
            # Chunked reads never raise (a bad record reads as b""), so one chunk is safe.
            records = records.batch(source.read_chunk)
            records = records.map(lambda p, i: (p, i, source.read(i))).unbatch()

            def load(position, index, data):
                with tf.control_dependencies([tracker.begin(index)]):
                    data = tf.identity(data)
                return self._decode(index, data, position, track=True)

        else:

            def load(position, index):
                with tf.control_dependencies([tracker.begin(index)]):
                    data = source.read(tf.reshape(index, [1]))[0]
                return self._decode(index, data, position, track=True)

        records = records.map(load, num_parallel_calls=_DECODE_CALLS, deterministic=deterministic)
        # Read and decode errors cannot be caught in-graph: the element is dropped here and
        # the tracker keeps its count, so it is reported with its location.
        records = records.ignore_errors().filter(lambda index, image, ok: ok)
        records = records.map(lambda index, image, ok: (index, image))
        batches = records.batch(shard_batch, drop_remainder=self.drop_remainder)
        return batches.enumerate().map(lambda step, batch: (step, batch[0], batch[1]))

    def _load_batch(self, step, ids):
        """One batch of record indices -> one ``(step, good ids, uint8 images)`` element."""
        source, tracker = self.source, self._tracker
        deterministic = self.seed is not None

        def load(index, data):
            return self._decode(index, data, step * 2**32 + index)

        records = tf.data.Dataset.from_tensor_slices(ids)
        if source.read_chunk > 1:
            # Chunked reads never raise (a bad record reads as b""), so one chunk is safe.
            records = records.batch(source.read_chunk).map(lambda i: (i, source.read(i))).unbatch()
        else:
            records = records.map(lambda i: (i, source.read(tf.reshape(i, [1]))[0]))
        records = records.map(load, num_parallel_calls=_DECODE_CALLS, deterministic=deterministic)
        # Read and decode errors cannot be caught in-graph: the element is dropped here, and
        # the batch's missing records are counted below, so each is reported with its location.
        records = records.ignore_errors().filter(lambda index, image, ok: ok)
        records = records.map(lambda index, image, ok: (index, image))
        # A sentinel after the records, so that the batch exists even when all of them failed.
        sentinel = tf.data.Dataset.from_tensors(
            (tf.constant(-1, tf.int64), tf.zeros([IMAGE_SIZE, IMAGE_SIZE, 3], tf.uint8))
        )
        batch = records.concatenate(sentinel).batch(tf.size(ids, out_type=tf.int64) + 1)

        def account(good, images):
            good, images = good[:-1], images[:-1]
            with tf.control_dependencies([tracker.count_missing(ids, good)]):
                good = tf.identity(good)
            if self.drop_remainder:
                good, images = _refill(good, images, ids, self._labels)
            return step, good, images

        return batch.map(account)

    def _finish_batch(self, step, ids, images, full_size):
        labels = tf.gather(self._labels, ids)
        if self._batch_augmentation is not None:
            images = self._batch_augmentation(
                images, tf.stack([tf.constant(self._seed, tf.int64), step])
            )
        if self.normalize:
            images = normalize_images(images)
        # Static batch dimension when every batch is full (XLA, distribution).
        images = tf.ensure_shape(images, [full_size, IMAGE_SIZE, IMAGE_SIZE, 3])
        labels = tf.ensure_shape(labels, [full_size])
        inputs = images
        if self.with_dataset_index or self._record_features:
            inputs = {"images": images}
            if self.with_dataset_index:
                inputs["dataset"] = tf.gather(self._datasets, ids)
            for name, values in self._record_features.items():
                inputs[name] = tf.gather(values, ids)
        if self.class_weights is not None:
            weights = tf.gather(tf.constant(self.class_weights), labels)
            return inputs, labels, weights
        return inputs, labels


def _check_record_features(record_features, source):
    """``record_features`` as ``{name: array}`` with one row per record, or an error naming it."""
    if record_features is None:
        return {}
    if not isinstance(record_features, dict):
        raise TypeError(f"`record_features` must be a dict of arrays, got {type(record_features).__name__}")
    checked = {}
    for name, values in record_features.items():
        if name in ("images", "dataset"):
            raise ValueError(f"`record_features` name {name!r} is taken by the pipeline; choose another")
        values = np.asarray(values)
        if values.ndim < 1 or len(values) != source.num_records:
            raise ValueError(
                f"{source.name}: `record_features[{name!r}]` must have one row per record "
                f"({source.num_records}), got shape {values.shape}"
            )
        checked[name] = values
    return checked


def _refill(good, images, ids, labels):
    """Give every record a batch asked for (``ids``) an image: its own, or, when it failed, a
    good image of the same identity (of any identity if none); empty if none decoded."""
    good_labels = tf.gather(labels, good)
    wanted_labels = tf.gather(labels, ids)
    score = 2 * tf.cast(tf.equal(ids[:, None], good[None, :]), tf.int32) + tf.cast(
        tf.equal(wanted_labels[:, None], good_labels[None, :]), tf.int32
    )
    choice = tf.argmax(score, axis=1, output_type=tf.int32)
    return tf.cond(
        tf.size(good) > 0,
        lambda: (tf.gather(good, choice), tf.gather(images, choice)),
        lambda: (good, images),
    )


def _to_image_size(image, index, tracker):
    shape = tf.shape(image)
    right_size = tf.logical_and(tf.equal(shape[0], IMAGE_SIZE), tf.equal(shape[1], IMAGE_SIZE))

    def resize():
        with tf.control_dependencies([tracker.mark_resized(index)]):
            resized = tf.image.resize(image, [IMAGE_SIZE, IMAGE_SIZE], antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

    return tf.cond(right_size, lambda: image, resize)


def _get_augmentation(augmentation):
    if augmentation is None or augmentation is False:
        return None
    from kerasface.data.face_augmentation import FaceAugmentation

    if augmentation is True:
        return FaceAugmentation()
    if isinstance(augmentation, str):
        return FaceAugmentation.from_string(augmentation)
    if isinstance(augmentation, FaceAugmentation):
        return augmentation
    raise TypeError(
        "`augmentation` must be a FaceAugmentation, a string, True or None, got "
        f"{type(augmentation).__name__}"
    )
