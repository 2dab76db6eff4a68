"""insightface MXNet RecordIO (``train.rec`` + ``train.idx`` + ``property``) as a record source."""

import logging
import os
import struct

import numpy as np
import tensorflow as tf

from kerasface.data.record_io_writer import IR_HEADER, RECORD_MAGIC
from kerasface.data.record_source import RecordSource

logger = logging.getLogger(__name__)

_LENGTH_MASK = (1 << 29) - 1
_IR_SIZE = IR_HEADER.size  # 24
_MAX_NAMED = 10
_GATHER_CHUNK = 1 << 20
# Record states kept per image: read by slicing, read by walking its parts, unreadable.
_SIMPLE, _MULTIPART, _BROKEN = 0, 1, 2


class RecordIOSource(RecordSource):
    """Images of an insightface MXNet RecordIO file, read without MXNet.

    Everything is indexed when the source is built, vectorised with NumPy over a read-only
    ``np.memmap`` of the ``.rec``: the ``.idx`` is parsed and every offset is checked to hold a
    record, and the ``IRHeader`` of every image record is read for its label. With insightface's
    header record 0 (``flag`` 2, labels ``[a, b]``), keys ``1..a-1`` are the images and
    ``a..b-1`` the identity records, whose key ranges must agree with the image labels; without
    it every key of the ``.idx`` is an image.

    A record that is damaged in the ``.rec`` (bad magic at a record boundary, length running
    past the end of the file, payload shorter than its header) stays in the source, is logged
    and listed in ``broken_records``, and :meth:`read` returns ``b""`` for it, which the
    pipeline counts as bad. An ``.idx`` that does not fit the ``.rec``, labels outside
    ``0..num_classes-1`` and identity ranges that disagree with the image labels are errors.

    Args:
        path: a ``.rec`` file, or a folder holding ``train.rec``, ``train.idx`` and
            (optionally) ``property``.
        idx_path: the ``.idx``; default next to the ``.rec``, same name, extension ``.idx``.
        property_path: insightface ``property`` (``num_classes,height,width``); default the
            ``property`` file next to the ``.rec`` when there is one. It declares
            ``num_classes``; otherwise that is ``b - a`` from header record 0, or the largest
            label + 1.
        name: source name for messages (default: the folder name of the ``.rec``).

    Attributes:
        rec_path: absolute path of the ``.rec``.
        keys, offsets, lengths: int64 (N,) record key, byte offset and first-part payload
            length (from ``lrecord``; -1 when the record's magic is damaged) of each image.
        header: ``(a, b)`` of header record 0, or None.
        identity_ranges: int64 (b - a, 2) ``[start, end)`` image key range per class, or None.
        image_shape: ``(height, width)`` from ``property``, or None.
        broken_records: int64 indices of the images that cannot be read.

    ``class_names`` is None: RecordIO stores class ids only.
    """

    read_chunk = 64

    def __init__(self, path, idx_path=None, property_path=None, name=None):
        self.path = os.fspath(path)
        rec_path, idx_path, property_path = _resolve_paths(self.path, idx_path, property_path)
        self.rec_path = rec_path
        self.idx_path = idx_path
        self.property_path = property_path
        declared_classes, self.image_shape = (
            _read_property(property_path) if property_path else (None, None)
        )
        self._open()
        index = _RecordIndex(self, *_parse_idx(idx_path))
        self.header = index.header
        self.identity_ranges = index.identity_ranges
        self.keys = index.keys
        self.offsets = index.offsets
        self.lengths = index.lengths
        self._skip = index.skip
        self._kind = index.kind
        self.broken_records = np.flatnonzero(self._kind == _BROKEN).astype(np.int64)
        if declared_classes is not None:
            num_classes = declared_classes
            where = f"declared by {property_path}"
        elif self.header is not None:
            num_classes = self.header[1] - self.header[0]
            where = "declared by header record 0"
        else:
            num_classes = None
            where = None
        labels = index.labels(num_classes, where)
        super().__init__(
            labels,
            num_classes=num_classes,
            class_names=None,
            name=name or os.path.basename(os.path.dirname(rec_path)) or rec_path,
        )
        logger.info(
            "%s: %d images, %d classes (%s)",
            rec_path,
            self.num_records,
            self.num_classes,
            "insightface header record 0" if self.header else "no header record, all keys",
        )
        if self.broken_records.size:
            shown = "; ".join(
                self.diagnose(int(i)) or self.describe(int(i))
                for i in self.broken_records[:_MAX_NAMED]
            )
            more = self.broken_records.size - _MAX_NAMED
            logger.warning(
                "%s: %d damaged record(s) cannot be read and will be skipped and counted: %s%s",
                rec_path,
                self.broken_records.size,
                shown,
                f"; ... ({more} more)" if more > 0 else "",
            )

    def get_config(self):
        return {
            "path": self.path,
            "idx_path": self.idx_path,
            "property_path": self.property_path,
            "name": self.name,
        }

    # ---- memmap ---------------------------------------------------------------------------

    def _open(self):
        self._size = os.path.getsize(self.rec_path)
        if self._size == 0:
            raise ValueError(f"{self.rec_path}: the .rec file is empty (0 bytes)")
        # A plain ndarray view of the memmap: slicing it is cheaper than slicing np.memmap and
        # safe from the parallel threads tf.numpy_function runs in (read-only, no state).
        self._buffer = np.memmap(self.rec_path, dtype=np.uint8, mode="r").view(np.ndarray)

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_buffer", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._open()

    # ---- reading --------------------------------------------------------------------------

    def read(self, indices):
        indices = tf.cast(indices, tf.int64)
        data = tf.numpy_function(
            self._read_numpy, [indices], tf.string, stateful=False, name="record_io_read"
        )
        data.set_shape(indices.shape)
        return data

    def _read_numpy(self, indices):
        indices = np.asarray(indices).reshape(-1)
        out = np.empty(indices.size, dtype=object)
        n = self.num_records
        for j, i in enumerate(indices.tolist()):
            if not 0 <= i < n:
                raise IndexError(f"{self.rec_path}: record index {i} out of range 0..{n - 1}")
            out[j] = self._image_bytes(i)
        return out

    def _image_bytes(self, i):
        """Image bytes of record ``i``, ``b""`` when it cannot be read (never raises)."""
        try:
            kind = self._kind[i]
            if kind == _SIMPLE:
                start = int(self.offsets[i]) + 8
                end = start + int(self.lengths[i])
                return self._buffer[start + int(self._skip[i]) : end].tobytes()
            if kind == _MULTIPART:
                return _strip_ir_header(_read_payload(self._buffer, int(self.offsets[i]))[0])
        except Exception:  # noqa: BLE001 - a bad record must not stop the epoch
            pass
        return b""

    def describe(self, index):
        return f"{self.rec_path} record {int(self.keys[index])} (byte {int(self.offsets[index])})"

    def read_bytes(self, index):
        try:
            payload, _ = _read_payload(self._buffer, int(self.offsets[index]))
            return _strip_ir_header(payload)
        except ValueError as error:
            raise ValueError(f"{self.describe(index)}: {error}") from None


class _RecordIndex:
    """The vectorised indexing of a ``.rec`` against its ``.idx`` (only used while opening)."""

    def __init__(self, source, keys, offsets):
        self.rec = source.rec_path
        self.idx = source.idx_path
        buffer = source._buffer
        size = source._size
        self.buffer, self.size = buffer, size
        lines = np.arange(1, keys.size + 1, dtype=np.int64)
        self._check_offsets_in_file(keys, offsets, lines)
        self._check_duplicates(keys, lines)

        head = _gather_u32(buffer, np.concatenate([offsets, offsets + 4]))
        magic, lrec = head[: offsets.size], head[offsets.size :]
        length = (lrec & _LENGTH_MASK).astype(np.int64)
        cflag = (lrec >> 29).astype(np.int64)
        magic_ok = magic == RECORD_MAGIC
        self._check_record_starts(keys, offsets, lines, magic, magic_ok, length, cflag)
        length = np.where(magic_ok, length, -1)

        self.header = self._find_header(keys, offsets, magic_ok)
        if self.header is None:
            images = np.ones(keys.size, bool)
            self.identity_ranges = None
        else:
            a, b = self.header
            images = (keys >= 1) & (keys < a)
            identities = (keys >= a) & (keys < b)
            outside = ~(images | identities | (keys == 0))
            if outside.any():
                j = int(np.argmax(outside))
                raise ValueError(
                    f"{self.idx}: line {lines[j]}: key {keys[j]} is outside the ranges of "
                    f"header record 0 in {self.rec} (images 1..{a - 1}, identities "
                    f"{a}..{b - 1})"
                )
            self._require_keys(keys[images], 1, a, "image")
            self._require_keys(keys[identities], a, b, "identity")
            order = _key_order(keys[identities])
            sel = np.flatnonzero(identities)[order]
            self.identity_ranges = self._identity_ranges(
                keys[sel], offsets[sel], length[sel], cflag[sel], magic_ok[sel]
            )

        sel = np.flatnonzero(images)
        sel = sel[_key_order(keys[sel])]
        self.keys = keys[sel]
        self.offsets = offsets[sel]
        self.lengths = length[sel]
        self._read_image_headers(cflag[sel], magic_ok[sel])

    # ---- .idx against .rec ----------------------------------------------------------------

    def _check_offsets_in_file(self, keys, offsets, lines):
        beyond = offsets + 8 > self.size
        if beyond.any():
            j = int(np.argmax(beyond))
            raise ValueError(
                f"{self.idx}: line {lines[j]}: offset {offsets[j]} of key {keys[j]} is beyond "
                f"the end of {self.rec} (size {self.size} bytes; {int(beyond.sum())} such "
                "line(s)): the .idx does not belong to this .rec, or the .rec is truncated"
            )

    def _check_duplicates(self, keys, lines):
        if keys.size < 2 or np.all(keys[1:] > keys[:-1]):
            return  # the usual strictly increasing .idx: no sort needed
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        dup = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
        if dup.size:
            first, second = lines[order[dup[0]]], lines[order[dup[0] + 1]]
            raise ValueError(
                f"{self.idx}: line {second}: duplicate key {sorted_keys[dup[0]]} (also on line "
                f"{first}; {dup.size} duplicate(s) in all)"
            )

    def _check_record_starts(self, keys, offsets, lines, magic, magic_ok, length, cflag):
        starts = magic_ok & (cflag <= 1)
        suspect = np.flatnonzero(~starts)
        if not suspect.size:
            return
        # A wrong magic (or a continuation flag) is a damaged record when a readable record
        # ends exactly there, or at byte 0; anywhere else the .idx offset itself is wrong.
        ends = offsets + 8 + ((length + 3) & ~3)
        ends = ends[magic_ok & (cflag == 0)]
        for j in np.flatnonzero(magic_ok & (cflag == 1)):
            try:
                ends = np.append(ends, _read_payload(self.buffer, int(offsets[j]))[1])
            except ValueError:
                pass
        at_boundary = (offsets[suspect] == 0) | np.isin(offsets[suspect], ends)
        if at_boundary.all():
            return
        j = int(suspect[np.argmin(at_boundary)])
        if magic_ok[j]:
            found = (
                f"a record part with continuation flag {cflag[j]}: the middle or end of a "
                "split record"
            )
        else:
            found = f"0x{int(magic[j]):08x}, not the record magic 0x{RECORD_MAGIC:08x}"
        raise ValueError(
            f"{self.idx}: line {lines[j]}: offset {offsets[j]} of key {keys[j]} does not "
            f"point at a record start of {self.rec} (found {found} there, and no record "
            f"ends there; {int((~at_boundary).sum())} such line(s)): the .idx does not match "
            "the .rec"
        )

    def _find_header(self, keys, offsets, magic_ok):
        where = np.flatnonzero(keys == 0)
        if not where.size:
            return None
        j = int(where[0])
        offset = int(offsets[j])
        place = f"{self.rec} record 0 (byte {offset})"
        if not magic_ok[j]:
            raise ValueError(
                f"{place}: damaged (bad magic), so it cannot be told whether it is the "
                "insightface header record"
            )
        try:
            payload, _ = _read_payload(self.buffer, offset)
        except ValueError as error:
            raise ValueError(f"{place}: {error}") from None
        if len(payload) != _IR_SIZE + 8 or IR_HEADER.unpack_from(payload)[0] != 2:
            return None  # an image record: no insightface header
        a, b = np.frombuffer(payload, "<f4", 2, _IR_SIZE).astype(np.float64)
        if not (a == int(a) and b == int(b) and 1 <= a <= b):
            raise ValueError(
                f"{place}: insightface header record declares the key ranges [1, {a}) of "
                f"images and [{a}, {b}) of identities; expected whole numbers 1 <= a <= b"
            )
        return int(a), int(b)

    def _require_keys(self, present, start, stop, what):
        if present.size == stop - start:
            return
        missing = np.setdiff1d(np.arange(start, stop, dtype=np.int64), present)
        raise ValueError(
            f"{self.idx}: header record 0 of {self.rec} declares {what} keys "
            f"{start}..{stop - 1}, but key {missing[0]} is not in the .idx "
            f"({missing.size} missing)"
        )

    # ---- identity records -----------------------------------------------------------------

    def _identity_ranges(self, keys, offsets, length, cflag, magic_ok):
        fields = _IrFields(self.buffer, self.size, offsets, length, cflag, magic_ok, extra=2)
        bad = ~fields.ok | (fields.flag != 2)
        if bad.any():
            j = int(np.argmax(bad))
            what = fields.reason(j) or f"IRHeader flag {fields.flag[j]}, expected 2"
            raise ValueError(
                f"{self.rec} record {keys[j]} (byte {offsets[j]}): not a valid insightface "
                f"identity record (labels [start, end)): {what}"
            )
        ranges = np.stack([fields.extra[:, 0], fields.extra[:, 1]], axis=1).astype(np.float64)
        a, _ = self.header
        whole = (ranges == np.floor(ranges)).all(axis=1)
        valid = whole & (ranges[:, 0] >= 1) & (ranges[:, 0] <= ranges[:, 1]) & (ranges[:, 1] <= a)
        if not valid.all():
            j = int(np.argmin(valid))
            raise ValueError(
                f"{self.rec} record {keys[j]} (byte {offsets[j]}): identity {j} has the key range "
                f"[{ranges[j, 0]:g}, {ranges[j, 1]:g}); expected whole numbers within the image "
                f"keys [1, {a})"
            )
        ranges = ranges.astype(np.int64)
        overlap = np.flatnonzero(ranges[1:, 0] < ranges[:-1, 1])
        if overlap.size:
            j = int(overlap[0]) + 1
            raise ValueError(
                f"{self.rec} record {keys[j]} (byte {offsets[j]}): identity {j} key range "
                f"[{ranges[j, 0]}, {ranges[j, 1]}) overlaps or precedes identity {j - 1}'s "
                f"[{ranges[j - 1, 0]}, {ranges[j - 1, 1]})"
            )
        self._identity_keys, self._identity_offsets = keys, offsets
        return ranges

    # ---- image records --------------------------------------------------------------------

    def _read_image_headers(self, cflag, magic_ok):
        fields = _IrFields(
            self.buffer, self.size, self.offsets, self.lengths, cflag, magic_ok, extra=1
        )
        self.kind = np.where(fields.ok, np.where(cflag == 0, _SIMPLE, _MULTIPART), _BROKEN)
        self.kind = self.kind.astype(np.int8)
        self.skip = np.where(fields.ok, _IR_SIZE + 4 * fields.flag, 0).astype(np.int64)
        self.raw_labels = np.where(fields.flag > 0, fields.extra[:, 0], fields.label)

    def labels(self, num_classes, where):
        """int32 labels, validated; damaged records get the label their position implies."""
        ok = self.kind != _BROKEN
        raw = self.raw_labels.astype(np.float64)
        whole = np.isfinite(raw) & (raw == np.floor(raw))
        bad = ok & ~whole
        if bad.any():
            j = int(np.argmax(bad))
            raise ValueError(
                f"{self.rec} record {self.keys[j]} (byte {self.offsets[j]}): label {raw[j]:g} is "
                "not a whole number"
            )
        limit = num_classes if num_classes is not None else np.iinfo(np.int32).max
        outside = ok & ((raw < 0) | (raw >= limit))
        if outside.any():
            j = int(np.argmax(outside))
            declared = (
                f"0..{num_classes - 1} ({where})" if num_classes is not None else "0..2**31-2"
            )
            raise ValueError(
                f"{self.rec} record {self.keys[j]} (byte {self.offsets[j]}): label {raw[j]:g} is "
                f"outside the class range {declared}; {int(outside.sum())} such record(s)"
            )
        labels = np.where(ok, raw, -1).astype(np.int64)
        if self.identity_ranges is not None:
            labels = self._check_against_ranges(labels, ok)
        if not ok.all():
            labels = _fill_from_neighbours(labels, labels >= 0, self.rec)
        return labels.astype(np.int32)

    def _check_against_ranges(self, labels, ok):
        starts, ends = self.identity_ranges[:, 0], self.identity_ranges[:, 1]
        a, _ = self.header
        if starts.size and starts[0] == 1 and ends[-1] == a and np.all(starts[1:] == ends[:-1]):
            # The ranges tile 1..a-1, the keys are exactly 1..a-1 in order: no search needed.
            identity = np.repeat(np.arange(starts.size, dtype=np.int64), ends - starts)
            covered = np.ones(identity.size, bool)
        else:
            identity = np.searchsorted(starts, self.keys, side="right") - 1
            covered = identity >= 0
            covered[covered] &= self.keys[covered] < ends[identity[covered]]
        disagree = ok & covered & (labels != identity)
        if disagree.any():
            j = int(np.argmax(disagree))
            c = int(identity[j])
            raise ValueError(
                f"{self.rec} record {self.keys[j]} (byte {self.offsets[j]}): its header label "
                f"{labels[j]} disagrees with identity record {self._identity_keys[c]} (byte "
                f"{self._identity_offsets[c]}), which puts keys [{starts[c]}, {ends[c]}) in class "
                f"{c}; {int(disagree.sum())} such record(s)"
            )
        # Damaged images inside an identity's key range belong to that identity.
        return np.where(~ok & covered, identity, labels)


class _IrFields:
    """``IRHeader`` fields of many records, gathered vectorised; multi-part ones walked."""

    def __init__(self, buffer, size, offsets, length, cflag, magic_ok, extra):
        n = offsets.size
        self.buffer, self.offsets = buffer, offsets
        self.flag = np.zeros(n, np.int64)
        self.label = np.zeros(n, np.float32)
        self.extra = np.zeros((n, extra), np.float32)
        self.ok = np.zeros(n, bool)
        single = magic_ok & (cflag == 0) & (offsets + 8 + length <= size) & (length >= _IR_SIZE)
        if single.all():
            rows = slice(None)  # the usual case: plain slices instead of fancy indexing
            start = offsets + 8
        else:
            rows = np.flatnonzero(single)
            start = offsets[rows] + 8
        flag = _gather_u32(buffer, start).astype(np.int64)
        self.flag[rows] = flag
        self.label[rows] = _gather_u32(buffer, start + 4).view("<f4")
        fits = length[rows] >= _IR_SIZE + 4 * flag
        self.ok[rows] = fits
        with_extra = np.flatnonzero(fits & (flag >= extra))
        if not isinstance(rows, slice):
            with_extra = rows[with_extra]
        base = offsets[with_extra] + 8 + _IR_SIZE
        for e in range(extra):
            self.extra[with_extra, e] = _gather_u32(buffer, base + 4 * e).view("<f4")
        for j in np.flatnonzero(magic_ok & (cflag == 1)):
            try:
                payload, _ = _read_payload(buffer, int(offsets[j]))
                flag_j, label_j, _, _ = IR_HEADER.unpack_from(payload)
            except (ValueError, struct.error):  # damaged: stays not ok
                continue
            if len(payload) < _IR_SIZE + 4 * flag_j:
                continue
            self.flag[j], self.label[j], self.ok[j] = flag_j, label_j, True
            count = min(flag_j, extra)
            self.extra[j, :count] = np.frombuffer(payload, "<f4", count, _IR_SIZE)

    def reason(self, j):
        """Why record ``j`` is not ok (None when it is)."""
        if self.ok[j]:
            return None
        try:
            payload, _ = _read_payload(self.buffer, int(self.offsets[j]))
            _strip_ir_header(payload)
        except ValueError as error:
            return str(error)
        return None


# ---- helpers -------------------------------------------------------------------------------


def _resolve_paths(path, idx_path, property_path):
    path = os.path.abspath(path)
    if os.path.isdir(path):
        rec_path = os.path.join(path, "train.rec")
        if not os.path.isfile(rec_path):
            found = sorted(f for f in os.listdir(path) if f.endswith(".rec"))
            hint = f" (found {', '.join(found)}; pass that file)" if found else ""
            raise FileNotFoundError(f"RecordIO folder {path} has no train.rec{hint}")
    else:
        rec_path = path
        if not os.path.isfile(rec_path):
            raise FileNotFoundError(f"RecordIO file {rec_path} does not exist")
    if idx_path is None:
        idx_path = os.path.splitext(rec_path)[0] + ".idx"
    idx_path = os.path.abspath(idx_path)
    if not os.path.isfile(idx_path):
        raise FileNotFoundError(
            f"RecordIO index {idx_path} does not exist (it is needed to read {rec_path} "
            "by key; MXNet writes it next to the .rec)"
        )
    if property_path is None:
        candidate = os.path.join(os.path.dirname(rec_path), "property")
        property_path = candidate if os.path.isfile(candidate) else None
    else:
        property_path = os.path.abspath(property_path)
        if not os.path.isfile(property_path):
            raise FileNotFoundError(f"RecordIO property file {property_path} does not exist")
    return rec_path, idx_path, property_path


def _read_property(path):
    """``(num_classes, (height, width))`` from an insightface ``property`` file."""
    with open(path, "rb") as f:
        text = f.read(4096).decode("ascii", "replace").strip()
    fields = [f.strip() for f in text.split(",")]
    if len(fields) != 3 or not all(f.isdigit() for f in fields):
        raise ValueError(
            f"{path}: expected one line `num_classes,height,width` (e.g. 85742,112,112), "
            f"got {text[:80]!r}"
        )
    num_classes, height, width = (int(f) for f in fields)
    return num_classes, (height, width)


def _parse_idx(path):
    """``(keys, offsets)`` int64 arrays of an ``.idx``; entry ``j`` is on line ``j + 1``."""
    with open(path, "rb") as f:
        data = f.read()
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    if not data.strip():
        raise ValueError(f"{path}: the .idx is empty (no `key<TAB>offset` lines)")
    if not data.endswith(b"\n") or data.endswith(b"\n\n"):
        data = data.rstrip(b"\n") + b"\n"  # copies; only for unusual endings
    parsed = _parse_idx_fast(data)
    if parsed is None:
        parsed = _parse_idx_slow(data, path)
    return parsed


def _parse_idx_fast(data):
    """Vectorised parse of strict ``digits<TAB>digits<LF>`` lines; None when not that strict."""
    raw = np.frombuffer(data, np.uint8)
    if raw.max() > ord("9"):
        return None
    separators = np.flatnonzero(raw < ord("0"))  # with the max: every byte that is not 0-9
    if separators.size % 2:
        return None
    tabs, newlines = separators[0::2], separators[1::2]
    if not ((raw[tabs] == 9).all() and (raw[newlines] == 10).all()):
        return None
    line_starts = np.concatenate([[0], newlines[:-1] + 1])
    key_digits = tabs - line_starts
    offset_digits = newlines - tabs - 1
    if key_digits.min() < 1 or offset_digits.min() < 1:
        return None
    if max(key_digits.max(), offset_digits.max()) > 18:  # keep clear of int64 overflow
        return None
    values = np.fromstring(data, dtype=np.int64, sep=" ")
    if values.size != 2 * tabs.size:
        return None
    return values[0::2].copy(), values[1::2].copy()


def _parse_idx_slow(data, path):
    """Line-by-line parse (MXNet's rules: strip, split on TAB) with the line of any error."""
    keys, offsets = [], []
    for number, line in enumerate(data.split(b"\n")[:-1], 1):
        fields = line.strip().split(b"\t")
        if len(fields) != 2 or not all(f.strip().isdigit() for f in fields):
            raise ValueError(
                f"{path}: line {number}: expected `key<TAB>offset` (two non-negative "
                f"integers), got {line[:80].decode('utf-8', 'replace')!r}"
            )
        key, offset = (int(f) for f in fields)
        if max(key, offset) >= 1 << 62:
            raise ValueError(f"{path}: line {number}: number too large in {line[:80]!r}")
        keys.append(key)
        offsets.append(offset)
    return np.asarray(keys, np.int64), np.asarray(offsets, np.int64)


def _gather_u32(buffer, positions):
    """Little-endian uint32 at each byte position of ``buffer`` (all within it), vectorised."""
    positions = np.asarray(positions, np.int64)
    if positions.size == 0:
        return np.zeros(0, "<u4")
    if not np.any(positions & 3):
        words = buffer[: buffer.size // 4 * 4].view("<u4")
        return words[positions >> 2]
    out = np.empty(positions.size, "<u4")
    step = np.arange(4, dtype=np.int64)
    for start in range(0, positions.size, _GATHER_CHUNK):
        chunk = positions[start : start + _GATHER_CHUNK]
        out[start : start + chunk.size] = buffer[chunk[:, None] + step].view("<u4")[:, 0]
    return out


def _read_payload(buffer, offset):
    """``(payload bytes, end offset)`` of the record at ``offset``; ``ValueError`` says why not.

    Parts of a split record are joined with the magic word put back between them, as dmlc's
    reader does.
    """
    size = buffer.size
    parts = []
    position = offset
    while True:
        if position + 8 > size:
            raise ValueError(
                f"record header at byte {position} runs past the end of the file (size {size})"
            )
        magic, lrec = buffer[position : position + 8].view("<u4").tolist()
        if magic != RECORD_MAGIC:
            where = "" if position == offset else f" (continuation part at byte {position})"
            raise ValueError(f"bad magic 0x{magic:08x}{where}, expected 0x{RECORD_MAGIC:08x}")
        cflag, length = lrec >> 29, lrec & _LENGTH_MASK
        if position == offset and cflag not in (0, 1):
            raise ValueError(
                f"continuation flag {cflag}: the middle or end of a split record, not a "
                "record start"
            )
        if position != offset and cflag not in (2, 3):
            raise ValueError(
                f"split record: part at byte {position} has continuation flag {cflag}, "
                "expected 2 or 3"
            )
        if position + 8 + length > size:
            raise ValueError(
                f"record length {length} runs past the end of the file (size {size})"
            )
        parts.append(buffer[position + 8 : position + 8 + length].tobytes())
        position += 8 + ((length + 3) & ~3)
        if cflag in (0, 3):
            break
    magic_bytes = RECORD_MAGIC.to_bytes(4, "little")
    return magic_bytes.join(parts), position


def _strip_ir_header(payload):
    """The image bytes after the ``IRHeader`` and its extra labels (``ValueError`` if short)."""
    if len(payload) < _IR_SIZE:
        raise ValueError(
            f"payload of {len(payload)} bytes is shorter than the {_IR_SIZE}-byte IRHeader"
        )
    flag = IR_HEADER.unpack_from(payload)[0]
    skip = _IR_SIZE + 4 * flag
    if len(payload) < skip:
        raise ValueError(
            f"payload of {len(payload)} bytes is shorter than its IRHeader with {flag} "
            f"labels ({skip} bytes)"
        )
    return payload[skip:]


def _key_order(keys):
    if keys.size < 2 or np.all(keys[1:] > keys[:-1]):
        return np.arange(keys.size)
    return np.argsort(keys, kind="stable")


def _fill_from_neighbours(labels, known, rec):
    """Labels of damaged records outside identity ranges: the preceding record's, else next's.

    insightface files store each class's images consecutively, and the label of an unreadable
    record only matters for per-class counts (its reads are skipped and counted).
    """
    if not known.any():
        raise ValueError(f"{rec}: no record can be read (all image records are damaged)")
    positions = np.arange(labels.size)
    previous = np.maximum.accumulate(np.where(known, positions, -1))
    first = int(np.argmax(known))
    source = np.where(previous >= 0, previous, first)
    return np.where(known, labels, labels[source])
