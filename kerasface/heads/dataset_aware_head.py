"""Dataset-aware wrapper (DAIL): softmax only over the classes of the sample's own dataset."""

import keras
import tensorflow as tf
from keras import ops

from kerasface.heads.head_registry import HEADS
from kerasface.heads.margin_head import MarginHead, check_labels

# Logit given to a masked-out class. exp() of it minus any real logit underflows to exactly 0
# in float32 (real logits are bounded by a few times the scale s, or by the bias-head's own
# range), so the class gets softmax weight 0 and gradient 0; being finite, it never produces
# the inf - inf = NaN that -inf does in log-softmax and its gradient.
MASKED_LOGIT = -1e9


@HEADS.register("dataset_aware")
class DatasetAwareHead(keras.layers.Layer):
    """Dataset-aware wrapper of any margin head, with Crossing Dropout.

    Wang et al., "DAIL: Dataset-Aware and Invariant Learning for Face Recognition",
    ICPR 2020, eq. 3-4: when several datasets are trained together with disjoint label
    sets, a sample's softmax runs only over the classes of its own dataset, so an
    identity that appears in two datasets under two labels is not pushed away from
    itself. Other datasets' classes get the logit ``MASKED_LOGIT`` (finite, softmax
    weight exactly 0). Crossing Dropout (DAIL Sec. IV, the modified indicator after
    Table IV) draws ``z ~ U(0, 1)`` independently for every (sample, other-dataset
    class) pair and keeps that class in that sample's softmax when ``z < p``: p=0 is
    the pure dataset-aware loss, p=1 the plain softmax over every class. Classes of the
    sample's own dataset, the target included, are never dropped.

    The datasets own contiguous label ranges: dataset k owns
    ``[sum(C_<k), sum(C_<=k))``. The (B, C) mask is built by comparing the class index
    with each sample's range bounds ``lo <= j < hi`` (bounds looked up in a K-long table),
    never by gathering a C-long class->dataset table. Memory: the mask is inherently
    (B, C) boolean (128 MB at 1M classes x batch 128) plus the masked float32 logits; for
    ``0 < p < 1`` in training add one (B, C) float32 uniform draw (512 MB there). A single
    dataset, p=1, and the inference path skip the mask entirely.

    The wrapped head computes its margin logits over all C classes before the mask, so
    row statistics of heads that use hard negatives (MV-Softmax, NPCFace, CurricularFace
    counts/means) include other datasets' classes. Label smoothing must not be used with
    this head: it would put target mass on masked classes.

    Args:
        head: the wrapped head: a ``MarginHead`` instance, a registered head name (built
            with ``num_classes`` and its defaults), or a serialized head config.
        dataset_num_classes: class counts ``[C_1, C_2, ...]`` of the datasets in label
            order; must sum to the head's number of classes. Default: one dataset.
        crossing_dropout_p: the Crossing Dropout probability p in [0, 1] of keeping an
            other-dataset class (paper: 1e-4; 0 = pure dataset-aware loss).
        seed: int seed of the Crossing Dropout draws, or None for a random one.
        num_classes: total classes C; optional with a head instance (then it must match
            it), needed with a head name unless ``dataset_num_classes`` is given.
        **kwargs: ``keras.layers.Layer`` arguments (name, ...).

    Call arguments:
        inputs: ``[embeddings, labels]`` or ``[embeddings, labels, dataset_ids]`` for the
            masked margin logits, or ``embeddings`` alone for the wrapped head's plain
            scaled cosine logits (inference). The mask follows the labels' ranges;
            ``dataset_ids`` (int (B,)), if given, are checked to agree with them (eagerly
            and in graphs; XLA compiles assertions out).
        training: Crossing Dropout draws only when truthy. Otherwise (evaluation loss)
            every other-dataset class is masked, unless p == 1 (plain softmax).

    Returns:
        float32 (B, C) logits, already scaled by the wrapped head.
    """

    def __init__(
        self,
        head="arcface",
        dataset_num_classes=None,
        crossing_dropout_p=0.0,
        seed=None,
        num_classes=None,
        **kwargs,
    ):
        # Pinned like MarginHead: a mixed policy would autocast the embeddings to float16 here,
        # before the wrapped head's float32 cosine.
        kwargs["dtype"] = kwargs.get("dtype") or "float32"
        super().__init__(**kwargs)
        self.head = _resolve_head(head, num_classes, dataset_num_classes)
        if num_classes is not None and int(num_classes) != self.head.num_classes:
            raise ValueError(
                f"`num_classes` ({num_classes}) differs from the wrapped head's num_classes "
                f"({self.head.num_classes})"
            )
        self.num_classes = self.head.num_classes
        if dataset_num_classes is None:
            dataset_num_classes = [self.num_classes]
        self.dataset_num_classes = _check_dataset_num_classes(dataset_num_classes, self.num_classes)
        if isinstance(crossing_dropout_p, bool) or not 0.0 <= float(crossing_dropout_p) <= 1.0:
            raise ValueError(f"`crossing_dropout_p` must be in [0, 1], got {crossing_dropout_p!r}")
        self.crossing_dropout_p = float(crossing_dropout_p)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`seed` must be an int or None, got {seed!r}")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # starts[k] = first label of dataset k; starts[K] = C.
        starts = [0]
        for count in self.dataset_num_classes:
            starts.append(starts[-1] + count)
        self._starts = starts

    @property
    def num_datasets(self):
        """The number of datasets K."""
        return len(self.dataset_num_classes)

    @property
    def kernel(self):
        """The wrapped head's class-centre kernel."""
        return self.head.kernel

    def cosine(self, embeddings):
        """The wrapped head's cos(theta), (B, C) float32."""
        return self.head.cosine(embeddings)

    def logit_scale(self):
        """The wrapped head's scale s."""
        return self.head.logit_scale()

    def target_curve(self, theta):
        """The wrapped head's target curve: the mask removes negatives, not the margin."""
        return self.head.target_curve(theta)

    def dataset_ids(self, labels):
        """Dataset index of each label, int32 (B,)."""
        return label_dataset_ids(labels, self.dataset_num_classes)

    def build(self, input_shape):
        embedding_shape = input_shape[0] if _is_multi(input_shape) else input_shape
        if not self.head.built:
            self.head.build([embedding_shape, (embedding_shape[0],)])
        self.built = True

    def call(self, inputs, training=None):
        if not _is_multi(inputs):
            return self.head(inputs, training=training)
        embeddings, labels = inputs[0], inputs[1]
        labels = check_labels(labels, self.num_classes)
        logits = self.head([embeddings, labels], training=training)
        dataset_ids = self.dataset_ids(labels)
        if len(inputs) == 3:
            _check_dataset_ids(inputs[2], dataset_ids)
        if self.num_datasets == 1 or self.crossing_dropout_p == 1.0:
            return logits
        starts = ops.convert_to_tensor(self._starts, dtype="int32")
        lo = ops.take(starts, dataset_ids)[:, None]
        hi = ops.take(starts, dataset_ids + 1)[:, None]
        classes = ops.arange(self.num_classes, dtype="int32")[None, :]
        keep = ops.logical_and(classes >= lo, classes < hi)
        if training and self.crossing_dropout_p > 0.0:
            # One z per (sample, class), as in DAIL's indicator 1_{k_i = k_j, z < p}; the
            # own-dataset classes are kept whatever their z.
            z = keras.random.uniform(ops.shape(logits), seed=self.seed_generator)
            keep = ops.logical_or(keep, z < self.crossing_dropout_p)
        return ops.where(keep, logits, ops.cast(MASKED_LOGIT, logits.dtype))

    def compute_output_shape(self, input_shape):
        embedding_shape = input_shape[0] if _is_multi(input_shape) else input_shape
        return (embedding_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "head": keras.saving.serialize_keras_object(self.head),
                "dataset_num_classes": list(self.dataset_num_classes),
                "crossing_dropout_p": self.crossing_dropout_p,
                "seed": self.seed,
                "num_classes": self.num_classes,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["head"] = keras.saving.deserialize_keras_object(config["head"])
        return cls(**config)


def label_dataset_ids(labels, dataset_num_classes):
    """Dataset index of each label, int32 (B,), for datasets owning contiguous label ranges.

    The index is how many later datasets' first labels are <= the label: K-1 comparisons per
    label, no C-long class->dataset table in the graph.
    """
    labels = ops.reshape(ops.cast(labels, "int32"), (-1, 1))
    if len(dataset_num_classes) == 1:
        return ops.zeros_like(labels[:, 0])
    later_starts, total = [], 0
    for count in dataset_num_classes[:-1]:
        total += int(count)
        later_starts.append(total)
    return ops.sum(ops.cast(labels >= ops.convert_to_tensor(later_starts, "int32")[None, :], "int32"), axis=1)


def _resolve_head(head, num_classes, dataset_num_classes):
    if isinstance(head, dict):
        head = keras.saving.deserialize_keras_object(head)
    if isinstance(head, str):
        if num_classes is None:
            if dataset_num_classes is None:
                raise ValueError(
                    f"building the wrapped head {head!r} from its name needs `num_classes` or "
                    "`dataset_num_classes`, got neither"
                )
            num_classes = _sum_counts(dataset_num_classes)
        head = HEADS.get(head, num_classes=int(num_classes))
    if isinstance(head, DatasetAwareHead) or not isinstance(head, MarginHead):
        raise TypeError(
            f"`head` must be a MarginHead (or a registered head name), got {type(head).__name__}: {head!r}"
        )
    return head


def _sum_counts(dataset_num_classes):
    try:
        return sum(int(count) for count in dataset_num_classes)
    except (TypeError, ValueError):
        raise ValueError(
            f"`dataset_num_classes` must be a list of positive ints, got {dataset_num_classes!r}"
        ) from None


def _check_dataset_num_classes(dataset_num_classes, num_classes):
    if isinstance(dataset_num_classes, (str, bytes)) or not hasattr(dataset_num_classes, "__iter__"):
        raise ValueError(f"`dataset_num_classes` must be a list of positive ints, got {dataset_num_classes!r}")
    counts = list(dataset_num_classes)
    bad = [count for count in counts if not _is_positive_int(count)]
    if not counts or bad:
        raise ValueError(
            f"`dataset_num_classes` must be a non-empty list of positive ints, got {counts!r}"
            + (f" (bad entries {bad!r})" if bad else "")
        )
    counts = [int(count) for count in counts]
    if sum(counts) != num_classes:
        raise ValueError(
            f"`dataset_num_classes` {counts} sums to {sum(counts)}, but the wrapped head has "
            f"num_classes={num_classes}"
        )
    return counts


def _is_positive_int(value):
    try:
        return not isinstance(value, (bool, str, bytes)) and int(value) == value and value >= 1
    except (TypeError, ValueError):
        return False


def _check_dataset_ids(given, derived):
    given = ops.reshape(ops.cast(given, "int32"), (-1,))
    # keras.ops has no assertion; tf.debugging raises eagerly and in graphs (no-op under XLA).
    tf.debugging.assert_equal(
        given,
        derived,
        message="dataset_ids disagree with the datasets the labels fall in (per `dataset_num_classes`)",
        summarize=8,
    )


def _is_multi(value):
    """True for ``[embeddings, labels]`` or ``[embeddings, labels, dataset_ids]`` (or shapes)."""
    return (
        isinstance(value, (list, tuple))
        and len(value) in (2, 3)
        and all(isinstance(item, (list, tuple)) or hasattr(item, "shape") for item in value)
    )
