"""CombinedSource (DAIL mixing) and ClassSubset / cut_long_tail, against NumPy references."""

import numpy as np
import pytest
import tensorflow as tf

from kerasface.data.class_subset import ClassSubset, cut_long_tail
from kerasface.data.combined_source import CombinedSource, combine
from kerasface.data.record_source import RecordSource


def _jpeg(seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return tf.io.encode_jpeg(pixels).numpy()


class FakeSource(RecordSource):
    """In-memory records; ``strict`` asserts (in-graph) that read never gets an empty vector."""

    def __init__(self, records, labels, num_classes=None, class_names=None, name=None,
                 read_chunk=1, strict=False):
        super().__init__(labels, num_classes=num_classes, class_names=class_names, name=name)
        self.records = list(records)
        self.read_chunk = read_chunk
        self.strict = strict
        self.read_sizes = []

    def read(self, indices):
        indices = tf.reshape(tf.cast(indices, tf.int64), [-1])
        if self.strict:
            tf.debugging.assert_positive(tf.size(indices), message=f"{self.name}: empty read")
        return tf.gather(tf.constant(self.records, tf.string), indices)

    def describe(self, index):
        return f"{self.name} record {index}"

    def read_bytes(self, index):
        return self.records[index]


def _make(name, labels, seed, num_classes=None, class_names=None, **kwargs):
    records = [_jpeg(seed * 1000 + i) for i in range(len(labels))]
    return FakeSource(records, labels, num_classes, class_names, name, **kwargs)


@pytest.fixture(scope="module")
def three():
    a = _make("a", [0, 1, 1, 2, 0], 1, class_names=["x", "y", "z"])
    # declared class 3 has no image
    b = _make("b", [1, 0, 1, 2], 2, num_classes=4, class_names=["p", "q", "r", "s"])
    c = _make("c", [4, 3, 2, 1, 0, 4], 3, class_names=[f"c{i}" for i in range(5)])
    return [a, b, c]


def _read_all(source, order, batch=4):
    dataset = tf.data.Dataset.from_tensor_slices(np.asarray(order, np.int64)).batch(batch)
    return [bytes(x) for x in dataset.map(source.read).unbatch().as_numpy_iterator()]


def test_labels_offsets_and_dataset_indices_match_numpy(three):
    mix = combine(three)
    counts = [3, 4, 5]
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    labels = np.concatenate([s.labels + o for s, o in zip(three, offsets)])
    dataset_indices = np.concatenate([np.full(len(s), k) for k, s in enumerate(three)])
    class_to_dataset = np.concatenate([np.full(c, k) for k, c in enumerate(counts)])

    assert mix.dataset_num_classes == counts
    assert mix.label_offsets == offsets.tolist()
    assert mix.num_classes == 12 and mix.num_records == 15 and mix.num_datasets == 3
    np.testing.assert_array_equal(mix.labels, labels)
    assert mix.labels.dtype == np.int32
    np.testing.assert_array_equal(mix.dataset_indices, dataset_indices)
    assert mix.dataset_indices.dtype == np.int32
    np.testing.assert_array_equal(mix.class_to_dataset, class_to_dataset)
    assert mix.class_to_dataset.dtype == np.int32
    np.testing.assert_array_equal(mix.class_to_dataset[mix.labels], mix.dataset_indices)
    assert [mix.record_range(k) for k in range(3)] == [range(0, 5), range(5, 9), range(9, 15)]
    np.testing.assert_array_equal(mix.class_counts(), np.bincount(labels, minlength=12))
    assert mix.dataset_names == ["a", "b", "c"] and mix.weights is None
    assert mix.class_names[:4] == ["a/x", "a/y", "a/z", "b/p"] and mix.class_names[-1] == "c/c4"
    assert mix.sources == three


def test_dataset_aware_head_agrees_with_the_layout(three):
    from kerasface.heads import DatasetAwareHead

    mix = combine(three)
    head = DatasetAwareHead("arcface", dataset_num_classes=mix.dataset_num_classes)
    np.testing.assert_array_equal(np.asarray(head.dataset_ids(mix.labels)), mix.dataset_indices)


def test_read_across_dataset_boundaries(three):
    mix = combine(three)
    expected = [r for s in three for r in s.records]
    assert _read_all(mix, range(15)) == expected
    order = np.random.default_rng(0).permutation(15)
    assert _read_all(mix, order, batch=5) == [expected[i] for i in order]
    # eager call, indices given as int32
    out = mix.read(tf.constant([14, 0, 6], tf.int32)).numpy().tolist()
    assert out == [expected[14], expected[0], expected[6]]


def test_read_never_hands_a_source_an_empty_vector():
    a = _make("a", [0, 1], 4, strict=True)
    b = _make("b", [0, 0, 1], 5, strict=True, read_chunk=64)
    mix = combine([a, b])
    assert mix.read_chunk == 1  # min of the sources'
    assert _read_all(mix, [4, 0, 3, 1, 2], batch=1) == [(a.records + b.records)[i] for i in [4, 0, 3, 1, 2]]
    assert _read_all(mix, [4, 3], batch=2) == [b.records[2], b.records[1]]
    assert combine([b, _make("c", [0], 6, read_chunk=32)]).read_chunk == 32


def test_out_of_range_index_is_an_error(three):
    mix = combine(three)
    for bad in ([3, 15], [-1], [15]):  # chunk, one-record path, negative
        with pytest.raises(tf.errors.InvalidArgumentError, match="record_index_out_of_range"):
            mix.read(tf.constant(bad, tf.int64))
    with pytest.raises(tf.errors.InvalidArgumentError, match="record_index_out_of_range"):
        _read_all(mix, [0, 15], batch=1)
    with pytest.raises(IndexError, match=r"record index must be in \[0, 15\), got 15"):
        mix.describe(15)


def test_describe_read_bytes_and_diagnose_delegate(three):
    mix = combine(three, names=["first", "second", "third"])
    assert mix.describe(0) == "first: a record 0"
    assert mix.describe(5) == "second: b record 0"
    assert mix.describe(14) == "third: c record 5"
    assert mix.locate(7) == (1, 2)
    assert mix.read_bytes(7) == three[1].records[2]
    assert mix.diagnose(7) is None
    broken = FakeSource([b"", _jpeg(9)], [0, 1], name="broken")
    mix = combine([three[0], broken])
    assert "empty record" in mix.diagnose(5)
    assert mix.diagnose(6) is None


def test_single_source_behaves_like_it(three):
    source = three[2]
    mix = combine([source])
    assert isinstance(mix, CombinedSource) and CombinedSource([source], name="solo").name == "solo"
    np.testing.assert_array_equal(mix.labels, source.labels)
    assert mix.num_classes == source.num_classes and mix.dataset_num_classes == [5]
    assert mix.label_offsets == [0]
    assert _read_all(mix, range(6)) == source.records
    assert mix.describe(2) == "c: c record 2"
    assert mix.read_chunk == source.read_chunk


def test_class_names_none_or_filled_by_label():
    a = _make("a", [0, 1], 7)
    b = _make("b", [0], 8)
    assert combine([a, b]).class_names is None
    named = _make("n", [0], 9, class_names=["alice"])
    assert combine([a, named]).class_names == ["a/0", "a/1", "n/alice"]


def test_default_names_are_made_unique():
    a, b = _make("same", [0], 1), _make("same", [0], 2)
    assert combine([a, b]).dataset_names == ["same", "same-2"]


def test_weights_are_normalised_and_validated(three):
    assert combine(three, weights=[1, 1, 2]).weights == [0.25, 0.25, 0.5]
    with pytest.raises(ValueError, match=r"`weights` has 2 entries for 3 datasets"):
        combine(three, weights=[1, 2])
    with pytest.raises(ValueError, match=r"finite numbers > 0, got 0 for dataset 'b'"):
        combine(three, weights=[1, 0, 1])
    with pytest.raises(ValueError, match=r"got -1.0 for dataset 'c'"):
        combine(three, weights=[1, 1, -1.0])
    with pytest.raises(ValueError, match=r"got nan"):
        combine(three, weights=[1, float("nan"), 1])
    with pytest.raises(TypeError, match="list of positive numbers"):
        combine(three, weights=3)


def test_bad_source_lists(three):
    with pytest.raises(ValueError, match="`sources` is empty"):
        combine([])
    with pytest.raises(TypeError, match=r"`sources\[1\]` must be a RecordSource, got str"):
        combine([three[0], "b.rec"])
    with pytest.raises(TypeError, match="wrap it in a list"):
        combine(three[0])
    with pytest.raises(ValueError, match=r"`names` must be unique, got \['x'\]"):
        combine(three, names=["x", "y", "x"])
    with pytest.raises(ValueError, match="`names` has 2 entries for 3 sources"):
        combine(three, names=["x", "y"])
    with pytest.raises(ValueError, match="has no records"):
        combine([three[0], FakeSource([], np.zeros(0, np.int64), num_classes=2, name="empty")])
    with pytest.raises(ValueError, match=r"already a mix of 2 datasets .*single combine\(\) call"):
        combine([combine(three[:2]), three[2]])
    # a one-dataset mix is harmless
    assert combine([combine([three[0]]), three[1]]).dataset_num_classes == [3, 4]


# ---- ClassSubset / cut_long_tail ---------------------------------------------------------


@pytest.fixture(scope="module")
def long_tail():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 30, 200) ** 2 // 30  # skewed: low classes frequent
    # 40 declared classes, so the top ones have no image at all
    names = [f"id{i}" for i in range(40)]
    return _make("tail", labels, 11, num_classes=40, class_names=names)


def test_cut_long_tail_matches_numpy(long_tail):
    min_images = 6
    counts = np.bincount(long_tail.labels, minlength=40)
    kept = np.flatnonzero(counts >= min_images)
    mapping = np.full(40, -1)
    mapping[kept] = np.arange(len(kept))
    records = np.flatnonzero(counts[long_tail.labels] >= min_images)

    subset = cut_long_tail(long_tail, min_images)
    assert 0 < len(kept) < 40 and 0 < len(records) < 200
    np.testing.assert_array_equal(subset.kept_classes, kept)
    np.testing.assert_array_equal(subset.original_to_new, mapping)
    assert subset.original_to_new.dtype == np.int32
    np.testing.assert_array_equal(subset.record_indices, records)
    np.testing.assert_array_equal(subset.labels, mapping[long_tail.labels[records]])
    assert subset.num_classes == len(kept) and subset.num_records == len(records)
    assert subset.class_counts().min() >= min_images
    np.testing.assert_array_equal(subset.class_counts(), counts[kept])
    assert subset.class_names == [f"id{i}" for i in kept]
    assert subset.num_dropped_classes == 40 - len(kept)
    assert subset.num_dropped_records == 200 - len(records)
    assert subset.summary() == (
        f"kept {len(kept)} of 40 identities ({len(records)} of 200 images); "
        f"dropped {40 - len(kept)} with fewer than 6 images"
    )


def test_summary_uses_thousands_separators():
    source = FakeSource([b""] * 1500, np.repeat(np.arange(3), [1000, 499, 1]), name="big")
    assert cut_long_tail(source, 2).summary() == (
        "kept 2 of 3 identities (1,499 of 1,500 images); dropped 1 with fewer than 2 images"
    )


def test_read_and_describe_through_a_subset(long_tail):
    subset = cut_long_tail(long_tail, 6)
    expected = [long_tail.records[i] for i in subset.record_indices]
    assert _read_all(subset, range(len(subset))) == expected
    assert subset.read_chunk == long_tail.read_chunk
    assert subset.describe(3) == f"tail record {subset.record_indices[3]}"
    assert subset.read_bytes(3) == long_tail.records[subset.record_indices[3]]
    with pytest.raises(IndexError, match="record index must be in"):
        subset.describe(len(subset))
    with pytest.raises(tf.errors.InvalidArgumentError):
        subset.read(tf.constant([len(subset)], tf.int64))


def test_generic_subset_by_mask_or_ids(long_tail):
    by_ids = ClassSubset(long_tail, [7, 2, 0])
    mask = np.zeros(40, bool)
    mask[[0, 2, 7]] = True
    by_mask = ClassSubset(long_tail, mask)
    for subset in (by_ids, by_mask):
        np.testing.assert_array_equal(subset.kept_classes, [0, 2, 7])
        records = np.flatnonzero(np.isin(long_tail.labels, [0, 2, 7]))
        np.testing.assert_array_equal(subset.record_indices, records)
        assert set(np.unique(subset.labels)) <= {0, 1, 2}
    assert "dropped 37 (" in by_ids.summary()


def test_subset_errors(long_tail):
    with pytest.raises(ValueError, match="boolean `keep_classes` has length 3, the source has 40"):
        ClassSubset(long_tail, [True, False, True])
    with pytest.raises(ValueError, match=r"class ids \[40\] .* outside 0..39"):
        ClassSubset(long_tail, [1, 40])
    with pytest.raises(ValueError, match=r"class ids \[2\] appear more than once"):
        ClassSubset(long_tail, [2, 3, 2])
    with pytest.raises(ValueError, match="no class is kept"):
        ClassSubset(long_tail, np.zeros(40, bool))
    with pytest.raises(ValueError, match=r"no class has >= 1000 images"):
        cut_long_tail(long_tail, 1000)
    with pytest.raises(ValueError, match="`min_images` must be an int >= 1, got 0"):
        cut_long_tail(long_tail, 0)
    with pytest.raises(TypeError, match="`source` must be a RecordSource"):
        cut_long_tail([1, 2], 2)


def test_subset_of_a_mix_keeps_dail_ranges(three):
    from kerasface.heads import DatasetAwareHead

    mix = combine(three, weights=[2, 1, 1])
    subset = cut_long_tail(mix, 2)
    # numpy reference: classes with 2+ images, per dataset
    counts = np.bincount(mix.labels, minlength=mix.num_classes)
    kept = np.flatnonzero(counts >= 2)
    records = np.flatnonzero(counts[mix.labels] >= 2)
    np.testing.assert_array_equal(subset.kept_classes, kept)
    np.testing.assert_array_equal(subset.dataset_indices, mix.dataset_indices[records])
    np.testing.assert_array_equal(subset.class_to_dataset, mix.class_to_dataset[kept])
    per_dataset = np.bincount(mix.class_to_dataset[kept], minlength=3).tolist()
    assert subset.dataset_num_classes == per_dataset == [2, 1, 1]
    assert subset.label_offsets == [0, 2, 3]
    assert subset.dataset_names == mix.dataset_names and subset.weights == mix.weights
    head = DatasetAwareHead("arcface", dataset_num_classes=subset.dataset_num_classes)
    np.testing.assert_array_equal(np.asarray(head.dataset_ids(subset.labels)), subset.dataset_indices)
    starts = np.searchsorted(subset.dataset_indices, [0, 1, 2, 3])
    assert [subset.record_range(k) for k in range(3)] == [range(starts[k], starts[k + 1]) for k in range(3)]
    expected = [mix.read_bytes(int(i)) for i in records]
    assert _read_all(subset, range(len(subset)), batch=3) == expected
    assert subset.describe(0).startswith("a: a record")


def test_subset_of_a_mix_refuses_to_empty_a_dataset(three):
    # no class of a, b has 3 images; class 0 of d has
    mix = combine(three[:2] + [_make("d", [0, 1, 0, 0], 12)])
    with pytest.raises(
        ValueError,
        match=r"no class with >= 3 images or no image of dataset\(s\) a \(0 classes, 0 images left\), "
        r"b \(0 classes, 0 images left\); .* Cut each source before combining",
    ):
        cut_long_tail(mix, 3)
    # a class kept explicitly but without images leaves b with a class and no record
    with pytest.raises(ValueError, match=r"dataset\(s\) b \(1 classes, 0 images left\)"):
        ClassSubset(mix, [0, 6, 7])
    plain = cut_long_tail(three[0], 2)
    assert not hasattr(plain, "dataset_indices")
    with pytest.raises(ValueError, match="not a mix of datasets"):
        plain.record_range(0)
