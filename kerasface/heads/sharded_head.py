"""Model-parallel margin head: class centres sharded across the replicas of a strategy."""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kerasface.heads.head_registry import HEADS
from kerasface.heads.margin_head import _is_pair, check_labels, replica_components, sum_over_replicas
from kerasface.heads.partial_fc_head import EXCLUDED_LOGIT
from kerasface.heads.sampled_head_wrapper import SampledHeadWrapper


@HEADS.register("sharded")
class ShardedHead(SampledHeadWrapper):
    """A margin head whose C class centres are split over the N replicas (model parallel).

    Replica r holds centres ``[r S, (r + 1) S)``, ``S = ceil(C / N)`` (a (S, D) ``kernel``
    with per-replica values: a sync-on-read variable, so memory per replica is C/N rows).
    In a step every replica all-gathers the embeddings and labels of the global batch,
    computes the cosines of all of them against its own centres, and the softmax is
    normalised across shards exactly: the target cosine is all-reduced (summed; only the
    shard that owns the label contributes), each shard's maximum is all-gathered, and the
    sums of exponentials are all-reduced. The loss is therefore the one of the unsharded
    head, and the gradient of each shard (which flows back through the collectives) is the
    full-batch gradient of its centres, so the shards need no all-reduce of their own:
    ``FaceRecognizer`` updates them in place on each replica (SGD with momentum and weight
    decay of the model's optimizer, lazily on sampled rows) and the rest of the model as usual.

    With ``sample_rate < 1`` each shard also applies Partial FC to its own centres: it keeps
    the positives of the global batch that fall in it and random others up to
    ``ceil(sample_rate * S)`` (insightface's Partial FC, which is sharded the same way).

    The wrapped head's margin must be expressed by ``target_logit`` and ``negative_logits``
    (ArcFace, CosFace, combined margin, Li-ArcFace, LinearFace, MV-Softmax, ArcNegFace,
    NormFace); heads whose row statistics span all classes (AdaCos, CurricularFace,
    NPCFace, MagFace, AdaFace, SphereFace's schedule, LFRC) are refused.

    ``.keras`` files and backups hold the full (C, D) centre matrix in class order, whatever
    the replica count; loading splits it over the replicas present.

    Args:
        head: the margin: a ``MarginHead`` instance, a registered head name (built with
            ``num_classes``), or a serialized head config.
        num_classes: number of identities C; optional with a head instance.
        sample_rate: Partial FC rate r in (0, 1] within each shard.
        seed: int seed of the centre initialisation and of the negative draws.
        **kwargs: ``keras.layers.Layer`` arguments (name, ...).

    Call arguments:
        inputs: ``[embeddings, labels]`` (this replica's part of the batch), or
            ``embeddings`` alone for the scaled cosines against all C centres.
        training: sample (when ``sample_rate < 1``) or use every centre.

    Returns:
        With labels, float32 (B, 2) logits, **target first**: column 0 the scaled margin
        target logit, column 1 the log-sum-exp of all other classes' scaled logits over all
        shards; softmax cross-entropy with label 0 on them is exactly the head's loss.
        (Argmax 0 then means the target beats the negatives' log-sum-exp, a stricter test
        than top-1.) Without labels, float32 (B, C) scaled cosines.
    """

    sharded = True
    # Besides its own logits, the margin must not use statistics over all the classes.
    plain_methods = SampledHeadWrapper.plain_methods + ("margin_logits", "logit_scale")

    def __init__(self, head="arcface", num_classes=None, sample_rate=1.0, seed=0, **kwargs):
        super().__init__(head, num_classes=num_classes, sample_rate=sample_rate, seed=seed, **kwargs)

    def build(self, input_shape):
        embedding_size = self.build_wrapped_head(input_shape)
        # The replica count is the shard count: fixed when the layer is built in a strategy scope.
        self.num_shards = tf.distribute.get_strategy().num_replicas_in_sync
        self.shard_size = math.ceil(self.num_classes / self.num_shards)
        shape = (self.shard_size, embedding_size)
        # On-read with no aggregation: one independent value per replica (its shard), which
        # Keras' optimizers would all-reduce; the model updates them itself.
        self.kernel = keras.Variable(
            np.zeros(shape, np.float32), trainable=False, name="kernel", synchronization="on_read", aggregation="none"
        )
        self.kernel_momentum = keras.Variable(
            np.zeros(shape, np.float32), trainable=False, name="kernel_momentum", synchronization="on_read",
            aggregation="none",
        )
        if self.sample_rate < 1.0:
            self.sample_step = self.add_weight(
                name="sample_step", shape=(), dtype="int64", initializer="zeros", trainable=False,
                aggregation="only_first_replica",
            )
        rng = np.random.default_rng(self.seed)
        # insightface's N(0, 0.01) for every class, each shard its own rows.
        self.set_centres(rng.normal(0.0, 0.01, (self.num_classes, shape[1])).astype(np.float32))
        self.built = True

    # ---- the shards ------------------------------------------------------------------------

    def shard_variables(self):
        """The per-replica tensors a step differentiates: the kernel (this replica's shard)."""
        return [self.kernel.value]

    def centres(self):
        """The full (C, D) float32 centre matrix in class order, gathered from every shard."""
        parts = [component.numpy() for component in replica_components(self.kernel)]
        return np.concatenate(parts, axis=0)[: self.num_classes]

    def set_centres(self, centres):
        """Split a (C, D) centre matrix over the shards (and zero their momentum)."""
        centres = np.asarray(centres, np.float32)
        expected = (self.num_classes, self.kernel.shape[1])
        if centres.shape != expected:
            raise ValueError(f"{self.name}: centres must have shape {expected}, got {centres.shape}")
        padded = np.zeros((self.shard_size * self.num_shards, expected[1]), np.float32)
        padded[: self.num_classes] = centres
        for index, (kernel, momentum) in enumerate(zip(replica_components(self.kernel), replica_components(self.kernel_momentum))):
            with tf.device(kernel.device):
                kernel.assign(padded[index * self.shard_size : (index + 1) * self.shard_size])
                momentum.assign(tf.zeros_like(momentum))

    def apply_shard_gradient(self, gradient, learning_rate, momentum=0.9, weight_decay=0.0):
        """In replica context: SGD with momentum and decoupled decay on this replica's shard.

        ``gradient`` is this shard's full-batch gradient (row-sparse ``tf.IndexedSlices``
        when sampled: then only those rows and their momentum change, as :class:`LazySGD`).
        """
        from kerasface.training.lazy_sgd import lazy_row_update  # training imports heads

        kernel, velocity = self.kernel.value, self.kernel_momentum.value
        learning_rate = tf.cast(learning_rate, "float32")
        if isinstance(gradient, tf.IndexedSlices):
            rows, weights, new_velocity = lazy_row_update(
                gradient, kernel, velocity, learning_rate, momentum=momentum, decay=weight_decay
            )
            # Sync-on-read variables have no scatter methods; in replica context their handle
            # is this replica's own component.
            if new_velocity is not None:
                tf.raw_ops.ResourceScatterUpdate(resource=velocity.handle, indices=rows, updates=new_velocity)
            tf.raw_ops.ResourceScatterUpdate(resource=kernel.handle, indices=rows, updates=weights)
            return
        weights = tf.convert_to_tensor(kernel)
        new_velocity = velocity * momentum - tf.convert_to_tensor(gradient) * learning_rate
        velocity.assign(new_velocity)
        kernel.assign(weights - weights * (weight_decay * learning_rate) + new_velocity)

    # ---- forward ---------------------------------------------------------------------------

    def _sample(self, local_labels, in_shard, replica):
        """Sorted int32 local rows of this step: the shard's positives plus random others."""
        count = min(self.shard_size, max(math.ceil(self.sample_rate * self.shard_size), int(local_labels.shape[0])))
        return self.draw_rows(self.shard_size, ops.where(in_shard, local_labels, self.shard_size), count, replica)

    def call(self, inputs, training=None):
        context = tf.distribute.get_replica_context()
        shards = self.num_shards
        replicas = None if context is None else context.num_replicas_in_sync
        if replicas != shards and not (replicas is None and shards == 1):
            raise ValueError(
                f"{self.name} was built for {shards} shards and must run in a replica context of the same "
                f"strategy (strategy.run / model.fit), got {'cross-replica context' if context is None else context}"
            )
        replica = context.replica_id_in_sync_group if shards > 1 else 0
        kernel = self.kernel.value
        if not _is_pair(inputs):
            cos = self.row_cosine(inputs, tf.convert_to_tensor(kernel))
            if shards > 1:
                # (N*S, B) gathered along the classes, then back to (B, C).
                cos = ops.transpose(context.all_gather(ops.transpose(cos), axis=0))
            return self.logit_scale() * cos[:, : self.num_classes]
        embeddings, labels = inputs
        labels = check_labels(labels, self.num_classes)
        batch = ops.shape(labels)[0]
        if shards > 1:
            embeddings = context.all_gather(ops.cast(embeddings, "float32"), axis=0)
            labels = context.all_gather(labels, axis=0)
        offset = ops.cast(replica, "int32") * self.shard_size
        local = labels - offset
        in_shard = ops.logical_and(local >= 0, local < self.shard_size)
        if training and self.sample_rate < 1.0:
            index = self._sample(local, in_shard, replica)
            self.sample_step.assign_add(1)
            centres = tf.gather(kernel, index)
            column = ops.cast(ops.searchsorted(index, ops.where(in_shard, local, 0)), "int32")
        else:
            index = ops.arange(self.shard_size, dtype="int32")
            centres = tf.convert_to_tensor(kernel)
            column = ops.where(in_shard, local, 0)
        column = ops.minimum(column, ops.shape(index)[0] - 1)
        cos = self.row_cosine(embeddings, centres)
        own = ops.take_along_axis(cos, ops.reshape(column, (-1, 1)), axis=1)[:, 0]
        cos_target = sum_over_replicas(ops.where(in_shard, own, 0.0))[0]
        target = self.head.target_logit(cos_target)
        logits = self.head.negative_logits(cos, cos_target, target)
        is_target = ops.logical_and(
            ops.arange(ops.shape(index)[0], dtype="int32")[None, :] == column[:, None], in_shard[:, None]
        )
        # Columns past C (padding of the last shard) and each row's own target are no negatives.
        exists = (index + offset) < self.num_classes
        logits = ops.where(ops.logical_or(is_target, ops.logical_not(exists)[None, :]), EXCLUDED_LOGIT, logits)
        scaled = self.logit_scale() * logits
        row_max = ops.max(scaled, axis=1)
        if shards > 1:
            row_max = ops.max(ops.reshape(context.all_gather(row_max, axis=0), (shards, -1)), axis=0)
        row_max = ops.stop_gradient(row_max)
        sums = sum_over_replicas(ops.sum(ops.exp(scaled - row_max[:, None]), axis=1))[0]
        negatives = row_max + ops.log(ops.maximum(sums, 1e-30))
        pair = ops.stack([self.logit_scale() * target, negatives], axis=1)
        if shards > 1:
            start = ops.cast(replica, "int32") * batch
            pair = ops.slice(pair, [start, 0], [batch, 2])
        return pair

    def compute_output_shape(self, input_shape):
        embedding_shape = input_shape[0] if _is_pair(input_shape) else input_shape
        return (embedding_shape[0], 2) if _is_pair(input_shape) else (embedding_shape[0], self.num_classes)

    # ---- saving: the full matrix, whatever the replica count -------------------------------

    def save_own_variables(self, store):
        store["centres"] = self.centres()
        if self.sample_rate < 1.0:
            store["sample_step"] = np.asarray(self.sample_step.numpy())
        momentum = np.concatenate([c.numpy() for c in replica_components(self.kernel_momentum)], axis=0)
        store["momentum"] = momentum[: self.num_classes]

    def load_own_variables(self, store):
        self.set_centres(np.asarray(store["centres"]))
        padded = np.zeros((self.shard_size * self.num_shards, self.kernel.shape[1]), np.float32)
        padded[: self.num_classes] = np.asarray(store["momentum"])
        for index, component in enumerate(replica_components(self.kernel_momentum)):
            component.assign(padded[index * self.shard_size : (index + 1) * self.shard_size])
        if self.sample_rate < 1.0 and "sample_step" in store:
            self.sample_step.assign(np.asarray(store["sample_step"]))


