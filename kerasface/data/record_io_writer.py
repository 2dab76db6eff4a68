"""Write MXNet RecordIO files (``.rec`` + ``.idx`` + insightface ``property``) without MXNet.

Byte layout (the one dmlc-core's ``RecordIOWriter`` and MXNet's ``MXIndexedRecordIO`` write):

* ``.rec``: records back to back. A record is ``uint32 magic 0xced7230a``, ``uint32 lrecord``
  (low 29 bits: length of the part, high 3 bits: continuation flag ``cflag``), the part's bytes,
  zero padding to a multiple of 4. A payload that holds the magic word at a 4-aligned position
  is cut there into parts (cflag 1 start, 2 middle, 3 end) and the magic itself is left out: a
  reader puts it back between parts, so a reader that resynchronises on the magic never meets
  one inside a record.
* ``.idx``: one text line ``key<TAB>byte offset`` per record, in write order.
* insightface payloads: ``IRHeader`` (``<IfQQ``: flag, label, id, id2), then ``flag`` float32
  labels when flag > 0, then the encoded image.
"""

import math
import os
import struct

import numpy as np

from kerasface.data.preprocessing import IMAGE_SIZE

RECORD_MAGIC = 0xCED7230A
IR_HEADER = struct.Struct("<IfQQ")
MAX_RECORD_LENGTH = (1 << 29) - 1
_MAGIC_BYTES = struct.pack("<I", RECORD_MAGIC)


def encode_record(payload):
    """The bytes one ``write`` puts in the ``.rec`` for ``payload`` (parts, headers, padding)."""
    payload = bytes(payload)
    length = len(payload)
    if length > MAX_RECORD_LENGTH:
        raise ValueError(
            f"a RecordIO record holds at most {MAX_RECORD_LENGTH} bytes, got {length}"
        )
    aligned = length - length % 4
    words = np.frombuffer(payload, dtype="<u4", count=aligned // 4)
    cuts = (np.flatnonzero(words == RECORD_MAGIC) * 4).tolist()
    pieces = []
    start = 0
    for cut in cuts:
        pieces.append(_part_header(1 if start == 0 else 2, cut - start))
        pieces.append(payload[start:cut])
        start = cut + 4  # the magic word itself is not stored; readers re-insert it
    pieces.append(_part_header(3 if cuts else 0, length - start))
    pieces.append(payload[start:])
    pieces.append(b"\x00" * (-length % 4))
    return b"".join(pieces)


def _part_header(cflag, length):
    return struct.pack("<II", RECORD_MAGIC, (cflag << 29) | length)


def pack_record(label, image_bytes, id=0, id2=0, labels=None):
    """insightface/MXNet record payload: ``IRHeader`` + extra float32 labels + image bytes.

    Args:
        label: the class id (a number: ``flag`` 0), or a sequence of numbers, which is stored
            as MXNet's ``recordio.pack`` stores an array label: ``flag = len(label)``, header
            label 0, the values as float32 after the header (insightface header and identity
            records are ``pack_record([a, b], b"")``).
        image_bytes: the encoded image (may be empty).
        id, id2: the ``IRHeader`` id fields (uint64).
        labels: optional extra float32 labels written after the header with a numeric
            ``label`` kept in the header field (``flag = len(labels)``).

    Returns:
        the payload bytes, to give to :meth:`RecordIOWriter.write`.
    """
    if labels is None and np.ndim(label) > 0:
        labels, label = label, 0.0
    extra = b""
    flag = 0
    if labels is not None:
        labels = np.asarray(labels, dtype="<f4").reshape(-1)
        flag = labels.size
        extra = labels.tobytes()
    return IR_HEADER.pack(flag, float(label), int(id), int(id2)) + extra + bytes(image_bytes)


def write_property(path, num_classes, image_size=(IMAGE_SIZE, IMAGE_SIZE)):
    """Write an insightface ``property`` file ``num_classes,height,width``; returns ``path``."""
    height, width = image_size
    with open(path, "w", encoding="ascii") as f:
        f.write(f"{int(num_classes)},{int(height)},{int(width)}\n")
    return path


class RecordIOWriter:
    """Writes an indexed MXNet RecordIO pair (``.rec`` + ``.idx``), byte for byte as MXNet does.

    Args:
        rec_path: the ``.rec`` file to create (overwritten).
        idx_path: the ``.idx`` file; default ``rec_path`` with the extension ``.idx``.

    Use as a context manager; :meth:`write` returns the byte offset of the record.
    """

    def __init__(self, rec_path, idx_path=None):
        self.rec_path = os.fspath(rec_path)
        if idx_path is None:
            idx_path = os.path.splitext(self.rec_path)[0] + ".idx"
        self.idx_path = os.fspath(idx_path)
        self._rec = open(self.rec_path, "wb")
        self._idx = open(self.idx_path, "w", encoding="ascii", newline="\n")
        self._keys = set()

    def write(self, key, payload):
        """Append ``payload`` as record ``key`` (int >= 0, unique); returns its byte offset."""
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
            raise TypeError(f"record key must be an int, got {key!r}")
        key = int(key)
        if key < 0:
            raise ValueError(f"record key must be >= 0, got {key}")
        if key in self._keys:
            raise ValueError(f"{self.rec_path}: record key {key} written twice")
        data = encode_record(payload)
        offset = self._rec.tell()
        self._rec.write(data)
        self._idx.write(f"{key}\t{offset}\n")
        self._keys.add(key)
        return offset

    def tell(self):
        """Byte offset the next record will start at."""
        return self._rec.tell()

    def _overwrite(self, offset, payload):
        """Replace the record at ``offset`` by one of the same encoded size (insightface header)."""
        data = encode_record(payload)
        end = self._rec.tell()
        self._rec.seek(offset)
        self._rec.write(data)
        if self._rec.tell() > end:
            raise AssertionError("_overwrite wrote past the end of the file")
        self._rec.seek(end)

    def close(self):
        if not self._rec.closed:
            self._rec.close()
            self._idx.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def write_insightface_record_io(dst_dir, items, num_classes=None, image_size=None):
    """Write ``train.rec``, ``train.idx`` and ``property`` in insightface's layout.

    Record 0 is the header ``[a, b]``: records ``1 .. a-1`` are the images in the order given,
    ``a .. b-1`` one identity record per class ``c`` (key ``a + c``) holding the key range
    ``[start, end)`` of its images.

    Args:
        dst_dir: output folder (created if needed).
        items: iterable of ``(label, encoded_image_bytes)``, grouped by label in ascending
            order (streamed: it is read once).
        num_classes: classes to declare; default ``max label + 1``. Classes without images get
            an empty key range.
        image_size: ``(height, width)`` for ``property``; default 112x112.

    Returns:
        dict with ``rec``, ``idx``, ``property`` paths, ``num_images`` and ``num_classes``.
    """
    os.makedirs(dst_dir, exist_ok=True)
    rec_path = os.path.join(dst_dir, "train.rec")
    idx_path = os.path.join(dst_dir, "train.idx")
    ranges = []  # ranges[c] = [start key, end key) of class c
    previous = None
    key = 1
    with RecordIOWriter(rec_path, idx_path) as writer:
        # Header placeholder; rewritten in place (same size) once the counts are known.
        writer.write(0, pack_record([0, 0], b""))
        for position, item in enumerate(items):
            try:
                label, image = item
            except (TypeError, ValueError):
                raise ValueError(
                    f"items must be (label, encoded image bytes) pairs; item {position} is "
                    f"{type(item).__name__}"
                ) from None
            label = _class_id(label, position)
            if previous is not None and label < previous:
                raise ValueError(
                    f"items must be grouped by label in ascending order; item {position} has "
                    f"label {label} after label {previous}"
                )
            if not isinstance(image, (bytes, bytearray, memoryview)):
                raise TypeError(
                    f"item {position}: image must be encoded bytes, got {type(image).__name__}"
                )
            while len(ranges) <= label:
                ranges.append([key, key])
            ranges[label][1] = key + 1
            writer.write(key, pack_record(float(label), image, id=key))
            previous = label
            key += 1
        num_images = key - 1
        if num_images == 0:
            raise ValueError(f"{dst_dir}: no items to write")
        if num_classes is None:
            num_classes = len(ranges)
        elif num_classes < len(ranges):
            raise ValueError(
                f"num_classes={num_classes} but the items have label {len(ranges) - 1}"
            )
        while len(ranges) < num_classes:
            ranges.append([key, key])
        first_identity = key
        for c, (start, end) in enumerate(ranges):
            writer.write(first_identity + c, pack_record([start, end], b""))
        writer._overwrite(0, pack_record([first_identity, first_identity + num_classes], b""))
    property_path = write_property(
        os.path.join(dst_dir, "property"), num_classes, image_size or (IMAGE_SIZE, IMAGE_SIZE)
    )
    return {
        "rec": rec_path,
        "idx": idx_path,
        "property": property_path,
        "num_images": num_images,
        "num_classes": int(num_classes),
    }


def _class_id(label, position):
    if isinstance(label, (bool, np.bool_)):
        raise TypeError(f"item {position}: label must be an int, got {label!r}")
    value = float(label)
    if not math.isfinite(value) or value != int(value) or value < 0:
        raise ValueError(f"item {position}: label must be an int >= 0, got {label!r}")
    if value >= 1 << 24:
        # float32 stores integers exactly only up to 2**24
        raise ValueError(f"item {position}: label {label} too large for a float32 label")
    return int(value)
