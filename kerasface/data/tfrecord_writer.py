"""Write any record source as balanced TFRecord shards with a random-access index."""

import dataclasses
import functools
import logging
import numbers
import os
import shutil
import time
import uuid

import numpy as np
import tensorflow as tf

from kerasface.data.bad_record_tracker import diagnose_image_bytes, has_image_header
from kerasface.data.record_source import RecordSource
from kerasface.data.tfrecord_source import (
    DATASET_FILE,
    DATASET_KEY,
    INDEX_ARRAYS,
    RECORD_OVERHEAD,
    SKIPPED_FILE,
    write_index_files,
)

logger = logging.getLogger(__name__)

_MAX_NAMED = 20
# Records handed from tf.data to the Python writing loop at a time: iterating a dataset in
# Python costs tens of microseconds per element, so the loop takes large batches.
_PYTHON_BATCH = 256


@dataclasses.dataclass
class ConversionSummary:
    """What a conversion wrote and what it had to skip.

    Attributes:
        destination: the written dataset folder.
        format: ``"tfrecord"`` or ``"recordio"``.
        num_source_records: records in the source.
        num_records: records written.
        skipped: ``[(source index, source.describe(index), reason)]`` of records not written.
        shards: ``[(file name, records)]`` of the written files.
        seconds: wall time of the conversion.
    """

    destination: str
    format: str
    num_source_records: int
    num_records: int
    skipped: list
    shards: list
    seconds: float

    @property
    def num_skipped(self):
        return len(self.skipped)

    def describe(self, max_listed=_MAX_NAMED):
        """A few human lines: counts, speed, and the first skipped records with their reasons."""
        rate = self.num_source_records / self.seconds if self.seconds > 0 else float("inf")
        lines = [
            f"wrote {self.num_records} of {self.num_source_records} records to {self.destination} "
            f"({self.format}, {len(self.shards)} file{'s' if len(self.shards) != 1 else ''}) in "
            f"{self.seconds:.1f} s ({rate:.0f} records/s)"
        ]
        if self.skipped:
            lines.append(f"skipped {self.num_skipped} bad record{'s' if self.num_skipped != 1 else ''}:")
            for _, where, reason in self.skipped[:max_listed]:
                lines.append(f"  {where}: {reason}")
            if self.num_skipped > max_listed:
                lines.append(
                    f"  ... ({self.num_skipped - max_listed} more, all in "
                    f"{os.path.join(self.destination, SKIPPED_FILE)})"
                )
        else:
            lines.append("skipped 0 records")
        return "\n".join(lines)


def check_image_bytes(data):
    """Why ``data`` is not an encoded image, or None; a header check, decoding only suspects.

    Decoding every image of a multi-million record conversion would dominate its time, so
    only records that fail a cheap test are decoded (by ``diagnose_image_bytes``): no known
    leading bytes, or a JPEG / PNG without its end marker (truncated file).
    """
    if not data:
        return "empty record (0 bytes)"
    if not has_image_header(data):
        return f"not an image (starts with {bytes(data[:8])!r})"
    if data.startswith(b"\xff\xd8\xff"):
        suspect = not data.rstrip(b"\x00").endswith(b"\xff\xd9")
    elif data.startswith(b"\x89PNG"):
        suspect = b"IEND" not in data[-32:]
    else:
        suspect = False
    return diagnose_image_bytes(bytes(data)) if suspect else None


def iter_source_records(source, order=None):
    """Yield ``(index, encoded bytes, reason)`` for each record of ``source`` in ``order``.

    Records are read with the source's in-graph :meth:`~RecordSource.read` in chunks of
    ``source.read_chunk`` (the bytes stay encoded). A chunk whose read fails, and every
    record that fails :func:`check_image_bytes`, is read again alone in Python
    (``read_bytes``), so one bad file costs only its own record and the reason names it.
    ``reason`` is None for a good record; otherwise the bytes are None and ``reason`` says
    why (the ``read_bytes`` error or the :func:`check_image_bytes` verdict).

    Args:
        source: a :class:`RecordSource`.
        order: record indices to read (default: all, in index order).
    """
    order = np.arange(source.num_records, dtype=np.int64) if order is None else np.asarray(order, np.int64)
    if order.size == 0:
        return
    chunk = max(1, int(getattr(source, "read_chunk", 1)))
    dataset = tf.data.Dataset.from_tensor_slices(order).batch(chunk)
    dataset = dataset.map(
        lambda indices: (indices, source.read(indices)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    dataset = dataset.ignore_errors().unbatch().batch(_PYTHON_BATCH).prefetch(2)
    position = 0
    for indices, blobs in dataset.as_numpy_iterator():
        for index, data in zip(indices.tolist(), blobs.tolist()):
            while order[position] != index:
                yield _reread(source, int(order[position]))
                position += 1
            position += 1
            reason = check_image_bytes(data)
            # A bad record is read again in Python: read_bytes says best what is wrong (file,
            # offset), and a record that only failed in-graph is then kept, not lost.
            yield (index, data, None) if reason is None else _reread(source, index)
    while position < len(order):
        yield _reread(source, int(order[position]))
        position += 1


def _reread(source, index):
    """``(index, bytes or None, reason)`` of a record read alone in Python."""
    try:
        data = source.read_bytes(index)
    except NotImplementedError:
        reason = source.diagnose(index) or "read failed in the tf.data pipeline"
        return index, None, reason
    except (OSError, ValueError) as error:
        return index, None, str(error) or type(error).__name__
    reason = check_image_bytes(data)
    return index, (data if reason is None else None), reason


class TFRecordShardWriter:
    """Writes serialized records round-robin into ``shards`` TFRecord files, tracking offsets.

    Round-robin keeps the shards balanced (their record counts differ by at most one) whatever
    the number of records turns out to be after bad ones are skipped.

    Args:
        directory: where the shard files are created (must exist).
        shards: number of shard files, ``part-00000-of-000NN.tfrecord`` ...

    Returns:
        (:meth:`write`) ``(shard, frame byte offset, payload length)`` of the written record.
    """

    def __init__(self, directory, shards):
        shards = _integer_at_least(shards, 1, "shards")
        self.directory = directory
        self.shards = shards
        width = max(5, len(str(shards)))
        self.file_names = [f"part-{i:0{width}d}-of-{shards:0{width}d}.tfrecord" for i in range(shards)]
        self._writers = [tf.io.TFRecordWriter(os.path.join(directory, n)) for n in self.file_names]
        self.sizes = [0] * shards
        self.counts = [0] * shards
        self._next = 0

    def write(self, serialized):
        shard = self._next
        self._next = (shard + 1) % self.shards
        offset = self.sizes[shard]
        self._writers[shard].write(serialized)
        self.sizes[shard] += RECORD_OVERHEAD + len(serialized)
        self.counts[shard] += 1
        return shard, offset, len(serialized)

    def close(self):
        """Close every file and check its size against the offsets handed out."""
        for writer in self._writers:
            writer.close()
        for name, expected in zip(self.file_names, self.sizes):
            actual = os.path.getsize(os.path.join(self.directory, name))
            if actual != expected:
                raise OSError(
                    f"{os.path.join(self.directory, name)}: {actual} bytes written, the index "
                    f"expects {expected} (is the disk full?)"
                )


def make_example(image, label, dataset_index, key):
    """The serialized ``tf.train.Example`` of one face: ``label``, ``dataset``, ``key``, ``image``.

    Serialized here rather than through the protobuf classes (~3x faster, measured) and with
    the image as the last field, so that the image is the tail of the payload: its offset in
    the payload is ``len(serialized) - len(image)``. Any protobuf parser reads the result as
    the same Example.
    """
    head = b"".join(
        _int64_entry(name, value)
        for name, value in (("label", label), (DATASET_KEY, dataset_index), ("key", key))
    )
    size = len(image)
    values = 1 + _varint_size(size) + size  # BytesList{value: image}
    feature = 1 + _varint_size(values) + values  # Feature{bytes_list: ...}
    entry = 7 + 1 + _varint_size(feature) + feature  # {key: "image", value: feature}
    features = len(head) + 1 + _varint_size(entry) + entry
    prefix = b"".join(
        (
            b"\x0a",
            _varint(features),
            head,
            b"\x0a",
            _varint(entry),
            b"\x0a\x05image\x12",
            _varint(feature),
            b"\x0a",
            _varint(values),
            b"\x0a",
            _varint(size),
        )
    )
    return prefix + image


def _varint(value):
    if value < 0:
        raise ValueError(f"only values >= 0 are stored, got {value}")
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _varint_size(value):
    return len(_varint(value))


def _int64_entry(name, value):
    """The ``Features.feature`` map entry ``name -> Int64List([value])``, serialized."""
    packed = _varint(value)
    return _int64_entry_prefix(name, len(packed)) + packed


@functools.lru_cache(maxsize=None)
def _int64_entry_prefix(name, packed_size):
    # Everything before the value's varint depends only on the name and the varint's size.
    int64_list = 1 + _varint_size(packed_size) + packed_size
    feature = 1 + _varint_size(int64_list) + int64_list
    key = name.encode()
    entry_head = b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(feature)
    entry = len(entry_head) + feature
    return b"".join(
        (b"\x0a", _varint(entry), entry_head, b"\x1a", _varint(int64_list), b"\x0a", _varint(packed_size))
    )


def write_tfrecords(
    source,
    dst_dir,
    shards=16,
    dataset_index=0,
    shuffle_seed=None,
    progress=None,
    overwrite=False,
):
    """Write every good record of ``source`` as sharded TFRecords that :class:`TFRecordSource` reads.

    Each record becomes a ``tf.train.Example`` with ``image`` (the source's encoded bytes,
    never re-encoded), ``label``, ``dataset`` (``dataset_index``) and ``key`` (the record's
    index in ``source``), spread round-robin over ``shards`` files. ``dst_dir`` gets the
    shards, ``index.npz`` (per record: shard, offset, length, label, key, and where the image
    lies in the Example, for random access),
    ``dataset.json`` and ``skipped.txt`` (``index<TAB>where<TAB>reason`` of every record that
    was empty, unreadable or not an image; header check, see :func:`check_image_bytes`).
    Everything is written into a temporary sibling folder that is renamed to ``dst_dir`` at
    the end, so an interrupted conversion never leaves a ``dataset.json`` with partial shards.

    Args:
        source: any :class:`RecordSource`.
        dst_dir: the dataset folder to create; it must not exist or be empty, unless
            ``overwrite`` (then an existing TFRecord dataset there is replaced).
        shards: number of shard files.
        dataset_index: stored as every record's ``dataset`` feature (dataset mixing).
        shuffle_seed: when not None, records are written in an order permuted with this seed
            (record ``i`` of the result is then not source record ``i``; ``key`` tells which),
            so that readers streaming the shards front to back see mixed identities.
        progress: optional callable ``progress(records done, records total)``, called about
            every 256 records.
        overwrite: replace an existing dataset at ``dst_dir``.

    Returns:
        a :class:`ConversionSummary`.
    """
    if not isinstance(source, RecordSource):
        raise TypeError(f"`source` must be a RecordSource, got {type(source).__name__}")
    dataset_index = _integer_at_least(dataset_index, 0, "dataset_index")
    shards = _integer_at_least(shards, 1, "shards")
    dst_dir = os.path.abspath(os.fspath(dst_dir))
    _check_destination(dst_dir, overwrite)
    parent = os.path.dirname(dst_dir)
    os.makedirs(parent, exist_ok=True)
    start = time.perf_counter()
    total = source.num_records
    order = np.arange(total, dtype=np.int64)
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(total)
    # A sibling (same file system, so the final rename is atomic) made with os.makedirs, so
    # the dataset gets the usual umask permissions rather than mkdtemp's private 0700.
    work = _sibling(dst_dir, "partial")
    os.makedirs(work)
    try:
        writer = TFRecordShardWriter(work, shards)
        index = {name: np.empty(total, dtype) for name, dtype in INDEX_ARRAYS.items()}
        skipped = []
        written = 0
        labels = source.labels
        for done, (key, data, reason) in enumerate(iter_source_records(source, order), 1):
            if reason is not None:
                skipped.append((key, source.describe(key), reason))
            else:
                label = int(labels[key])
                example = make_example(data, label, dataset_index, key)
                shard, offset, length = writer.write(example)
                row = {
                    "shard": shard,
                    "offset": offset,
                    "length": length,
                    "label": label,
                    "key": key,
                    "image_offset": len(example) - len(data),
                    "image_length": len(data),
                }
                for name, value in row.items():
                    index[name][written] = value
                written += 1
            if progress is not None and (done % _PYTHON_BATCH == 0 or done == total):
                progress(done, total)
        writer.close()
        with open(os.path.join(work, SKIPPED_FILE), "w", encoding="utf-8") as f:
            for key, where, reason in skipped:
                f.write(f"{key}\t{where}\t{reason}\n")
        meta = {
            "name": source.name,
            "num_classes": source.num_classes,
            "class_names": source.class_names,
            "dataset_index": dataset_index,
            "image_key": "image",
            "label_key": "label",
            "shards": [{"file": f, "num_records": c} for f, c in zip(writer.file_names, writer.counts)],
            "source": {
                "type": type(source).__name__,
                "name": source.name,
                "description": repr(source),
                "num_records": total,
            },
            "skipped": len(skipped),
            "shuffle_seed": shuffle_seed,
            "writer": f"kerasface {_version()}",
        }
        write_index_files(work, meta, {name: array[:written] for name, array in index.items()})
        _move_into_place(work, dst_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if skipped:
        logger.warning(
            "%s: skipped %d bad records of %s (listed in %s): %s",
            dst_dir,
            len(skipped),
            source.name,
            os.path.join(dst_dir, SKIPPED_FILE),
            ", ".join(f"{w} ({r})" for _, w, r in skipped[:_MAX_NAMED]),
        )
    return ConversionSummary(
        destination=dst_dir,
        format="tfrecord",
        num_source_records=total,
        num_records=written,
        skipped=skipped,
        shards=list(zip(writer.file_names, writer.counts)),
        seconds=time.perf_counter() - start,
    )


def _integer_at_least(value, minimum, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}")
    return int(value)


def _version():
    from kerasface import __version__

    return __version__


def _check_destination(dst_dir, overwrite):
    if not os.path.exists(dst_dir):
        return
    if not os.path.isdir(dst_dir):
        raise FileExistsError(f"{dst_dir} exists and is not a folder")
    entries = os.listdir(dst_dir)
    if not entries:
        return
    if not overwrite:
        raise FileExistsError(
            f"{dst_dir} already exists and is not empty ({len(entries)} entries); choose a new "
            f"folder or pass overwrite=True (--overwrite) to replace a dataset there"
        )
    if DATASET_FILE not in entries:
        # Refuse to delete a folder that is not one of ours, even when asked to overwrite.
        raise FileExistsError(
            f"{dst_dir} is not empty and holds no dataset.json: not replacing it"
        )


def _move_into_place(work, dst_dir):
    if os.path.isdir(dst_dir) and os.listdir(dst_dir):
        old = _sibling(dst_dir, "old")
        os.rename(dst_dir, old)
        os.rename(work, dst_dir)
        shutil.rmtree(old, ignore_errors=True)
        return
    if os.path.isdir(dst_dir):
        os.rmdir(dst_dir)
    os.rename(work, dst_dir)


def _sibling(dst_dir, what):
    name = f".{os.path.basename(dst_dir)}.{what}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return os.path.join(os.path.dirname(dst_dir), name)
