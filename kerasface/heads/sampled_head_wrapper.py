"""Shared base of the heads that own a wrapped head's class centres (Partial FC, sharded)."""

import keras
import tensorflow as tf
from keras import ops

from kerasface.heads.head_registry import HEADS
from kerasface.heads.margin_head import MarginHead, _is_pair, l2_normalize


class SampledHeadWrapper(keras.layers.Layer):
    """A layer that keeps a margin head's class centres itself, as rows, and may sample them.

    Subclasses own the (rows, D) centres and the forward pass; this class resolves the
    wrapped head (which keeps its margin and any state but no kernel), validates the
    sample rate and the seed, and serializes them. Both heads return target-first logits,
    so ``FaceRecognizer`` trains them with label 0.

    Args:
        head: the margin: a ``MarginHead`` instance, a registered head name (built with
            ``num_classes``), or a serialized head config.
        num_classes: number of identities C; optional with a head instance.
        sample_rate: the fraction r in (0, 1] of centres a training step uses.
        seed: int seed of the negative draws.
        **kwargs: ``keras.layers.Layer`` arguments (name, ...).
    """

    target_first = True
    # MarginHead methods the wrapped head must not override (its margin must be computable
    # from what the subclass hands it).
    plain_methods = ("call", "cosine", "kernel_shape")

    def __init__(self, head="arcface", num_classes=None, sample_rate=0.1, seed=0, **kwargs):
        kwargs["dtype"] = kwargs.get("dtype") or "float32"
        super().__init__(**kwargs)
        self.head = self._resolve_head(head, num_classes)
        if num_classes is not None and int(num_classes) != self.head.num_classes:
            raise ValueError(
                f"`num_classes` ({num_classes}) differs from the wrapped head's num_classes ({self.head.num_classes})"
            )
        self.num_classes = self.head.num_classes
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)) or not 0 < sample_rate <= 1:
            raise ValueError(f"`sample_rate` must be in (0, 1], got {sample_rate!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"`seed` must be an int, got {seed!r}")
        self.sample_rate = float(sample_rate)
        self.seed = seed
        # The wrapped head keeps its own state (running statistics, adaptive scale) but not
        # a (D, C) kernel: the class centres live in this layer.
        self.head._owns_kernel = False

    @property
    def scale(self):
        return self.head.scale

    def logit_scale(self):
        """The wrapped head's scale s."""
        return self.head.logit_scale()

    def target_curve(self, theta):
        """The wrapped head's target curve: sampling or sharding removes negatives, not the margin."""
        return self.head.target_curve(theta)

    def build_wrapped_head(self, input_shape):
        """Build the wrapped head's own state (no kernel); returns the embedding size D."""
        embedding_shape = input_shape[0] if _is_pair(input_shape) else input_shape
        embedding_size = embedding_shape[-1]
        if embedding_size is None:
            raise ValueError(f"{self.name}: the embedding dimension must be known, got shape {embedding_shape}")
        if not self.head.built:
            self.head.build([embedding_shape, (embedding_shape[0],)])
        return int(embedding_size)

    def row_cosine(self, embeddings, centres):
        """cos(theta) between each embedding (B, D) and each centre row (K, D), (B, K) float32."""
        embeddings = l2_normalize(ops.cast(embeddings, "float32"), axis=-1)
        centres = ops.cast(centres, "float32")
        inverse_norms = 1.0 / ops.sqrt(ops.maximum(ops.sum(ops.square(centres), axis=1), 1e-12))
        # einsum contracts against the rows in place: no transposed (D, K) copy of the centres.
        return ops.clip(ops.einsum("bd,kd->bk", embeddings, centres) * inverse_norms, -1.0, 1.0)

    def draw_rows(self, size, positives, count, replica):
        """Sorted int32 indices of ``count`` rows out of ``size``: every positive, then random others.

        ``positives`` equal to ``size`` stand for "none here" and are ignored. The draw is
        stateless from (seed, ``sample_step``, replica): the same in eager and graph runs and
        across a resume (XLA's generator gives other, equally random, draws).
        """
        seed = tf.stack([tf.constant(self.seed, "int64"), self.sample_step * 1009 + ops.cast(replica, "int64")])
        scores = tf.random.stateless_uniform((size,), seed=seed)
        # One spare score at index `size` takes the ignored positives, then is dropped.
        scores = tf.tensor_scatter_nd_max(
            ops.concatenate([scores, ops.zeros((1,))], axis=0),
            ops.reshape(positives, (-1, 1)),
            ops.full(ops.shape(positives), 2.0),
        )[:size]
        _, index = ops.top_k(scores, count, sorted=False)
        return ops.sort(ops.cast(index, "int32"))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "head": keras.saving.serialize_keras_object(self.head),
                "num_classes": self.num_classes,
                "sample_rate": self.sample_rate,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def _resolve_head(self, head, num_classes):
        if isinstance(head, dict):
            # Unbuilt: this layer builds it without a kernel (a built head would hold one).
            head = keras.saving.deserialize_keras_object({k: v for k, v in head.items() if k != "build_config"})
        elif isinstance(head, str):
            if isinstance(HEADS.get_class(head), type) and issubclass(HEADS.get_class(head), SampledHeadWrapper):
                raise ValueError(f"`head` cannot be {head!r}; name a margin head, e.g. 'arcface'")
            if num_classes is None:
                raise ValueError(f"building the wrapped head {head!r} from its name needs `num_classes`, got None")
            head = HEADS.get(head, num_classes=int(num_classes))
        if not isinstance(head, MarginHead):
            raise ValueError(f"`head` must be a MarginHead, a head name or a head config, got {type(head).__name__}")
        kind = type(head)
        if any(getattr(kind, name) is not getattr(MarginHead, name) for name in self.plain_methods):
            raise ValueError(
                f"{type(self).__name__} needs plain (D, C) class centres and a margin it can apply to a "
                f"subset of them; {kind.__name__} computes its logits its own way (sub-centres, a bias, "
                "statistics over all classes) and cannot be sampled or sharded"
            )
        if head.built and head._owns_kernel:
            raise ValueError(f"`head` {head.name} is already built with its own kernel; pass an unbuilt head or a name")
        return head
