"""Partial FC: any margin head over a sampled subset of the class centres at each step."""

import math

import tensorflow as tf
from keras import ops

from kerasface.heads.head_registry import HEADS
from kerasface.heads.margin_head import _is_pair, check_labels, gather_target, replace_target
from kerasface.heads.sampled_head_wrapper import SampledHeadWrapper

# Rows initialised at a time in kernels larger than this.
INIT_BLOCK_ROWS = 1 << 16

# The target's own column among the negatives: exp(s * EXCLUDED_LOGIT) is exactly 0 in float32.
EXCLUDED_LOGIT = -1e4


@HEADS.register("partial_fc")
class PartialFCHead(SampledHeadWrapper):
    """Partial FC: a margin head whose softmax uses a random subset of the class centres.

    Each training step keeps every class that has a sample in the batch (positives) and
    random other classes up to ``K = ceil(sample_rate * C)`` centres, insightface's Partial
    FC v2 rule (An et al., "Killing Two Birds with One Stone: Efficient and Robust Training
    of Face Recognition CNNs by Partial FC", CVPR 2022, Sec. 3.2: positives always, then
    uniform negatives). The wrapped head applies its margin to the (B, K) cosines as usual.

    The centres are stored as rows, a (C, D) ``kernel``, so the step reads them with a
    gather and their gradient is a row-sparse ``tf.IndexedSlices`` of K rows, never a dense
    (C, D) array. Pair it with :class:`kerasface.training.LazySGD`, which then updates only
    those rows and their momentum (Keras' SGD, like torch's in insightface, densifies it and
    moves all C rows every step).

    Under a ``tf.distribute`` strategy every replica draws its own subset (the draw depends
    on ``seed``, the step and the replica id) for its own part of the batch.

    Args:
        head: the margin: a ``MarginHead`` instance, a registered head name (built with
            ``num_classes``), or a serialized head config. Heads with their own centre
            layout (sub-center ArcFace), a bias (softmax) or a wrapper are refused.
        num_classes: number of identities C; optional with a head instance.
        sample_rate: r in (0, 1]; 1 keeps every centre (the dense head, stored as rows).
        seed: int seed of the negative draws.
        **kwargs: ``keras.layers.Layer`` arguments (name, ...).

    Call arguments:
        inputs: ``[embeddings, labels]`` for margin logits, or ``embeddings`` alone for the
            scaled cosines against every centre (inference).
        training: sample (True) or use all C centres (False).

    Returns:
        With labels, float32 (B, 1 + K) logits, **target first**: column 0 holds each row's
        margin target logit, columns 1..K the used centres in class order with the target's
        own column at ``EXCLUDED_LOGIT * s``; the cross-entropy target is therefore always 0
        (``FaceRecognizer`` passes zeros to the loss when ``head.target_first``). K = C when
        not training. Without labels, float32 (B, C) scaled cosines.
    """

    def num_sampled(self, batch_size=0):
        """K, the centres one step uses: ``ceil(r * C)``, at least the batch size, at most C."""
        return min(self.num_classes, max(math.ceil(self.sample_rate * self.num_classes), int(batch_size)))

    def build(self, input_shape):
        shape = (self.num_classes, self.build_wrapped_head(input_shape))
        blocks = self.num_classes > INIT_BLOCK_ROWS
        self.kernel = self.add_weight(
            name="kernel",
            shape=shape,
            # Large kernels start at zeros and are filled block by block: initialising a
            # (C, D) tensor at once holds a second kernel-sized copy (8 GiB at 4M x 512).
            initializer="zeros" if blocks else self.head.kernel_initializer,
            regularizer=self.head.kernel_regularizer,
        )
        if blocks:
            # Each block sees its own fan in a variance-scaling initializer; cosine logits do
            # not depend on a centre's norm.
            initializer = self.head.kernel_initializer
            config = initializer.get_config()
            for index, start in enumerate(range(0, self.num_classes, INIT_BLOCK_ROWS)):
                rows = min(INIT_BLOCK_ROWS, self.num_classes - start)
                if "seed" in config:
                    # A Keras initializer returns the same values at every call: one seed per block.
                    base = 0 if config["seed"] is None else int(config["seed"])
                    block_seed = (base * 1_000_003 + self.seed * 7919 + index) % (2**31 - 1)
                    initializer = type(self.head.kernel_initializer).from_config({**config, "seed": block_seed})
                # A row scatter: a sliced assign rewrites the whole variable (copy on write).
                self.kernel.value.scatter_update(
                    tf.IndexedSlices(initializer((rows, shape[1])), tf.range(start, start + rows))
                )
        # Counts training steps so each step draws a new subset, and a resumed run (the
        # counter is checkpointed) continues the sequence instead of repeating it.
        self.sample_step = self.add_weight(
            name="sample_step",
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )
        self.built = True

    def cosine(self, embeddings, centres=None):
        """cos(theta) between each embedding and each row of ``centres`` (default: all C)."""
        return self.row_cosine(embeddings, self.kernel if centres is None else centres)

    def sample(self, labels):
        """Sorted int32 indices (K,) of this step's centres: every label's class plus random others."""
        batch_size = labels.shape[0]
        if batch_size is None:
            count = ops.minimum(self.num_classes, ops.maximum(self.num_sampled(), ops.shape(labels)[0]))
        else:
            count = self.num_sampled(batch_size)
        context = tf.distribute.get_replica_context()
        replica = 0 if context is None else context.replica_id_in_sync_group
        return self.draw_rows(self.num_classes, labels, count, replica)

    def call(self, inputs, training=None):
        if not _is_pair(inputs):
            return self.logit_scale() * self.cosine(inputs)
        embeddings, labels = inputs
        labels = check_labels(labels, self.num_classes)
        if training and self.num_sampled(labels.shape[0] or 0) < self.num_classes:
            index = self.sample(labels)
            self.sample_step.assign_add(1)
            # A sparse read of the variable (ResourceGather): ops.take would first read the whole
            # (C, D) value, and the optimizer's row update would then copy all of it (copy on write).
            centres = tf.gather(self.kernel.value, index)
            local_labels = ops.cast(ops.searchsorted(index, labels), "int32")
        else:
            centres, local_labels = self.kernel, labels
        cos = self.cosine(embeddings, centres)
        cos_target = gather_target(cos, local_labels)
        logits = self.head.margin_logits(cos, cos_target, local_labels, embeddings=embeddings, training=training)
        target = gather_target(logits, local_labels)
        negatives = replace_target(logits, local_labels, ops.full(ops.shape(target), EXCLUDED_LOGIT))
        return self.logit_scale() * ops.concatenate([ops.reshape(target, (-1, 1)), negatives], axis=1)

    def compute_output_shape(self, input_shape):
        embedding_shape = input_shape[0] if _is_pair(input_shape) else input_shape
        if _is_pair(input_shape):
            return (embedding_shape[0], None)
        return (embedding_shape[0], self.num_classes)
