"""Backbone + margin head, trained with ``model.fit`` on (image, label) pairs."""

import keras
import tensorflow as tf  # tf.distribute values: Keras 3 has no API for them
from keras import ops

from kerasface.data.preprocessing import PIXEL_MEAN, PIXEL_SCALE
from kerasface.heads.margin_head import _is_pair, l2_normalize


@keras.saving.register_keras_serializable(package="kerasface")
class FaceRecognizer(keras.Model):
    """A face-embedding backbone trained through a margin head.

    ``fit`` takes ``(images, labels)`` batches: the labels go both to the head (which needs
    them to place the margin) and to the loss. Calling the model on images alone returns
    L2-normalised embeddings, so ``predict`` embeds faces.

    Args:
        backbone: a Keras model mapping images (B, 112, 112, 3) to embeddings (B, D).
        head: a ``kerasface.heads.MarginHead`` (any registered head).
        **kwargs: passed to ``keras.Model``.

    Call arguments:
        inputs: ``images`` for embeddings, or ``(images, labels)`` for margin logits. Images
            are float32 ``(x - 127.5) / 128``, or uint8 pixels, which are normalised first.
        training: forwarded to the backbone and head.

    Returns:
        (B, D) float32 L2-normalised embeddings, or (B, C) float32 logits.
    """

    def __init__(self, backbone, head, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.head = head

    def build(self, input_shape):
        images_shape = input_shape[0] if _is_pair(input_shape) else input_shape
        if not self.backbone.built:
            self.backbone.build(images_shape)
        if not self.head.built:
            self.head.build([self.backbone.compute_output_shape(images_shape), (images_shape[0],)])
        self.built = True

    def call(self, inputs, training=None):
        if _is_pair(inputs):
            images, labels = inputs
            embeddings = self.backbone(_normalized(images), training=training)
            return self.head([embeddings, labels], training=training)
        return l2_normalize(ops.cast(self.backbone(_normalized(inputs), training=training), "float32"))

    # Keras unpacks (x, y) batches and calls the model on x only; the head also needs y,
    # so each step re-packs the batch as ((x, y), y) before the standard Keras step runs.
    def train_step(self, data):
        data = _with_labels_as_input(data, self._target_first())
        if getattr(self.head, "sharded", False):
            return self._sharded_train_step(data)
        return super().train_step(data)

    def _sharded_train_step(self, data):
        # Keras' TF train step, plus the head's shards: their gradient (through the head's
        # collectives) is already the full-batch one, so each replica applies it to its own
        # shard instead of handing it to the optimizer, which would all-reduce it.
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        optimizer = self.optimizer
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            raise ValueError("a sharded head trains in float32 or mixed_bfloat16, not with loss scaling (mixed_float16)")
        shards = self.head.shard_variables()
        with tf.GradientTape() as tape:
            tape.watch(shards)
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            # Keras' loss is scaled by 1 / replicas for the all-reduce: report the unscaled one.
            replicas = self.distribute_strategy.num_replicas_in_sync
            self._loss_tracker.update_state(loss * replicas, sample_weight=ops.shape(x[0])[0])
        weights = self.trainable_weights
        gradients = tape.gradient(loss, weights + shards)
        learning_rate = optimizer.learning_rate  # this step's rate, read before apply() advances it
        optimizer.apply_gradients(zip(gradients[: len(weights)], weights))
        for gradient in gradients[len(weights):]:
            self.head.apply_shard_gradient(
                gradient, learning_rate, momentum=float(getattr(optimizer, "momentum", 0.0) or 0.0),
                weight_decay=float(optimizer.weight_decay or 0.0),
            )
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def test_step(self, data):
        return super().test_step(_with_labels_as_input(data, self._target_first()))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Under a strategy Keras traces one step symbolically on the first batch, to create
        # the metric variables. Keras 3.15 first all-reduces (MEAN) that batch only to learn
        # its shapes, which fails under MultiWorkerMirroredStrategy on uint8 images and on
        # (x, y) tuples; the first replica's own batch has those shapes. Models whose step
        # repacks its batch (LATSE's image targets) give the repacked form (_symbolic_batch).
        if iterator is not None and data_batch is None and self._distribute_strategy is not None:
            for _, _, batches in iterator:
                batch = next(batches)
                local = self.distribute_strategy.experimental_local_results
                data_batch = keras.tree.map_structure(
                    lambda v: local(v)[0] if isinstance(v, tf.distribute.DistributedValues) else v, batch
                )
                data_batch = self._symbolic_batch(data_batch)
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _symbolic_batch(self, data):
        """The batch as the training step hands it to Keras (``data`` as read here)."""
        return data

    def get_metrics_result(self):
        logs = super().get_metrics_result()
        context = tf.distribute.get_replica_context()
        if context is not None and isinstance(context.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3.15 averages each step's logs over workers with reduce(MEAN, axis=0),
            # which fails on scalars (tensorflow/tensorflow#72388): give them that axis.
            logs = {name: ops.reshape(value, (1,)) if len(ops.shape(value)) == 0 else value
                    for name, value in logs.items()}
        return logs

    def _target_first(self):
        # Partial FC returns its logits with the target in column 0 (its sampled columns
        # change every step), so the loss and accuracy see label 0 for every row.
        return bool(getattr(self.head, "target_first", False))

    @property
    def embedding_model(self):
        """The backbone alone with L2-normalised float32 output: what is evaluated and exported."""
        images = keras.Input(self.backbone.input_shape[1:], name="image")
        embeddings = self.backbone(images, training=False)
        # A float32 layer casts its input, so a float16 backbone still gives float32 embeddings.
        outputs = keras.layers.UnitNormalization(axis=-1, dtype="float32", name="l2_normalize")(embeddings)
        return keras.Model(images, outputs, name=f"{self.backbone.name}_embedding")

    # Constructor arguments that are layers/models, serialized as nested Keras objects.
    _NESTED = ("backbone", "head")

    def get_config(self):
        config = super().get_config()
        config.update({key: keras.saving.serialize_keras_object(getattr(self, key)) for key in self._NESTED})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in cls._NESTED:
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def _normalized(images):
    # uint8 batches (FacePipeline(normalize=False)) are normalised here, on the device: 4x
    # less data crosses from the input pipeline, and the conversion leaves the input threads.
    if images.dtype == "uint8":
        return (ops.cast(images, "float32") - PIXEL_MEAN) / PIXEL_SCALE
    return images


def _with_labels_as_input(data, target_first=False):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if _is_pair(x):
        if not target_first:
            return data
        x, y = x[0], x[1]
    if y is None:
        raise ValueError("FaceRecognizer needs (images, labels) batches; got images without labels")
    target = ops.zeros_like(ops.reshape(y, (-1,))) if target_first else y
    return ((x, y), target) if sample_weight is None else ((x, y), target, sample_weight)
