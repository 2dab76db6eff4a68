"""Class-balanced softmax cross-entropy (LFRC eq. 9, Cui et al. CVPR 2019)."""

import base64
import zlib

import keras
import numpy as np
from keras import ops

from kerasface.heads.margin_head import check_labels

# Tag of the compact form ``get_config`` stores the per-class counts in.
_ENCODING = "zlib+base64 little-endian int64"


@keras.saving.register_keras_serializable(package="kerasface")
class ClassBalancedCrossentropy(keras.losses.Loss):
    """Sparse softmax cross-entropy weighted per class by the effective number of samples.

    LFRC (Chai et al., 2019) eq. 9, from Cui et al., "Class-Balanced Loss Based on
    Effective Number of Samples", CVPR 2019: a sample of class y costs
    ``-w_y log softmax(z)_y`` with ``w_c = (1 - beta) / (1 - beta^{n_c})``, n_c the
    number of training samples of class c (LFRC eq. 9 drops the minus sign and the
    normalisation), the weights normalised to sum to C as Cui et al. do, so the loss
    keeps the scale of plain cross-entropy. ``beta = 0`` is plain cross-entropy;
    ``beta -> 1`` tends to inverse-frequency weights. Neither paper fixes beta for
    faces; 0.999 is one of Cui et al.'s values. ``get_config`` stores the counts
    zlib-compressed and base64-encoded (about 2 bytes per class for counts up to a few
    hundred, half a JSON list); the constructor accepts that form back.

    Args:
        class_counts: per-class sample counts, length C, every count a whole number > 0
            (a list, a 1-D array, or the compact form from ``get_config``); see
            ``class_counts`` to get them from an ``ImageFolder``. Kept as a read-only
            int64 array.
        beta: the effective-number hyper-parameter, 0 <= beta < 1.
        from_logits: ``y_pred`` are logits (what every kerasface head returns); False for
            probabilities.
        reduction: Keras loss reduction (default: mean over the batch).
        name: loss name.
        dtype: dtype of the loss computation (default: Keras' floatx).

    Call arguments:
        y_true: int class indices, shape (B,) or (B, 1), each in [0, C).
        y_pred: (B, C) logits or probabilities.

    Returns:
        the reduced loss (per-sample losses with ``reduction=None``).
    """

    def __init__(
        self,
        class_counts,
        beta=0.999,
        from_logits=True,
        reduction="sum_over_batch_size",
        name="class_balanced_crossentropy",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        counts = _decode_counts(class_counts) if isinstance(class_counts, dict) else class_counts
        self.class_counts = _validate_counts(counts)
        if isinstance(beta, bool) or not 0.0 <= beta < 1.0:
            raise ValueError(f"`beta` must be in [0, 1), got {beta!r}")
        self.beta = float(beta)
        self.from_logits = bool(from_logits)
        self.class_weights = class_balanced_weights(self.class_counts, self.beta)

    @property
    def num_classes(self):
        return len(self.class_counts)

    def call(self, y_true, y_pred):
        if y_pred.shape[-1] is not None and y_pred.shape[-1] != self.num_classes:
            raise ValueError(
                f"{self.name}: `y_pred` has {y_pred.shape[-1]} classes but `class_counts` has "
                f"{self.num_classes} entries (y_pred shape {y_pred.shape})"
            )
        labels = check_labels(y_true, self.num_classes)
        crossentropy = ops.sparse_categorical_crossentropy(labels, y_pred, from_logits=self.from_logits)
        weights = ops.take(ops.convert_to_tensor(self.class_weights, dtype=crossentropy.dtype), labels)
        return weights * crossentropy

    def get_config(self):
        config = super().get_config()
        config.update(
            {"class_counts": _encode_counts(self.class_counts), "beta": self.beta, "from_logits": self.from_logits}
        )
        return config


def class_balanced_weights(class_counts, beta):
    """Cui et al.'s per-class weights ``(1 - beta) / (1 - beta^n_c)``, normalised to sum to C.

    Args:
        class_counts: per-class sample counts (length C, each > 0).
        beta: 0 <= beta < 1.

    Returns:
        float32 NumPy array of shape (C,).
    """
    counts = np.asarray(class_counts, np.float64)
    if beta == 0.0:
        weights = np.ones_like(counts)
    else:
        # 1 - beta^n as -expm1(n log beta): exact where beta^n is close to 1.
        weights = (1.0 - beta) / -np.expm1(counts * np.log(beta))
    return (weights * (len(counts) / weights.sum())).astype(np.float32)


def class_counts(source, num_classes=None):
    """Per-class sample counts from labels or from a ``kerasface.data.ImageFolder``.

    An ``ImageFolder`` gives one count per identity from its file list (``labels``,
    ``num_classes``); files that later fail to decode are still counted.

    Args:
        source: an ``ImageFolder`` (anything with ``labels`` and ``num_classes``) or a 1-D
            array of non-negative int labels.
        num_classes: length of the result for plain labels (default: max label + 1);
            taken from the folder for an ``ImageFolder``.

    Returns:
        int64 NumPy array of shape (num_classes,); classes without samples count 0.
    """
    if hasattr(source, "labels") and hasattr(source, "num_classes"):
        labels, num_classes = source.labels, source.num_classes
    else:
        labels = source
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"labels must be a 1-D int array, got dtype {labels.dtype} and shape {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got {labels.min()}")
    if num_classes is not None and labels.size and labels.max() >= num_classes:
        raise ValueError(f"labels must be < num_classes={num_classes}, got {labels.max()}")
    return np.bincount(labels, minlength=num_classes or 0).astype(np.int64)


def _validate_counts(class_counts):
    """The counts as a read-only int64 array, or an error naming the offending class."""
    counts = np.asarray(class_counts)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"`class_counts` must be a non-empty 1-D list of counts, got shape {counts.shape}")
    if counts.dtype.kind not in "iuf":
        raise ValueError(f"`class_counts` must hold numbers, got dtype {counts.dtype}")
    bad = np.flatnonzero(~np.isfinite(counts) | (counts != np.round(counts)) | (counts <= 0))
    if len(bad):
        shown = ", ".join(str(i) for i in bad[:10]) + (", ..." if len(bad) > 10 else "")
        raise ValueError(
            f"`class_counts` must be whole numbers > 0; {len(bad)} classes are not "
            f"(classes {shown}; class {bad[0]} has {counts[bad[0]]})"
        )
    counts = counts.astype(np.int64)
    counts.flags.writeable = False
    return counts


def _encode_counts(counts):
    data = zlib.compress(np.asarray(counts, "<i8").tobytes(), 9)
    return {"encoding": _ENCODING, "data": base64.b64encode(data).decode("ascii")}


def _decode_counts(encoded):
    if encoded.get("encoding") != _ENCODING or "data" not in encoded:
        raise ValueError(
            f"`class_counts` as a dict must be {{'encoding': {_ENCODING!r}, 'data': ...}} "
            f"(from get_config), got keys {sorted(encoded)} with encoding {encoded.get('encoding')!r}"
        )
    return np.frombuffer(zlib.decompress(base64.b64decode(encoded["data"])), "<i8")
