"""MXNet RecordIO without MXNet: the writer's byte layout and RecordIOSource's reading/checks."""

import logging
import os
import pickle
import re
import struct

import numpy as np
import pytest
import tensorflow as tf

from kerasface.data.record_io_source import RecordIOSource, _parse_idx
from kerasface.data.record_io_writer import (
    RecordIOWriter,
    encode_record,
    pack_record,
    write_insightface_record_io,
)

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)


def _jpegs(n, seed=0, size=16):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return [tf.io.encode_jpeg(image).numpy() for image in images]


def _items(labels, seed=0):
    return list(zip(labels, _jpegs(len(labels), seed)))


def _walk_rec(path):
    """Independent sequential reader: [(offset, payload)] with split records joined."""
    data = open(path, "rb").read()
    records, position = [], 0
    while position < len(data):
        start, parts = position, []
        while True:
            magic, lrec = struct.unpack_from("<II", data, position)
            assert magic == MAGIC, f"bad magic at {position}"
            cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
            parts.append(data[position + 8 : position + 8 + length])
            position += 8 + (length + 3) // 4 * 4
            if cflag in (0, 3):
                break
        records.append((start, MAGIC_BYTES.join(parts)))
    return records


def _idx_lines(path):
    with open(path) as f:
        return [tuple(int(v) for v in line.split("\t")) for line in f.read().splitlines()]


def _write_idx(path, pairs):
    with open(path, "w") as f:
        f.writelines(f"{k}\t{o}\n" for k, o in pairs)


def _corrupt(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


# ---- writer ------------------------------------------------------------------------------


def test_writer_bytes_match_hand_packed_record(tmp_path):
    image = b"\xff\xd8\xff\xe0abcde"  # 9 bytes: IRHeader (24) + 9 = 33 -> 3 bytes of padding
    payload = pack_record(3, image, id=7, id2=9)
    expected_payload = struct.pack("<IfQQ", 0, 3.0, 7, 9) + image
    assert payload == expected_payload
    expected = struct.pack("<II", MAGIC, 33) + expected_payload + b"\x00\x00\x00"
    # MXNet's array label: flag = number of labels, header label 0, float32 labels follow.
    array_payload = pack_record([2.0, 0.5], b"xy")
    assert array_payload == struct.pack("<IfQQ2f", 2, 0.0, 0, 0, 2.0, 0.5) + b"xy"

    rec = tmp_path / "a.rec"
    with RecordIOWriter(rec) as writer:
        assert writer.write(5, payload) == 0
        assert writer.write(2, array_payload) == len(expected)
    data = rec.read_bytes()
    assert data[: len(expected)] == expected
    assert len(data) == len(expected) + 8 + 36  # 34-byte payload padded to 36
    assert (tmp_path / "a.idx").read_text() == f"5\t0\n2\t{len(expected)}\n"
    with RecordIOWriter(tmp_path / "b.rec") as writer:
        writer.write(1, b"x")
        with pytest.raises(ValueError, match="key 1 written twice"):
            writer.write(1, b"y")


def test_payload_with_magic_is_split_like_dmlc():
    a, b, c = b"AAAA", b"BBBBBBBB", b"CC"
    # Magic at aligned offsets 4 and 16 (and right after the second one at 20: an empty
    # middle part); an unaligned magic at 26 stays inside the last part.
    payload = a + MAGIC_BYTES + b + MAGIC_BYTES + MAGIC_BYTES + c + MAGIC_BYTES + b"Z"
    assert payload.find(MAGIC_BYTES, 24) == 26
    expected = (
        struct.pack("<II", MAGIC, (1 << 29) | 4)
        + a
        + struct.pack("<II", MAGIC, (2 << 29) | 8)
        + b
        + struct.pack("<II", MAGIC, (2 << 29) | 0)
        + struct.pack("<II", MAGIC, (3 << 29) | 7)
        + c
        + MAGIC_BYTES
        + b"Z"
        + b"\x00"
    )
    assert encode_record(payload) == expected
    # Payload ending in the magic: the last part is empty (cflag 3, length 0).
    assert encode_record(b"QQQQ" + MAGIC_BYTES) == (
        struct.pack("<II", MAGIC, (1 << 29) | 4) + b"QQQQ" + struct.pack("<II", MAGIC, 3 << 29)
    )
    assert encode_record(b"") == struct.pack("<II", MAGIC, 0)


# ---- reading insightface layout ---------------------------------------------------------


def test_insightface_round_trip(tmp_path):
    labels = [0, 0, 1, 3, 3, 3, 4]  # classes 2 and 5 have no images
    items = _items(labels)
    info = write_insightface_record_io(tmp_path, iter(items), num_classes=6)
    assert info["num_images"] == 7 and info["num_classes"] == 6
    assert (tmp_path / "property").read_text().strip() == "6,112,112"

    # Independent look at the file: record 0 = header [a, b), images, identity records.
    records = _walk_rec(tmp_path / "train.rec")
    assert [o for o, _ in records] == [o for _, o in _idx_lines(tmp_path / "train.idx")]
    assert [k for k, _ in _idx_lines(tmp_path / "train.idx")] == list(range(1 + 7 + 6))
    assert struct.unpack("<IfQQ2f", records[0][1]) == (2, 0.0, 0, 0, 8.0, 14.0)
    expected_ranges = [(1, 3), (3, 4), (4, 4), (4, 7), (7, 8), (8, 8)]
    for c, (start, end) in enumerate(expected_ranges):
        flag, _, _, _, s, e = struct.unpack("<IfQQ2f", records[8 + c][1])
        assert (flag, s, e) == (2, start, end)

    source = RecordIOSource(tmp_path)
    assert source.header == (8, 14)
    np.testing.assert_array_equal(source.identity_ranges, expected_ranges)
    assert source.identity_ranges.dtype == np.int64
    np.testing.assert_array_equal(source.labels, labels)
    assert source.labels.dtype == np.int32
    assert source.num_classes == 6 and source.class_names is None
    assert source.image_shape == (112, 112)
    np.testing.assert_array_equal(source.keys, np.arange(1, 8))
    for array in (source.keys, source.offsets, source.lengths):
        assert isinstance(array, np.ndarray) and array.dtype == np.int64
    np.testing.assert_array_equal(source.offsets, [o for o, _ in records[1:8]])
    np.testing.assert_array_equal(source.lengths, [len(p) for _, p in records[1:8]])
    assert source.broken_records.size == 0
    assert source.name == os.path.basename(tmp_path)

    got = source.read(tf.constant([6, 0, 3, 3], tf.int64)).numpy().tolist()
    assert got == [items[6][1], items[0][1], items[3][1], items[3][1]]
    assert source.read_bytes(2) == items[2][1]
    assert source.describe(2) == f"{tmp_path / 'train.rec'} record 3 (byte {records[3][0]})"
    assert source.diagnose(2) is None
    # The same source found from the .rec path, and after a pickle round trip.
    again = pickle.loads(pickle.dumps(RecordIOSource(tmp_path / "train.rec")))
    assert again.read_bytes(6) == items[6][1] and again.num_classes == 6
    # Without `property`, header record 0 declares the classes (5 would be max label + 1).
    os.remove(tmp_path / "property")
    source = RecordIOSource(tmp_path)
    assert source.num_classes == 6 and source.property_path is None


def test_tf_data_pipeline_reads_every_record(tmp_path):
    labels = np.repeat(np.arange(10), 7)  # 70 records: two chunks of 64
    items = _items(labels.tolist(), seed=1)
    write_insightface_record_io(tmp_path, items)
    source = RecordIOSource(tmp_path)
    assert source.read_chunk == 64
    dataset = tf.data.Dataset.range(len(source)).batch(64).map(source.read).unbatch()
    assert dataset.element_spec.dtype == tf.string
    assert [x.numpy() for x in dataset] == [image for _, image in items]
    parallel = (
        tf.data.Dataset.range(len(source))
        .shuffle(70, seed=0)
        .batch(8)
        .map(lambda i: (i, source.read(i)), num_parallel_calls=4)
        .unbatch()
    )
    for index, data in parallel:
        assert data.numpy() == items[int(index)][1]


def test_mxnet_layout_built_by_hand(tmp_path):
    """A .rec/.idx/property written with struct only, by MXNet + insightface conventions."""
    jpegs = _jpegs(5, seed=2)
    labels = [0, 0, 1, 1, 1]
    payloads = [struct.pack("<IfQQ2f", 2, 0.0, 0, 0, 6.0, 8.0)]  # header: images 1..5, ids 6..7
    payloads += [struct.pack("<IfQQ", 0, float(c), k + 1, 0) + j for k, (c, j) in enumerate(
        zip(labels, jpegs))]
    payloads += [struct.pack("<IfQQ2f", 2, 0.0, 0, 0, 1.0, 3.0)]
    payloads += [struct.pack("<IfQQ2f", 2, 0.0, 0, 0, 3.0, 6.0)]
    rec, idx = bytearray(), []
    for key, payload in enumerate(payloads):
        idx.append(f"{key}\t{len(rec)}\n")
        rec += struct.pack("<II", MAGIC, len(payload)) + payload
        rec += b"\x00" * (-len(payload) % 4)
    hand = tmp_path / "hand"
    hand.mkdir()
    (hand / "train.rec").write_bytes(bytes(rec))
    (hand / "train.idx").write_text("".join(idx))
    (hand / "property").write_text("2,112,112")

    source = RecordIOSource(hand)
    np.testing.assert_array_equal(source.labels, labels)
    np.testing.assert_array_equal(source.identity_ranges, [(1, 3), (3, 6)])
    assert [source.read_bytes(i) for i in range(5)] == jpegs
    assert source.read(tf.range(5, dtype=tf.int64)).numpy().tolist() == jpegs

    # The writer produces exactly these bytes for the same items.
    written = tmp_path / "written"
    write_insightface_record_io(written, zip(labels, jpegs))
    assert (written / "train.rec").read_bytes() == bytes(rec)
    assert (written / "train.idx").read_text() == "".join(idx)


def test_records_without_header_and_split_payloads(tmp_path):
    jpegs = _jpegs(4, seed=3)
    # An image whose bytes hold the magic word at aligned positions of the payload (24-byte
    # IRHeader + 8 bytes of labels = 32, so image offset 8 is payload offset 40).
    split_image = jpegs[1][:8] + MAGIC_BYTES + jpegs[1][8:16] + MAGIC_BYTES + jpegs[1][16:]
    rec = tmp_path / "data.rec"
    with RecordIOWriter(rec) as writer:  # keys neither from 0 nor in order, no record 0
        writer.write(10, pack_record(2, jpegs[0], id=10))
        writer.write(3, pack_record([1.0, 7.0], split_image))  # label in labels[0] (flag 2)
        writer.write(7, pack_record(0, jpegs[2]))
        writer.write(0, pack_record(1, jpegs[3]))  # key 0 is an image here, not a header
    # 4 records, the split one in 3 parts: 6 part headers; the image's own magics are gone.
    assert rec.read_bytes().count(MAGIC_BYTES) == 6
    source = RecordIOSource(rec)
    assert source.header is None and source.identity_ranges is None
    assert source.property_path is None and source.num_classes == 3
    np.testing.assert_array_equal(source.keys, [0, 3, 7, 10])
    np.testing.assert_array_equal(source.labels, [1, 1, 0, 2])
    expected = [jpegs[3], split_image, jpegs[2], jpegs[0]]
    assert source.read(tf.constant([0, 1, 2, 3], tf.int64)).numpy().tolist() == expected
    assert source.read_bytes(1) == split_image
    with pytest.raises((IndexError, tf.errors.InvalidArgumentError), match="index 4 out of range"):
        source.read(tf.constant([4], tf.int64))
    # An .idx line pointing at the second part of the split record is not a record start.
    idx = tmp_path / "data.idx"
    second_part = int(source.offsets[1]) + 8 + 40
    idx.write_text(idx.read_text() + f"99\t{second_part}\n")
    with pytest.raises(
        ValueError, match=rf"data.idx: line 5: offset {second_part} of key 99 does not point at "
        r"a record start .*continuation flag 2"
    ):
        RecordIOSource(rec)


def test_crlf_and_spaced_idx_parse_like_strict(tmp_path):
    strict = tmp_path / "strict.idx"
    strict.write_bytes(b"0\t0\n1\t40\n12\t1234567890123\n")
    loose = tmp_path / "loose.idx"
    loose.write_bytes(b"0\t0\r\n 1\t40 \r\n12\t1234567890123")
    for path in (strict, loose):
        keys, offsets = _parse_idx(path)
        assert keys.dtype == offsets.dtype == np.int64
        np.testing.assert_array_equal(keys, [0, 1, 12])
        np.testing.assert_array_equal(offsets, [0, 40, 1234567890123])


# ---- damaged data -------------------------------------------------------------------------


def test_broken_magic_record_reads_empty_and_is_diagnosed(tmp_path, caplog):
    items = _items([0, 0, 1, 1, 1, 2])
    write_insightface_record_io(tmp_path, items)
    offsets = dict(_idx_lines(tmp_path / "train.idx"))
    _corrupt(tmp_path / "train.rec", offsets[4], b"\x12\x34\x56\x78")  # index 3
    with caplog.at_level(logging.WARNING):
        source = RecordIOSource(tmp_path)
    assert f"record 4 (byte {offsets[4]})" in caplog.text and "1 damaged record" in caplog.text
    np.testing.assert_array_equal(source.broken_records, [3])
    np.testing.assert_array_equal(source.labels, [0, 0, 1, 1, 1, 2])  # from identity ranges
    assert source.lengths[3] == -1
    got = source.read(tf.range(6, dtype=tf.int64)).numpy().tolist()
    assert got == [image for _, image in items[:3]] + [b""] + [image for _, image in items[4:]]
    message = source.diagnose(3)
    assert f"train.rec record 4 (byte {offsets[4]})" in message
    assert "bad magic 0x78563412" in message
    with pytest.raises(ValueError, match=rf"record 4 \(byte {offsets[4]}\): bad magic"):
        source.read_bytes(3)
    assert source.diagnose(2) is None


def test_length_past_eof_and_truncated_file(tmp_path):
    items = _items([0, 1, 1, 2])
    rec = tmp_path / "x.rec"
    with RecordIOWriter(rec) as writer:
        for key, (label, image) in enumerate(items):
            writer.write(key + 1, pack_record(label, image))
    offsets = dict(_idx_lines(tmp_path / "x.idx"))
    size = rec.stat().st_size
    _corrupt(rec, offsets[2] + 4, struct.pack("<I", 99999))  # key 2: length runs past EOF
    with open(rec, "r+b") as f:  # key 4: the file ends inside it
        f.truncate(size - 10)
    source = RecordIOSource(rec)
    np.testing.assert_array_equal(source.broken_records, [1, 3])
    # Damaged records without identity ranges take the preceding record's label.
    np.testing.assert_array_equal(source.labels, [0, 0, 1, 1])
    got = source.read(tf.range(4, dtype=tf.int64)).numpy().tolist()
    assert got == [items[0][1], b"", items[2][1], b""]
    with pytest.raises(ValueError, match=r"record 2 .*record length 99999 runs past the end"):
        source.read_bytes(1)
    assert f"(size {size - 10})" in source.diagnose(3) and "record 4" in source.diagnose(3)


def test_idx_that_does_not_match_the_rec(tmp_path):
    write_insightface_record_io(tmp_path, _items([0, 0, 1]))
    idx = tmp_path / "train.idx"
    pairs = _idx_lines(idx)
    size = (tmp_path / "train.rec").stat().st_size
    name = re.escape(str(idx))

    def check(bad_pairs, pattern, text=None):
        if text is None:
            _write_idx(idx, bad_pairs)
        else:
            idx.write_text(text)
        with pytest.raises(ValueError, match=pattern):
            RecordIOSource(tmp_path)

    beyond = pairs[:2] + [(2, size + 4)] + pairs[3:]
    check(beyond, rf"{name}: line 3: offset {size + 4} of key 2 is beyond the end of .*size {size}")
    inside = pairs[:2] + [(2, pairs[2][1] + 8)] + pairs[3:]
    check(inside, rf"{name}: line 3: offset {pairs[2][1] + 8} of key 2 does not point at a record")
    unaligned = pairs[:2] + [(2, pairs[2][1] + 2)] + pairs[3:]
    check(unaligned, rf"{name}: line 3: offset {pairs[2][1] + 2} of key 2 does not point at a")
    duplicate = pairs + [(1, pairs[1][1])]
    check(duplicate, rf"{name}: line {len(pairs) + 1}: duplicate key 1 \(also on line 2")
    lines = "".join(f"{k}\t{o}\n" for k, o in pairs).splitlines(keepends=True)
    check(None, rf"{name}: line 2: expected `key<TAB>offset`", lines[0] + "1 40\n" + "".join(
        lines[2:]))
    check(None, rf"{name}: line 4: expected", "".join(lines[:3]) + "3\tabc\n" + "".join(lines[4:]))
    check(None, rf"{name}: the .idx is empty", "\n")
    missing = [p for p in pairs if p[0] != 2]
    check(missing, rf"{name}: header record 0 .* declares image keys 1..3, but key 2 is not")


def test_identity_range_disagreeing_with_image_label(tmp_path):
    jpegs = _jpegs(3, seed=4)
    with RecordIOWriter(tmp_path / "train.rec") as writer:
        writer.write(0, pack_record([4, 6], b""))
        writer.write(1, pack_record(0, jpegs[0]))
        writer.write(2, pack_record(0, jpegs[1]))
        writer.write(3, pack_record(1, jpegs[2]))
        writer.write(4, pack_record([1, 2], b""))  # says key 2 is class 1, its header says 0
        offset = writer.write(5, pack_record([2, 4], b""))
    with pytest.raises(
        ValueError, match=rf"record 2 \(byte \d+\): its header label 0 disagrees with identity "
        rf"record 5 \(byte {offset}\)"
    ):
        RecordIOSource(tmp_path)


def test_label_outside_declared_range(tmp_path):
    items = _items([0, 1, 2, 2])
    write_insightface_record_io(tmp_path, items)
    offsets = dict(_idx_lines(tmp_path / "train.idx"))
    (tmp_path / "property").write_text("2,112,112")
    with pytest.raises(
        ValueError,
        match=rf"train.rec record 3 \(byte {offsets[3]}\): label 2 is outside the class range "
        rf"0..1 \(declared by .*property\); 2 such",
    ):
        RecordIOSource(tmp_path)
    (tmp_path / "property").write_text("two,112,112")
    with pytest.raises(ValueError, match=r"property: expected one line `num_classes,height"):
        RecordIOSource(tmp_path)
    with RecordIOWriter(tmp_path / "neg.rec") as writer:
        writer.write(0, pack_record(1, items[0][1]))
        offset = writer.write(1, pack_record(-1, items[1][1]))
    os.remove(tmp_path / "property")
    with pytest.raises(ValueError, match=rf"neg.rec record 1 \(byte {offset}\): label -1 is outs"):
        RecordIOSource(tmp_path / "neg.rec")


def test_missing_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.rec"))):
        RecordIOSource(tmp_path / "nope.rec")
    with pytest.raises(FileNotFoundError, match=rf"{re.escape(str(tmp_path))} has no train.rec"):
        RecordIOSource(tmp_path)
    write_insightface_record_io(tmp_path, _items([0]))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "other.idx"))):
        RecordIOSource(tmp_path, idx_path=tmp_path / "other.idx")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "prop"))):
        RecordIOSource(tmp_path, property_path=tmp_path / "prop")
    os.remove(tmp_path / "train.idx")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "train.idx"))):
        RecordIOSource(tmp_path)
    with pytest.raises(ValueError, match="grouped by label in ascending order; item 1 has label 0"):
        write_insightface_record_io(tmp_path / "w", _items([1, 0]))
