"""Base class of every training-data source: N encoded face images with integer labels."""

import numpy as np

from kerasface.data.bad_record_tracker import diagnose_image_bytes


class RecordSource:
    """N encoded face images with integer labels, readable by record index inside tf.data.

    A source only indexes and reads bytes; :class:`kerasface.data.FacePipeline` does the
    sampling, decoding, augmentation and batching, the same way for every source. The
    per-record ``labels`` are known up front (from the folder names, the RecordIO headers,
    the TFRecord index) because PK sampling, long-tail cutting and class-balanced weights
    need them before the first image is decoded.

    Subclasses set the attributes below in ``__init__`` (through ``super().__init__``) and
    implement :meth:`read` and :meth:`describe`; :meth:`read_bytes` too, when the generic
    :meth:`diagnose` is to re-read bad records in Python.

    Args:
        labels: int array (N,), the label of each record, in ``[0, num_classes)``.
        num_classes: number of classes; default ``labels.max() + 1``. It may exceed that
            (declared classes without images), never fall below it.
        class_names: optional list of ``num_classes`` identity names, position = label.
        name: short name used in messages and as the dataset name when mixing (DAIL).

    Attributes:
        read_chunk: how many records :meth:`read` is asked for at once. Sources whose read
            runs Python (``tf.numpy_function``) set it > 1 to pay that overhead once per
            chunk; such a read must never raise for a bad record (return ``b""`` instead).
            With 1 (file-per-record sources), :meth:`read` gets a 1-element vector and may
            raise: the pipeline then drops and counts that one record.
    """

    read_chunk = 1

    def __init__(self, labels, num_classes=None, class_names=None, name=None):
        labels = np.asarray(labels)
        if labels.ndim != 1:
            raise ValueError(f"{name}: `labels` must be 1-D, got shape {labels.shape}")
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{name}: `labels` must be integers, got dtype {labels.dtype}")
        labels = labels.astype(np.int32)
        observed = int(labels.max()) + 1 if labels.size else 0
        if num_classes is None:
            num_classes = observed
        if labels.size and int(labels.min()) < 0:
            raise ValueError(f"{name}: labels must be >= 0, got {int(labels.min())}")
        if num_classes < observed:
            raise ValueError(
                f"{name}: a label {observed - 1} is outside the declared {num_classes} classes "
                f"(0..{num_classes - 1})"
            )
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"{name}: {len(class_names)} class names for {num_classes} classes"
            )
        self.labels = labels
        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names is not None else None
        self.name = name or type(self).__name__

    @property
    def num_records(self):
        return len(self.labels)

    def __len__(self):
        return self.num_records

    def class_counts(self):
        """int64 (num_classes,): images per class."""
        return np.bincount(self.labels, minlength=self.num_classes).astype(np.int64)

    def read(self, indices):
        """In-graph: int64 (n,) record indices -> tf.string (n,) encoded image bytes."""
        raise NotImplementedError

    def describe(self, index):
        """Where record ``index`` lives, for messages: a path, or ``file record i (byte o)``."""
        raise NotImplementedError

    def read_bytes(self, index):
        """Python: the encoded bytes of record ``index`` (raises ``OSError``/``ValueError``)."""
        raise NotImplementedError

    def diagnose(self, index):
        """Why record ``index`` cannot be decoded, or None when it decodes (Python side)."""
        try:
            data = self.read_bytes(index)
        except (OSError, ValueError) as error:
            return str(error)
        return diagnose_image_bytes(data)

    def __repr__(self):
        return (
            f"{type(self).__name__}({self.name!r}, {self.num_records} records, "
            f"{self.num_classes} classes)"
        )
