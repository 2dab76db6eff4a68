"""FacePipeline and the samplers: epochs, PK batches, dataset weights, sharding, bad records."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kerasface.data.face_pipeline import FacePipeline
from kerasface.data.folder_source import FolderSource
from kerasface.data.pk_sampler import PKSampler
from kerasface.data.record_source import RecordSource
from kerasface.data.sampler import get_sampler


class _MemorySource(RecordSource):
    """Records held in memory; ``read_chunk`` > 1 like the memmap-backed sources."""

    read_chunk = 4

    def __init__(self, blobs, labels, **kwargs):
        super().__init__(labels, **kwargs)
        self.blobs = list(blobs)

    def read(self, indices):
        table = tf.constant(self.blobs, tf.string)
        return tf.gather(table, indices)

    def describe(self, index):
        return f"memory record {index}"

    def read_bytes(self, index):
        return self.blobs[index]


def _png(value, size=112):
    pixels = np.full((size, size, 3), value, np.uint8)
    return tf.io.encode_png(pixels).numpy()


def _memory_source(counts, bad=()):
    """Class c has counts[c] images; each image's pixel value encodes its record index."""
    labels = np.repeat(np.arange(len(counts)), counts)
    blobs = [b"" if i in bad else _png(i % 256) for i in range(len(labels))]
    return _MemorySource(blobs, labels, name="memory")


def _records(pipeline, dataset=None):
    """Per batch: record indices recovered from pixel values, and labels."""
    batches = []
    for images, labels in dataset if dataset is not None else pipeline.dataset:
        pixels = np.rint(images.numpy()[:, 0, 0, 0] * 128 + 127.5).astype(int)
        batches.append((pixels, labels.numpy()))
    return batches


def test_shuffle_epochs_visit_every_record_once_in_new_orders():
    source = _memory_source([5, 7, 3, 9])
    pipeline = FacePipeline(source, batch_size=4, augmentation=None, seed=3, drop_remainder=False)
    first = np.concatenate([b for b, _ in _records(pipeline)])
    second = np.concatenate([b for b, _ in _records(pipeline)])
    assert sorted(first) == list(range(24)) == sorted(second)
    assert first.tolist() != second.tolist()
    again = FacePipeline(source, batch_size=4, augmentation=None, seed=3, drop_remainder=False)
    assert np.concatenate([b for b, _ in _records(again)]).tolist() == first.tolist()
    for pixels, labels in _records(pipeline):
        np.testing.assert_array_equal(labels, source.labels[pixels])


def test_sequential_keeps_source_order_and_drop_remainder_counts():
    source = _memory_source([5, 6])
    pipeline = FacePipeline(source, batch_size=4, sampler="sequential", augmentation=None)
    batches = _records(pipeline)
    assert pipeline.steps_per_epoch == 2 == len(batches)
    assert np.concatenate([b for b, _ in batches]).tolist() == list(range(8))


def test_pk_batches_hold_p_identities_with_k_distinct_images():
    counts = [2, 6, 5, 9, 1, 4, 0, 7]  # class 6 has no images
    source = _memory_source(counts)
    pipeline = FacePipeline(source, batch_size=6, sampler="pk:3x2", augmentation=None, seed=1)
    assert pipeline.steps_per_epoch == 7 // 3
    seen = []
    for pixels, labels in _records(pipeline):
        groups = labels.reshape(3, 2)
        assert (groups == groups[:, :1]).all()  # K images of one identity side by side
        assert len(set(groups[:, 0])) == 3
        for group in pixels.reshape(3, 2):
            assert len(set(group)) == 2 or counts[source.labels[group[0]]] < 2
        seen.extend(groups[:, 0].tolist())
    assert len(seen) == len(set(seen)) and 6 not in seen  # each identity at most once


def test_pk_small_identities_cycle_through_their_images():
    source = _memory_source([2, 3, 8])
    pipeline = FacePipeline(source, batch_size=12, sampler="pk:3x4", augmentation=None, seed=0)
    (pixels, labels), = _records(pipeline)
    for label in range(3):
        mine = pixels[labels == label]
        available = np.flatnonzero(source.labels == label)
        assert set(mine) <= set(available)
        # min(K, count) distinct images, each used at most ceil(K / count) times.
        assert len(set(mine)) == min(4, len(available))
        assert max(np.bincount(mine)) <= -(-4 // len(available))


def test_sampler_errors_name_the_values():
    source = _memory_source([4, 4])
    with pytest.raises(ValueError, match="needs batch_size 8, got 6"):
        FacePipeline(source, batch_size=6, sampler="pk:4x2", augmentation=None)
    with pytest.raises(ValueError, match="at least P=4 identities"):
        FacePipeline(source, batch_size=8, sampler="pk:4x2", augmentation=None)
    with pytest.raises(ValueError, match="'pk:PxK' needs two integers"):
        get_sampler("pk:4xa")
    assert get_sampler("pk:4").images_per_identity == 4  # "pk:K": P from the batch size
    with pytest.raises(ValueError, match="unknown sampler 'random'"):
        get_sampler("random")
    with pytest.raises(ValueError, match="images_per_identity` must be an int >= 1, got 0"):
        PKSampler(2, 0)
    with pytest.raises(ValueError, match="no full batch of 16"):
        FacePipeline(source, batch_size=16, augmentation=None)
    with pytest.raises(ValueError, match="needs a combined source"):
        FacePipeline(source, batch_size=4, sampler="weighted", augmentation=None)


def test_shards_are_disjoint_and_cover_every_global_batch():
    source = _memory_source([6, 6, 6, 6])
    pipeline = FacePipeline(source, batch_size=8, augmentation=None, seed=5)
    whole = _records(pipeline, pipeline.build())
    parts = [_records(pipeline, pipeline.build(num_shards=2, shard_index=k)) for k in range(2)]
    assert len(parts[0]) == len(parts[1]) == len(whole) == 3
    for (full, _), (a, _), (b, _) in zip(whole, *parts):
        assert len(a) == len(b) == 4
        assert np.concatenate([a, b]).tolist() == full.tolist()
    pk = FacePipeline(source, batch_size=8, sampler="pk:4x2", augmentation=None, seed=5)
    for k in range(2):
        for _, labels in _records(pk, pk.build(num_shards=2, shard_index=k)):
            assert (labels.reshape(2, 2) == labels.reshape(2, 2)[:, :1]).all()
    with pytest.raises(ValueError, match="multiple of K=2"):
        FacePipeline(source, batch_size=8, sampler="pk:4x2", augmentation=None).build(num_shards=8)


def test_dataset_fn_gives_each_input_pipeline_its_shard():
    source = _memory_source([8, 8])
    pipeline = FacePipeline(source, batch_size=8, augmentation=None, seed=2)
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=4
    )
    batches = _records(pipeline, pipeline.dataset_fn(context))
    # Worker 1 of 2 with 2 replicas each: its half of every global batch, in batches of 2.
    assert [len(p) for p, _ in batches] == [2] * 4
    whole = _records(pipeline, pipeline.build())
    expected = np.concatenate([full[4:] for full, _ in whole])
    assert np.concatenate([p for p, _ in batches]).tolist() == expected.tolist()


def test_repeat_and_start_epoch_resume_the_same_batches():
    source = _memory_source([3, 5])
    run = FacePipeline(source, batch_size=4, augmentation=None, seed=9, repeat=True)
    stream = [p.tolist() for p, _ in _records(run, run.dataset.take(6))]
    resumed = FacePipeline(source, batch_size=4, augmentation=None, seed=9, repeat=True, start_epoch=1)
    assert [p.tolist() for p, _ in _records(resumed, resumed.dataset.take(4))] == stream[2:6]


def test_bad_records_are_counted_and_named():
    source = _memory_source([4, 4, 4], bad={1, 6})
    pipeline = FacePipeline(
        source, batch_size=4, sampler="sequential", augmentation=None, drop_remainder=False
    )
    batches = _records(pipeline)
    pixels = np.concatenate([p for p, _ in batches])
    assert pixels.tolist() == [0, 2, 3, 4, 5, 7, 8, 9, 10, 11]  # the stream closes the gaps
    for batch_pixels, labels in batches:
        np.testing.assert_array_equal(labels, source.labels[batch_pixels])
    records = pipeline.bad_records()
    assert sorted(records) == ["memory record 1", "memory record 6"]
    assert all(count == 1 and "empty record" in reason for count, reason in records.values())
    assert "skipped 2 unreadable files" in pipeline.report()
    _records(pipeline)  # a second epoch counts them again
    assert {count for count, _ in pipeline.bad_records().values()} == {2}


def test_pk_batch_with_a_bad_record_is_refilled_with_its_own_identities():
    source = _memory_source([4, 4], bad={1})
    pipeline = FacePipeline(source, batch_size=8, sampler="pk:2x4", augmentation=None, seed=0)
    (pixels, labels), = _records(pipeline)
    assert len(pixels) == 8 and 1 not in pixels
    np.testing.assert_array_equal(labels, source.labels[pixels])
    assert np.bincount(labels).tolist() == [4, 4]  # identity 0 repeats one of its 3 good images
    assert set(pixels) == {0, 2, 3, 4, 5, 6, 7}
    assert list(pipeline.bad_records()) == ["memory record 1"]
    # A batch none of whose records decodes is left out, not a crash.
    broken = FacePipeline(
        _memory_source([2, 2], bad={0, 1, 2, 3}), batch_size=4, sampler="pk:2x2", augmentation=None
    )
    assert _records(broken) == [] and len(broken.bad_records()) == 4


def test_missing_and_truncated_files_in_a_folder_are_reported(tmp_path):
    for name in ("a", "b"):
        os.makedirs(tmp_path / name)
        for j in range(3):
            Image.fromarray(np.full((112, 112, 3), 40 * j, np.uint8)).save(tmp_path / name / f"{j}.jpg")
    truncated = tmp_path / "a" / "1.jpg"
    truncated.write_bytes(truncated.read_bytes()[:300])
    source = FolderSource(tmp_path)
    missing = tmp_path / "b" / "2.jpg"
    os.remove(missing)  # deleted after the folder was indexed
    pipeline = FacePipeline(source, batch_size=3, sampler="sequential", augmentation=None, drop_remainder=False)
    total = sum(int(labels.shape[0]) for _, labels in pipeline.dataset)
    assert total == 4
    records = pipeline.bad_records()
    assert sorted(records) == sorted([str(truncated), str(missing)])
    assert "truncated JPEG" in records[str(truncated)][1]
    assert "missing" in records[str(missing)][1]


def test_class_weights_and_resized_images():
    labels = np.array([0, 0, 1])
    blobs = [_png(10), _png(20, size=64), _png(30)]
    source = _MemorySource(blobs, labels, name="mixed sizes")
    weights = np.array([0.5, 2.0], np.float32)
    pipeline = FacePipeline(
        source, batch_size=3, sampler="sequential", augmentation=None, class_weights=weights
    )
    (images, batch_labels, batch_weights), = list(pipeline.dataset)
    assert images.shape == (3, 112, 112, 3) and images.dtype == tf.float32
    np.testing.assert_allclose(batch_weights.numpy(), weights[batch_labels.numpy()])
    assert pipeline.num_resized() == 1
    with pytest.raises(ValueError, match=r"`class_weights` must have shape \(2,\), got \(3,\)"):
        FacePipeline(source, batch_size=3, augmentation=None, class_weights=[1, 2, 3])


def test_fit_on_a_distributed_pipeline_under_mirrored_strategy():
    source = _memory_source([8, 8, 8, 8])
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    pipeline = FacePipeline(source, batch_size=8, augmentation=None, seed=0, repeat=True)
    with strategy.scope():
        model = keras.Sequential(
            [keras.Input((112, 112, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4)]
        )
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(pipeline.distribute(strategy), epochs=1, steps_per_epoch=3, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
