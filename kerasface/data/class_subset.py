"""A view of a source restricted to some of its classes, relabelled 0..K'-1 (long-tail cutting)."""

import logging
import numbers

import numpy as np
import tensorflow as tf

from kerasface.data.record_source import RecordSource

logger = logging.getLogger(__name__)

# Attributes a multi-dataset (DAIL) parent exposes; a subset of it re-derives all of them.
_DATASET_ATTRIBUTES = ("dataset_indices", "dataset_num_classes", "class_to_dataset", "dataset_names")


class ClassSubset(RecordSource):
    """The records of the kept classes of ``source``, with labels renumbered in original order.

    Kept class ``kept_classes[j]`` of the parent becomes label ``j``; records keep their
    relative order, and record ``i`` here is parent record ``record_indices[i]``. Reads go
    through the parent (one in-graph gather of the indices), so the parent's fast path and
    bad-record handling are kept.

    When the parent mixes several datasets (a :class:`CombinedSource`: it has
    ``dataset_indices``, ``dataset_num_classes``, ``class_to_dataset``), the subset exposes
    the same attributes, re-derived: the kept classes of each dataset stay contiguous and in
    dataset order, so ``dataset_num_classes`` becomes the kept class count per dataset and
    ``DatasetAwareHead`` ranges stay right. A dataset that would lose all its classes or
    records is an error (it would leave a dataset with no classes for the head and no
    records for its sampling weight); cut each source before combining to drop it instead.
    Those attributes are absent when the parent has no datasets.

    Args:
        source: the parent ``RecordSource``.
        keep_classes: which parent classes to keep: a boolean mask of length
            ``source.num_classes``, or a list/array of class ids (unique, in range; their
            order does not matter, new labels follow the original order).
        min_images: the threshold the classes were chosen by, if any (only for
            :meth:`summary`); set by :func:`cut_long_tail`.
        name: name of the view (default: the parent's name).

    Attributes:
        kept_classes: int64 (K',), the parent label of each new label.
        original_to_new: int32 (C,), the new label of each parent label, -1 when dropped.
        record_indices: int64 (N',), the parent record index of each record here.
        num_dropped_classes, num_dropped_records: what the subset leaves out.
    """

    def __init__(self, source, keep_classes, min_images=None, name=None):
        if not isinstance(source, RecordSource):
            raise TypeError(f"`source` must be a RecordSource, got {type(source).__name__}: {source!r}")
        self.source = source
        self.min_images = min_images
        self.keep_classes = _keep_mask(source, keep_classes)
        self.kept_classes = np.flatnonzero(self.keep_classes).astype(np.int64)
        if self.kept_classes.size == 0:
            raise ValueError(
                f"{source.name}: no class is kept"
                + (f" (no class has >= {min_images} images)" if min_images is not None else "")
                + f"; the source has {source.num_classes} classes, largest "
                f"{int(source.class_counts().max()) if source.num_classes else 0} images"
            )
        self.original_to_new = np.full(source.num_classes, -1, np.int32)
        self.original_to_new[self.kept_classes] = np.arange(self.kept_classes.size, dtype=np.int32)
        self.record_indices = np.flatnonzero(self.keep_classes[source.labels]).astype(np.int64)
        labels = self.original_to_new[source.labels[self.record_indices]]
        class_names = None
        if source.class_names is not None:
            class_names = [source.class_names[c] for c in self.kept_classes]
        super().__init__(
            labels,
            num_classes=int(self.kept_classes.size),
            class_names=class_names,
            name=name or source.name,
        )
        self.read_chunk = source.read_chunk
        self.num_dropped_classes = source.num_classes - self.num_classes
        self.num_dropped_records = source.num_records - self.num_records
        if any(hasattr(source, attribute) for attribute in _DATASET_ATTRIBUTES):
            self._derive_datasets()
        self._indices_tensor = None

    # ---- multi-dataset parents -----------------------------------------------------------

    def _derive_datasets(self):
        source = self.source
        missing = [a for a in _DATASET_ATTRIBUTES if getattr(source, a, None) is None]
        if missing:
            raise ValueError(
                f"{source.name}: has some multi-dataset attributes but not {missing}; cannot "
                "re-derive its dataset ranges for the subset"
            )
        num_datasets = len(source.dataset_num_classes)
        class_to_dataset = np.asarray(source.class_to_dataset)
        parent_indices = np.asarray(source.dataset_indices)
        if np.any(np.diff(class_to_dataset) < 0) or np.any(np.diff(parent_indices) < 0):
            raise ValueError(
                f"{source.name}: datasets do not own contiguous, ordered label and record ranges; "
                "the subset cannot keep DAIL ranges"
            )
        self.class_to_dataset = class_to_dataset[self.kept_classes].astype(np.int32)
        self.dataset_indices = parent_indices[self.record_indices].astype(np.int32)
        classes = np.bincount(self.class_to_dataset, minlength=num_datasets)
        records = np.bincount(self.dataset_indices, minlength=num_datasets)
        names = list(source.dataset_names)
        emptied = [
            f"{names[k]} ({classes[k]} classes, {records[k]} images left)"
            for k in range(num_datasets)
            if classes[k] == 0 or records[k] == 0
        ]
        if emptied:
            cause = f"with >= {self.min_images} images " if self.min_images is not None else ""
            raise ValueError(
                f"{source.name}: the subset keeps no class {cause}or no image of dataset(s) "
                f"{', '.join(emptied)}; an empty dataset cannot have a DAIL label range or a "
                "sampling weight. Cut each source before combining, and leave that dataset out"
            )
        self.dataset_names = names
        self.dataset_num_classes = classes.astype(int).tolist()
        self.label_offsets = np.concatenate([[0], np.cumsum(classes)[:-1]]).astype(int).tolist()
        self.weights = getattr(source, "weights", None)
        self._record_starts = np.searchsorted(self.dataset_indices, np.arange(num_datasets + 1))

    def record_range(self, dataset):
        """``range`` of the record indices of dataset ``dataset`` (multi-dataset parents only)."""
        if not hasattr(self, "dataset_indices"):
            raise ValueError(f"{self.name}: the parent {self.source.name} is not a mix of datasets")
        num_datasets = len(self.dataset_num_classes)
        if isinstance(dataset, bool) or not isinstance(dataset, numbers.Integral) or not (
            0 <= dataset < num_datasets
        ):
            raise ValueError(f"{self.name}: dataset must be an int in [0, {num_datasets}), got {dataset!r}")
        return range(int(self._record_starts[dataset]), int(self._record_starts[dataset + 1]))

    # ---- reading -------------------------------------------------------------------------

    def parent_index(self, index):
        """The parent's record index of record ``index`` (Python side)."""
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not (
            0 <= index < self.num_records
        ):
            raise IndexError(f"{self.name}: record index must be in [0, {self.num_records}), got {index!r}")
        return int(self.record_indices[index])

    def read(self, indices):
        """In-graph: int64 (n,) indices -> the parent's bytes of ``record_indices[indices]``."""
        indices = tf.reshape(tf.cast(indices, tf.int64), [-1])
        # tf.gather on the CPU raises for an out-of-range index rather than reading garbage.
        return self.source.read(tf.gather(self._indices(), indices))

    def _indices(self):
        # One eager tensor, captured by every traced read, rather than an N-long constant
        # embedded in each graph.
        if self._indices_tensor is None:
            with tf.init_scope(), tf.device("/CPU:0"):
                self._indices_tensor = tf.constant(self.record_indices, tf.int64)
        return self._indices_tensor

    def describe(self, index):
        return self.source.describe(self.parent_index(index))

    def read_bytes(self, index):
        return self.source.read_bytes(self.parent_index(index))

    def diagnose(self, index):
        return self.source.diagnose(self.parent_index(index))

    # ---- reporting -----------------------------------------------------------------------

    def summary(self):
        """One line: what was kept and what was dropped."""
        line = (
            f"kept {self.num_classes:,} of {self.source.num_classes:,} identities "
            f"({self.num_records:,} of {self.source.num_records:,} images); "
            f"dropped {self.num_dropped_classes:,}"
        )
        if self.min_images is not None:
            return line + f" with fewer than {self.min_images:,} images"
        return line + f" ({self.num_dropped_records:,} images)"

    def __repr__(self):
        return (
            f"ClassSubset({self.name!r}, {self.num_records} of {self.source.num_records} records, "
            f"{self.num_classes} of {self.source.num_classes} classes)"
        )


def cut_long_tail(source, min_images):
    """Keep only the classes of ``source`` with at least ``min_images`` images.

    Long-tail cutting as in LFRC: identities with very few images add classifier rows that
    are barely trained and mostly act as noise. The result is a :class:`ClassSubset`
    (labels 0..K'-1 in original order); its :meth:`ClassSubset.summary` is logged.

    Args:
        source: a ``RecordSource`` (a ``CombinedSource`` too: see ``ClassSubset``).
        min_images: int >= 1; classes with fewer images are dropped (1 drops only declared
            classes without images).

    Returns:
        a ``ClassSubset``.
    """
    if isinstance(min_images, bool) or not isinstance(min_images, numbers.Integral) or min_images < 1:
        raise ValueError(f"`min_images` must be an int >= 1, got {min_images!r}")
    if not isinstance(source, RecordSource):
        raise TypeError(f"`source` must be a RecordSource, got {type(source).__name__}: {source!r}")
    subset = ClassSubset(source, source.class_counts() >= min_images, min_images=int(min_images))
    logger.info("%s: %s", source.name, subset.summary())
    return subset


def _keep_mask(source, keep_classes):
    keep = np.asarray(keep_classes)
    if keep.ndim != 1:
        raise ValueError(
            f"{source.name}: `keep_classes` must be a 1-D boolean mask or list of class ids, got "
            f"shape {keep.shape}"
        )
    if keep.dtype == bool:
        if keep.size != source.num_classes:
            raise ValueError(
                f"{source.name}: boolean `keep_classes` has length {keep.size}, the source has "
                f"{source.num_classes} classes"
            )
        return keep.copy()
    if keep.size and not np.issubdtype(keep.dtype, np.integer):
        raise ValueError(
            f"{source.name}: `keep_classes` must be a boolean mask or integer class ids, got dtype "
            f"{keep.dtype}"
        )
    keep = keep.astype(np.int64)
    outside = keep[(keep < 0) | (keep >= source.num_classes)]
    if outside.size:
        raise ValueError(
            f"{source.name}: class ids {outside[:5].tolist()} in `keep_classes` are outside "
            f"0..{source.num_classes - 1}"
        )
    values, counts = np.unique(keep, return_counts=True)
    if np.any(counts > 1):
        raise ValueError(
            f"{source.name}: class ids {values[counts > 1][:5].tolist()} appear more than once in "
            "`keep_classes`"
        )
    mask = np.zeros(source.num_classes, bool)
    mask[keep] = True
    return mask
