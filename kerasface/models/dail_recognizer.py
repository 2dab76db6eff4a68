"""FaceRecognizer with DAIL's dataset classifier behind a gradient reversal layer."""

import keras

from kerasface.heads.dataset_aware_head import label_dataset_ids
from kerasface.heads.margin_head import _is_pair
from kerasface.layers.dataset_classifier import DatasetClassifier
from kerasface.layers.gradient_reversal import GradientReversal
from kerasface.models.face_recognizer import FaceRecognizer, _normalized, _with_labels_as_input


@keras.saving.register_keras_serializable(package="kerasface")
class DAILRecognizer(FaceRecognizer):
    """Embedding G_f, identity head G_y and dataset classifier G_d, trained together.

    DAIL (Wang et al., ICPR 2020), Fig. 3 and eq. 5-8. The identity branch is any margin
    head, usually a :class:`kerasface.heads.DatasetAwareHead` (eq. 3-4) over datasets that
    own contiguous label ranges (:class:`kerasface.data.CombinedSource`). The dataset branch
    is ``G_d(GRL(G_f(x)))``: a :class:`GradientReversal` then a :class:`DatasetClassifier`,
    trained with cross-entropy on the dataset index, which is derived in the step from the
    label's range, so batches stay ``(images, labels)``.

    With the reversal strength lambda = 0 the embedding gets no gradient from L_d (DAIL's
    stage 1, eq. 9-10: G_d trains on a frozen view of the embedding); lambda > 0 is stage 2
    (eq. 7-8), G_f then maximises L_d scaled by lambda. Switch stages with
    :class:`kerasface.training.GradientReversalSchedule`. The total loss ``fit`` minimises
    is ``L_cls + dataset_loss_weight * L_d``; only G_d sees the second term at full weight.

    Compile with :meth:`compile_losses` (or dict losses keyed ``"identity"`` and
    ``"dataset"``). Logged metrics: ``identity_loss``, ``dataset_loss`` and the accuracies.

    Args:
        backbone: the embedding network G_f, images (B, 112, 112, 3) -> (B, D).
        head: the margin head G_y (plain or dataset-aware).
        dataset_num_classes: class counts ``[C_1, ..., C_K]`` in label order (K >= 2).
        dataset_classifier: a ``DatasetClassifier`` for K datasets (default: one with
            ``hidden_units=(256,)``).
        gradient_reversal: a ``GradientReversal`` layer (default: lambda = 0, stage 1).
        **kwargs: passed to ``keras.Model``.

    Call arguments:
        inputs: ``images`` for L2-normalised embeddings, or ``(images, labels)`` for
            ``{"identity": (B, C) logits, "dataset": (B, K) logits}``.
        training: forwarded to every part.

    Returns:
        (B, D) float32 embeddings, or the dict of float32 logits.
    """

    def __init__(self, backbone, head, dataset_num_classes, dataset_classifier=None, gradient_reversal=None, **kwargs):
        super().__init__(backbone, head, **kwargs)
        counts = [int(count) for count in dataset_num_classes]
        if len(counts) < 2 or min(counts) < 1:
            raise ValueError(
                f"`dataset_num_classes` must list >= 2 positive class counts, got {list(dataset_num_classes)!r}"
            )
        if sum(counts) != head.num_classes:
            raise ValueError(
                f"`dataset_num_classes` {counts} sums to {sum(counts)}, but the head has "
                f"num_classes={head.num_classes}"
            )
        self.dataset_num_classes = counts
        self.dataset_classifier = dataset_classifier or DatasetClassifier(len(counts), name="dataset_classifier")
        if self.dataset_classifier.num_datasets != len(counts):
            raise ValueError(
                f"the dataset classifier predicts {self.dataset_classifier.num_datasets} datasets, "
                f"but `dataset_num_classes` lists {len(counts)}"
            )
        self.gradient_reversal = gradient_reversal or GradientReversal(0.0, name="gradient_reversal")

    @property
    def num_datasets(self):
        """The number of datasets K."""
        return len(self.dataset_num_classes)

    def dataset_ids(self, labels):
        """Dataset index of each label, int32 (B,), from the label ranges."""
        return label_dataset_ids(labels, self.dataset_num_classes)

    def build(self, input_shape):
        super().build(input_shape)
        images_shape = input_shape[0] if _is_pair(input_shape) else input_shape
        embedding_shape = self.backbone.compute_output_shape(images_shape)
        # Deserialisation may already have built them from their own build configs.
        for layer in (self.gradient_reversal, self.dataset_classifier):
            if not layer.built:
                layer.build(embedding_shape)

    def call(self, inputs, training=None):
        if not _is_pair(inputs):
            return super().call(inputs, training=training)
        images, labels = inputs
        embeddings = self.backbone(_normalized(images), training=training)
        identity = self.head([embeddings, labels], training=training)
        dataset = self.dataset_classifier(self.gradient_reversal(embeddings), training=training)
        return {"identity": identity, "dataset": dataset}

    def compile_losses(self, optimizer, dataset_loss_weight=1.0, **kwargs):
        """``compile`` with the identity and dataset cross-entropies and their accuracies."""
        return self.compile(
            optimizer=optimizer,
            loss={
                "identity": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                "dataset": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            },
            loss_weights={"identity": 1.0, "dataset": float(dataset_loss_weight)},
            metrics={
                "identity": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                "dataset": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            },
            **kwargs,
        )

    def train_step(self, data):
        return keras.Model.train_step(self, self._with_targets(data))

    def test_step(self, data):
        return keras.Model.test_step(self, self._with_targets(data))

    def _with_targets(self, data):
        (x, labels), y, *weight = _with_labels_as_input(data)
        if isinstance(y, dict):
            return data
        targets = {"identity": y, "dataset": self.dataset_ids(y)}
        return ((x, labels), targets, *weight)

    _NESTED = (*FaceRecognizer._NESTED, "dataset_classifier", "gradient_reversal")

    def get_config(self):
        config = super().get_config()
        config["dataset_num_classes"] = list(self.dataset_num_classes)
        return config
