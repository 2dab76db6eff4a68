"""Sharded TFRecord writer/reader, open_source and the `kerasface data` command."""

import argparse
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from kerasface.data.record_source import RecordSource
from kerasface.data.tfrecord_source import (
    DATASET_FILE,
    INDEX_FILE,
    SKIPPED_FILE,
    TFRecordSource,
    build_tfrecord_index,
    crc32c,
    masked_crc32c,
)
from kerasface.data.tfrecord_writer import iter_source_records, write_tfrecords

NUM_CLASSES = 5


class MemorySource(RecordSource):
    """In-memory encoded images; ``read`` is a chunked numpy_function like real file sources."""

    read_chunk = 8

    def __init__(self, blobs, labels, num_classes=None, class_names=None, broken=()):
        self.blobs = list(blobs)
        self.broken = set(broken)  # read_bytes raises for these; read returns b""
        super().__init__(np.asarray(labels), num_classes=num_classes, class_names=class_names, name="memory")

    def read(self, indices):
        def fetch(ids):
            return np.array([b"" if i in self.broken else self.blobs[i] for i in ids.tolist()], dtype=object)

        data = tf.numpy_function(fetch, [indices], tf.string)
        data.set_shape(indices.shape)
        return data

    def describe(self, index):
        return f"memory record {index}"

    def read_bytes(self, index):
        if index in self.broken:
            raise OSError(f"memory record {index}: device error")
        return self.blobs[index]


class RaisingSource(MemorySource):
    """One record per read, and reading record ``bad`` raises in-graph (like a missing file)."""

    read_chunk = 1

    def __init__(self, blobs, labels, bad):
        super().__init__(blobs, labels, broken=(bad,))
        self.bad = bad

    def read(self, indices):
        def fetch(ids):
            if int(ids[0]) == self.bad:
                raise OSError("gone")
            return np.array([self.blobs[int(ids[0])]], dtype=object)

        data = tf.numpy_function(fetch, [indices], tf.string)
        data.set_shape(indices.shape)
        return data


def _jpegs(n, seed=0):
    rng = np.random.default_rng(seed)
    return [
        tf.io.encode_jpeg(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).numpy() for _ in range(n)
    ]


@pytest.fixture(scope="module")
def memory_data():
    """40 records, 5 classes; record 7 is empty and record 19 is not an image."""
    blobs = _jpegs(40)
    blobs[7] = b""
    blobs[19] = b"GIF-not-really, just text"
    labels = np.arange(40) % NUM_CLASSES
    names = [f"person_{c}" for c in range(NUM_CLASSES)]
    return MemorySource(blobs, labels, class_names=names)


@pytest.fixture(scope="module")
def converted(memory_data, tmp_path_factory):
    dst = tmp_path_factory.mktemp("conv") / "ds"
    summary = write_tfrecords(memory_data, dst, shards=4, dataset_index=3)
    return dst, summary


def _copy(dst, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(dst, copy)
    return copy


def _read_all(source, indices):
    dataset = tf.data.Dataset.from_tensor_slices(np.asarray(indices, np.int64))
    dataset = dataset.batch(source.read_chunk).map(source.read).unbatch()
    return list(dataset.as_numpy_iterator())


def test_crc32c_known_values():
    # RFC 3720 check value, and TensorFlow's masking of it.
    assert crc32c(b"123456789") == 0xE3069283
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_round_trip_bytes_labels_shards_and_metadata(memory_data, converted):
    dst, summary = converted
    good = [i for i in range(40) if i not in (7, 19)]
    source = TFRecordSource(dst)
    assert source.num_records == 38 == summary.num_records
    assert source.num_classes == NUM_CLASSES
    assert source.class_names == memory_data.class_names
    np.testing.assert_array_equal(source.record_keys, good)
    np.testing.assert_array_equal(source.labels, memory_data.labels[good])
    for i, key in enumerate(good):
        assert source.read_bytes(i) == memory_data.blobs[key]
    # balanced shards: 38 records over 4 files
    assert sorted(source.shard_num_records) == [9, 9, 10, 10]
    with open(dst / DATASET_FILE) as f:
        meta = json.load(f)
    assert meta["format_version"] == 1 and meta["num_records"] == 38
    assert meta["dataset_index"] == 3 and meta["skipped"] == 2
    assert meta["shards"] == [
        {"file": f"part-{k:05d}-of-00004.tfrecord", "num_records": n}
        for k, n in enumerate(source.shard_num_records)
    ]
    assert sorted(os.listdir(dst)) == sorted(
        [DATASET_FILE, INDEX_FILE, SKIPPED_FILE] + [s["file"] for s in meta["shards"]]
    )
    # no temporary folder left beside the result
    assert os.listdir(dst.parent) == ["ds"]
    # every Example carries the four features
    first = next(iter(tf.data.TFRecordDataset(str(dst / meta["shards"][0]["file"])))).numpy()
    example = tf.train.Example.FromString(first)
    features = example.features.feature
    assert features["dataset"].int64_list.value[0] == 3
    assert features["key"].int64_list.value[0] == 0
    assert features["label"].int64_list.value[0] == memory_data.labels[0]


def test_bad_records_are_skipped_listed_and_counted(converted):
    dst, summary = converted
    assert summary.num_skipped == 2
    assert [(i, where) for i, where, _ in summary.skipped] == [
        (7, "memory record 7"),
        (19, "memory record 19"),
    ]
    lines = (dst / SKIPPED_FILE).read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("7\tmemory record 7\tempty record")
    assert lines[1].startswith("19\tmemory record 19\tnot an image")
    assert "skipped 2 bad records" in summary.describe()


def test_a_read_that_raises_costs_only_its_record():
    blobs = _jpegs(6, seed=1)
    source = RaisingSource(blobs, [0, 0, 1, 1, 2, 2], bad=3)
    results = list(iter_source_records(source))
    assert [r[0] for r in results] == list(range(6))
    assert [r[1] for r in results] == blobs[:3] + [None] + blobs[4:]
    assert "device error" in results[3][2]


def test_a_record_empty_only_in_graph_is_kept_from_read_bytes():
    blobs = _jpegs(3, seed=4)
    source = MemorySource(blobs, [0, 1, 2])
    source.read = lambda indices: tf.where(indices == 1, b"", tf.gather(tf.constant(blobs), indices))
    assert [r[1] for r in iter_source_records(source)] == blobs


def test_truncated_jpeg_is_caught_without_decoding_every_record(tmp_path):
    blobs = _jpegs(4, seed=2)
    blobs[2] = blobs[2][: len(blobs[2]) // 2]
    summary = write_tfrecords(MemorySource(blobs, [0, 1, 2, 3]), tmp_path / "ds", shards=1)
    assert [(i, reason.split(" (")[0]) for i, _, reason in summary.skipped] == [(2, "truncated JPEG")]


def test_tf_data_read_equals_read_bytes_in_any_order(converted):
    dst, _ = converted
    source = TFRecordSource(dst)
    n = source.num_records
    expected = [source.read_bytes(i) for i in range(n)]
    assert _read_all(source, range(n)) == expected
    order = np.random.default_rng(0).permutation(n)
    assert _read_all(source, order) == [expected[i] for i in order]
    # out-of-range indices give b"" instead of failing the chunk
    out = source.read(tf.constant([0, -1, n, 1], tf.int64)).numpy().tolist()
    assert out == [expected[0], b"", b"", expected[1]]


def _stream(source, **kwargs):
    dataset = source.streaming_dataset(**kwargs)
    return [(img, int(label), int(ds)) for img, label, ds in dataset.as_numpy_iterator()]


def test_streaming_yields_every_record_once_per_epoch(memory_data, converted):
    dst, _ = converted
    source = TFRecordSource(dst)
    expected = sorted((memory_data.blobs[k], int(memory_data.labels[k]), 3) for k in source.record_keys)
    first = _stream(source, shuffle_buffer=16, seed=1)
    assert sorted(first) == expected
    assert first != sorted(first, key=lambda r: r[1])  # shuffled, not label-ordered
    assert sorted(_stream(source, shuffle_buffer=0)) == expected


def test_sharded_streaming_is_disjoint_and_complete(converted):
    dst, _ = converted
    source = TFRecordSource(dst)
    a = _stream(source, shuffle_buffer=8, seed=0, num_shards=2, shard_index=0)
    b = _stream(source, shuffle_buffer=8, seed=0, num_shards=2, shard_index=1)
    assert not {r[0] for r in a} & {r[0] for r in b}
    assert sorted(a + b) == sorted(_stream(source, shuffle_buffer=0))
    assert len(a) == source.shard_num_records[0] + source.shard_num_records[2]
    with pytest.raises(ValueError, match="only 4 non-empty shard files"):
        source.streaming_dataset(num_shards=5)


def test_shuffle_seed_permutes_records_and_keys_map_back(memory_data, tmp_path):
    write_tfrecords(memory_data, tmp_path / "ds", shards=3, shuffle_seed=5)
    source = TFRecordSource(tmp_path / "ds")
    keys = source.record_keys
    assert sorted(keys.tolist()) == [i for i in range(40) if i not in (7, 19)]
    assert keys.tolist() != sorted(keys.tolist())
    for i, key in enumerate(keys):
        assert source.read_bytes(i) == memory_data.blobs[key]
        assert source.labels[i] == memory_data.labels[key]


def test_corrupted_length_gives_empty_read_and_named_error(converted, tmp_path):
    dst = _copy(converted[0], tmp_path)
    source = TFRecordSource(dst)
    victim = 5
    shard_path, in_shard, offset = source.position(victim)
    with open(shard_path, "r+b") as f:
        f.seek(offset + 1)  # second byte of the uint64 length
        f.write(b"\x7f")
    out = _read_all(source, range(source.num_records))
    assert out[victim] == b""
    assert all(out[i] for i in range(source.num_records) if i != victim)
    where = rf"{os.path.basename(shard_path)} record {in_shard} \(byte {offset}\)"
    with pytest.raises(ValueError, match=rf"{where}: length checksum"):
        source.read_bytes(victim)


def test_corrupted_payload_is_detected(converted, tmp_path):
    dst = _copy(converted[0], tmp_path)
    source = TFRecordSource(dst)
    victim = 9
    image = source.read_bytes(victim)
    shard_path, in_shard, offset = source.position(victim)
    with open(shard_path, "r+b") as f:
        f.seek(offset + 12)  # first byte of the Example: its field tag
        f.write(b"\xff")
    # read slices the image where the index says it is: the intact image still comes out
    assert _read_all(source, [victim, 0])[0] == image
    with pytest.raises(ValueError, match=rf"record {in_shard} \(byte {offset}\): data checksum mismatch"):
        source.read_bytes(victim)
    assert source.diagnose(victim).startswith(shard_path)


def test_open_errors_name_the_file(converted, tmp_path):
    dst = _copy(converted[0], tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TFRecordSource(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=rf"{DATASET_FILE} does not exist"):
        TFRecordSource(tmp_path)
    meta_path = dst / DATASET_FILE
    meta = json.loads(meta_path.read_text())
    shard = dst / meta["shards"][1]["file"]

    def with_meta(**changes):
        meta_path.write_text(json.dumps({**meta, **changes}))

    with_meta(num_records=37)
    with pytest.raises(ValueError, match="has 38 entries, but .*num_records = 37"):
        TFRecordSource(dst)
    with_meta(num_classes=3)
    with pytest.raises(ValueError, match="label [34], outside the 3 classes"):
        TFRecordSource(dst)
    with_meta(shards=[dict(s, num_records=s["num_records"] + (k == 0)) for k, s in enumerate(meta["shards"])])
    with pytest.raises(ValueError, match="part-00000-of-00004.tfrecord has num_records = 11"):
        TFRecordSource(dst)
    with_meta()
    index_path = dst / INDEX_FILE
    original = dict(np.load(index_path))
    np.savez(index_path, **dict(original, image_offset=original["image_offset"] + original["length"]))
    with pytest.raises(ValueError, match=r"index.npz: record 0: its image .* lies outside"):
        TFRecordSource(dst)
    np.savez(index_path, **dict(original, image_offset=original["image_offset"] - 1))
    with pytest.raises(ValueError, match="the index places the image at byte"):
        TFRecordSource(dst).read_bytes(0)
    np.savez(index_path, **original)
    size = shard.stat().st_size
    with open(shard, "r+b") as f:
        f.truncate(size - 10)
    with pytest.raises(ValueError, match=rf"part-00001-of-00004.tfrecord is {size - 10} bytes.*truncated"):
        TFRecordSource(dst)
    shard.unlink()
    with pytest.raises(FileNotFoundError, match="part-00001-of-00004.tfrecord"):
        TFRecordSource(dst)


def test_interrupted_conversion_leaves_nothing(memory_data, tmp_path):
    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_tfrecords(memory_data, tmp_path / "ds", shards=2, progress=interrupt)
    assert os.listdir(tmp_path) == []
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        write_tfrecords(memory_data, tmp_path / "other", shards=2)
    with pytest.raises(FileExistsError, match="no dataset.json"):
        write_tfrecords(memory_data, tmp_path / "other", shards=2, overwrite=True)
    write_tfrecords(memory_data, tmp_path / "ds", shards=2)
    write_tfrecords(memory_data, tmp_path / "ds", shards=3, overwrite=True)
    assert TFRecordSource(tmp_path / "ds").shard_files[0].endswith("part-00000-of-00003.tfrecord")
    assert sorted(os.listdir(tmp_path)) == ["ds", "other"]


def _write_foreign(path, records):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for features in records:
            writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def test_foreign_tfrecords_are_indexed_and_read(tmp_path):
    from kerasface.data.open_source import open_source

    blobs = _jpegs(7, seed=3)
    folder = tmp_path / "foreign"
    folder.mkdir()
    def face(image, label=None):
        features = {"image/encoded": _bytes(image)}
        if label is not None:
            features["image/class/label"] = _int(label)
        return features

    _write_foreign(folder / "a.tfrecord", [face(b, i % 3) for i, b in enumerate(blobs[:4])])
    # the middle record of b has no label: skipped and listed
    _write_foreign(folder / "b.tfrecord", [face(blobs[4], 4), face(blobs[5]), face(blobs[6], 1)])
    index = build_tfrecord_index(str(folder / "*.tfrecord"))
    assert (index["image_key"], index["label_key"]) == ("image/encoded", "image/class/label")
    assert index["label"].tolist() == [0, 1, 2, 0, 4, 1]
    assert [reason for _, reason in index["skipped"]] == ["no `image/class/label` feature"]
    first_of_b = 4  # b.tfrecord's record 0 is the 5th indexed record
    skipped_at = index["offset"][first_of_b] + 16 + index["length"][first_of_b]
    assert index["skipped"][0][0] == f"{folder / 'b.tfrecord'} record 1 (byte {skipped_at})"

    source = open_source(folder)
    assert isinstance(source, TFRecordSource) and source.num_classes == 5
    kept = blobs[:5] + blobs[6:]
    assert _read_all(source, range(6)) == kept
    assert [source.read_bytes(i) for i in range(6)] == kept
    assert sorted(_stream(source, shuffle_buffer=0)) == sorted(zip(kept, [0, 1, 2, 0, 4, 1], [0] * 6))
    # saved index: reopened without a scan
    saved = TFRecordSource.from_files(sorted(folder.glob("*.tfrecord")), index_dir=tmp_path / "idx")
    assert TFRecordSource(tmp_path / "idx").labels.tolist() == [0, 1, 2, 0, 4, 1] == saved.labels.tolist()

    _write_foreign(tmp_path / "bad.tfrecord", [{"img_bytes": _bytes(blobs[0]), "id": _int(0)}])
    message = r"bad.tfrecord record 0 \(byte 0\): no image feature.*\['id', 'img_bytes'\]"
    with pytest.raises(ValueError, match=message):
        build_tfrecord_index(tmp_path / "bad.tfrecord")
    named = build_tfrecord_index(tmp_path / "bad.tfrecord", image_key="img_bytes", label_key="id")
    assert named["label"].tolist() == [0]


def test_foreign_broken_frame_names_file_and_offset(tmp_path):
    path = tmp_path / "t.tfrecord"
    _write_foreign(path, [{"image": _bytes(b), "label": _int(0)} for b in _jpegs(2)])
    data = bytearray(path.read_bytes())
    second = 16 + int.from_bytes(data[:8], "little")
    data[second + 8] ^= 0xFF  # length checksum of record 1
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"t.tfrecord record 1 \(byte {second}\): length checksum mismatch"):
        build_tfrecord_index(path)


def test_open_source_dispatch(converted, tmp_path):
    from kerasface.data.folder_source import FolderSource
    from kerasface.data.open_source import open_source

    assert isinstance(open_source(converted[0]), TFRecordSource)
    folder = tmp_path / "faces" / "alice"
    folder.mkdir(parents=True)
    (folder / "1.jpg").write_bytes(_jpegs(1)[0])
    assert isinstance(open_source(tmp_path / "faces"), FolderSource)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        open_source(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="notes.txt: not a training-data file"):
        open_source(tmp_path / "notes.txt")


def _cli(argv):
    """Run `kerasface data ...` through main() when wired, else through this module directly."""
    from kerasface.cli import main as cli_main

    if "data" in getattr(cli_main, "COMMANDS", {}):
        return cli_main.main(["data", *argv])
    from kerasface.cli import data_command

    parser = argparse.ArgumentParser(prog="kerasface data")
    data_command.add_arguments(parser)
    return data_command.run(parser.parse_args(argv))


def test_cli_convert_and_info(tmp_path, capsys):
    from kerasface.data.synthetic_faces import write_synthetic_faces

    write_synthetic_faces(tmp_path / "faces", num_identities=3, images_per_identity=4, workers=1)
    (tmp_path / "faces" / "id_0001" / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    assert _cli(["convert", str(tmp_path / "faces"), str(tmp_path / "tfr"), "--shards", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "wrote 12 of 13 records" in out and "skipped 1 bad record" in out and "zz_broken.jpg" in out
    assert _cli(["info", str(tmp_path / "tfr")]) == 0
    out = capsys.readouterr().out
    assert "TFRecordSource" in out and "records:  12" in out and "classes:  3" in out
    assert "images per class: min 4, median 4, max 4" in out
    assert "part-00001-of-00002.tfrecord: 6 records" in out
    assert "skipped at conversion: 1 records" in out

    rio = str(tmp_path / "rio")
    assert _cli(["convert", str(tmp_path / "tfr"), rio, "--format", "recordio", "--quiet"]) == 0
    assert "wrote 12 of 12 records" in capsys.readouterr().out
    idx_lines = (tmp_path / "rio" / "train.idx").read_text().splitlines()
    assert len(idx_lines) == 1 + 12 + 3  # header, images, one identity record per class
    assert (tmp_path / "rio" / "property").read_text().strip() == "3,112,112"
    label_map = json.loads((tmp_path / "rio" / "label_map.json").read_text())
    assert label_map == {"id_0000": 0, "id_0001": 1, "id_0002": 2}


@pytest.mark.slow
def test_real_faces_round_trip_and_throughput(tmp_path):
    """Converts celeba_dev/train and reports records/s of the chunked tf.data read."""
    import time

    from kerasface.data.folder_source import FolderSource
    from kerasface.testing.shared_data import require_shared

    root = require_shared("data/celeba_dev/train")
    folder = FolderSource(root)
    summary = write_tfrecords(folder, tmp_path / "celeba", shards=16)
    assert summary.num_skipped == 0
    source = TFRecordSource(tmp_path / "celeba")
    np.testing.assert_array_equal(source.labels, folder.labels)
    dataset = tf.data.Dataset.range(source.num_records).batch(64)
    dataset = dataset.map(source.read, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        blobs = np.concatenate([batch.numpy() for batch in dataset.batch(512)])
        rates.append(len(blobs) / (time.perf_counter() - start))
    print(f"\nTFRecordSource.read: {max(rates):.0f} records/s (best of 3) over {len(blobs)} faces")
    assert list(blobs[::97]) == [folder.read_bytes(i) for i in range(0, folder.num_records, 97)]


def test_streaming_past_a_corrupted_record_warns_and_goes_on(converted, tmp_path, capfd):
    dst = _copy(converted[0], tmp_path)
    source = TFRecordSource(dst)
    victim = 6  # round robin over 4 shards: record 1 of shard 2
    shard_path, in_shard, offset = source.position(victim)
    assert in_shard == 1
    with open(shard_path, "r+b") as f:
        f.seek(offset + 40)  # inside the image bytes: only the data checksum notices
        byte = f.read(1)
        f.seek(offset + 40)
        f.write(bytes([byte[0] ^ 0xFF]))
    records = _stream(source, shuffle_buffer=0)
    lost = source.shard_num_records[2] - 1  # the reader cannot go on past the bad record
    assert len(records) == source.num_records - lost
    err = capfd.readouterr().err
    assert f"{shard_path}\": read 1 of its {source.shard_num_records[2]} records" in err
