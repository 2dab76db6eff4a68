"""Count images that a tf.data pipeline had to skip, and tell which files they were and why."""

import os

import numpy as np
import tensorflow as tf

from kerasface.data.preprocessing import decode_rgb

# Leading bytes of every format `tf.io.decode_image` reads. A file that starts with none of
# them cannot decode, so the pipeline rejects it without trying (and without decoder noise).
_MAGIC = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"BM",  # BMP
    b"GIF87a",
    b"GIF89a",
    b"RIFF",  # WebP (RIFF....WEBP); other RIFF files fail in the decoder and are caught there
)
_MAGIC_LENGTH = max(len(m) for m in _MAGIC)


class BadRecordTracker:
    """Per-file skip counter shared by a tf.data pipeline (graph side) and Python (report side).

    The graph side is a ``MutableHashTable`` ``record index -> times skipped`` on the CPU. A lookup table
    rather than a ``tf.Variable`` so that a ``tf.distribute`` strategy scope, if one is active
    while the pipeline is built, does not turn it into a mirrored variable on the accelerators.

    * Streams: :meth:`begin` (before the record is read) increments ``pending[i]`` and
      :meth:`end` (after it decoded) decrements it. A record whose header is not an image
      never reaches :meth:`end`; a read or decode error that TensorFlow cannot catch
      in-graph (missing file, truncated image with a valid header) aborts the element, which
      ``Dataset.ignore_errors`` drops. Either way its ``+1`` stays.
    * Whole batches: :meth:`count_missing` compares the records a batch asked for with those
      that came out of decoding and counts a skip of each one missing. One op per batch.
    * :meth:`bad_records` turns the table into ``{where: (skips, reason)}``. Every record
      counted is re-examined in Python (``diagnose``) to give the reason; one that reads
      fine there (in flight when the table was read, or a file replaced since) is left out.

    Args:
        records: the pipeline's records, referred to by index on the graph side: a
            :class:`kerasface.data.RecordSource` (named by its ``describe`` and re-checked by
            its ``diagnose``), or a list of image file paths.

    Returns:
        (:meth:`bad_records`) dict ``where -> (times skipped, reason)``; ``where`` is the file
        path, or the source's description of the record (file, record, byte offset).
    """

    def __init__(self, records):
        paths = None
        if hasattr(records, "describe") and hasattr(records, "diagnose"):
            self._describe, self._diagnose = records.describe, records.diagnose
        else:
            paths = list(records)
            self._describe = paths.__getitem__
            self._diagnose = lambda index: diagnose_image_file(paths[index])
        num_records = getattr(records, "num_records", None)
        if num_records is None:
            num_records = len(paths)
        self._counts = None
        with tf.device("/CPU:0"):
            if not tf.distribute.has_strategy():
                # Dense per-record counters: a scatter per update, measured ~1.5x faster in a
                # decode pipeline than hash-table updates. Under a strategy scope a variable
                # would be mirrored, so the table below serves then.
                self._counts = tf.Variable(
                    tf.zeros([num_records], tf.int32), trainable=False, name="bad_record_counts"
                )
            self._pending = tf.lookup.experimental.MutableHashTable(
                key_dtype=tf.int64, value_dtype=tf.int64, default_value=0, name="bad_records"
            )
            # index -> 1 for files that had to be resized; a set, so concurrent inserts are safe.
            self._resized = tf.lookup.experimental.MutableHashTable(
                key_dtype=tf.int64, value_dtype=tf.int64, default_value=0, name="resized_records"
            )
        self._verified_good = {}

    # ---- graph side ----------------------------------------------------------------------

    def begin(self, index):
        """In-graph op: count record ``index`` as pending (a skip, unless :meth:`end` follows)."""
        if self._counts is not None:
            return self._add(tf.reshape(index, [1]), 1)
        return self._pending.insert(index, self._pending.lookup(index) + 1)

    def _add(self, indices, delta):
        update = tf.IndexedSlices(tf.fill(tf.shape(indices), delta), indices)
        return self._counts.scatter_add(update).op

    def end(self, index, image):
        """In-graph: mark record ``index`` decoded; returns ``image`` ordered after the mark."""
        if self._counts is not None:
            with tf.control_dependencies([image]):
                done = self._add(tf.reshape(index, [1]), -1)
            with tf.control_dependencies([done]):
                return tf.identity(image)
        with tf.control_dependencies([image]):
            new = self._pending.lookup(index) - 1
            done = tf.cond(
                tf.equal(new, 0),
                lambda: self._pending.remove(tf.reshape(index, [1])),
                lambda: self._pending.insert(index, new),
            )
        with tf.control_dependencies([done]):
            return tf.identity(image)

    def count_missing(self, ids, good):
        """In-graph op: count a skip of every record in ``ids`` that is not in ``good``.

        ``ids`` are the records a batch asked for, ``good`` those that came out of it: the
        difference is what the decode stage dropped, whatever the reason (an unreadable
        file, a non-image header, a decode error that aborted the element).
        """
        came_out = tf.reduce_any(tf.equal(ids[:, None], good[None, :]), axis=1)
        missing = tf.boolean_mask(ids, tf.logical_not(came_out))

        def count():
            missing_unique, _ = tf.unique(missing)
            if self._counts is not None:
                return self._add(missing_unique, 1)
            return self._pending.insert(
                missing_unique, self._pending.lookup(missing_unique) + 1
            )

        return tf.cond(tf.size(missing) > 0, count, tf.no_op)

    def mark_resized(self, index):
        """In-graph op recording that file ``index`` was not 112x112."""
        return self._resized.insert(index, tf.ones([], tf.int64))

    # ---- Python side ---------------------------------------------------------------------

    def bad_records(self):
        """``{where: (times skipped, reason)}`` for every record that could not be read so far."""
        keys, values = self._pending.export()
        counts = dict(zip(keys.numpy().tolist(), values.numpy().tolist()))
        if self._counts is not None:
            dense = self._counts.numpy()
            for index in np.flatnonzero(dense).tolist():
                counts[index] = counts.get(index, 0) + int(dense[index])
        result = {}
        for index, count in sorted(counts.items()):
            if count <= 0:
                continue
            if self._verified_good.get(index) == count:
                continue
            reason = self._diagnose(index)
            if reason is None:
                # In flight when we looked, not broken; don't decode it again for this count.
                self._verified_good[index] = count
                continue
            result[self._describe(index)] = (count, reason)
        return dict(sorted(result.items()))

    def num_resized(self):
        """How many distinct files were resized to 112x112 so far."""
        return int(self._resized.size().numpy())

    def reset(self):
        """Forget all counts (e.g. between two independent runs over the same pipeline)."""
        keys, _ = self._pending.export()
        self._pending.remove(keys)
        if self._counts is not None:
            self._counts.assign(tf.zeros_like(self._counts))
        keys, _ = self._resized.export()
        self._resized.remove(keys)
        self._verified_good.clear()


def has_image_header(data):
    """Python: True when the bytes ``data`` start like a file format the decoder reads."""
    return any(data.startswith(magic) for magic in _MAGIC)


def looks_like_image(data):
    """In-graph: True when the bytes ``data`` start like an image file that may decode."""
    head = tf.strings.substr(data, 0, _MAGIC_LENGTH)
    ok = tf.zeros([], tf.bool)
    for magic in _MAGIC:
        ok = tf.logical_or(ok, tf.equal(tf.strings.substr(head, 0, len(magic)), magic))
    return ok


def diagnose_image_file(path):
    """Why ``path`` cannot be decoded as an image, or None when it decodes.

    Uses the same decoder as the pipeline (``decode_rgb``), so "decodes here" means
    "decodes there".
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return "file is missing (deleted after the folder was indexed?)"
    except OSError as error:
        return f"cannot be read: {error.strerror or error}"
    return diagnose_image_bytes(data, what="file")


def diagnose_image_bytes(data, what="record"):
    """Why the encoded image ``data`` cannot be decoded, or None when it decodes."""
    if not data:
        return f"empty {what} (0 bytes)"
    if not has_image_header(data):
        return f"not an image (starts with {data[:8]!r})"
    try:
        decode_rgb(tf.constant(data))
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
        if data.startswith(b"\xff\xd8\xff") and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
            return f"truncated JPEG ({len(data)} bytes, no end-of-image marker)"
        if data.startswith(b"\x89PNG") and b"IEND" not in data[-32:]:
            return f"truncated PNG ({len(data)} bytes, no IEND chunk)"
        message = str(error.message if hasattr(error, "message") else error).strip()
        message = message.split("}}")[-1].strip().splitlines()[0] if message else "unknown"
        return f"cannot be decoded: {message}"
    return None


def describe_bad_records(records, max_listed=20, list_path=None):
    """One human line about ``records`` (``{path: (skips, reason)}``).

    Args:
        records: from :meth:`BadRecordTracker.bad_records`.
        max_listed: name at most this many files in the line.
        list_path: when given, the full list is (re)written there, one
            ``path<TAB>times skipped<TAB>reason`` per line, and the line points to it when it
            had to leave files out.

    Returns:
        the message ("" when ``records`` is empty).
    """
    if not records:
        return ""
    items = list(records.items())
    shown = ", ".join(f"{path} ({reason})" for path, (_, reason) in items[:max_listed])
    message = f"skipped {len(items)} unreadable file{'s' if len(items) != 1 else ''}: {shown}"
    if list_path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(list_path)), exist_ok=True)
        with open(list_path, "w", encoding="utf-8") as f:
            for path, (count, reason) in items:
                f.write(f"{path}\t{count}\t{reason}\n")
    if len(items) > max_listed:
        where = f"; full list in {list_path}" if list_path is not None else ""
        message += f", ... ({len(items) - max_listed} more{where})"
    return message
