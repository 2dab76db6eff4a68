"""DAIL's dataset classifier G_d: which training dataset an embedding came from."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasface")
class DatasetClassifier(keras.layers.Layer):
    """A small MLP on the face embedding that predicts the sample's dataset index.

    DAIL (Wang et al., ICPR 2020), Sec. III-B, eq. 6: the domain classifier
    ``k_i = G_d(x_i; W_d)`` trained with cross-entropy on the dataset index. Put a
    :class:`kerasface.layers.GradientReversal` in front of it to make the embedding
    dataset-invariant (eq. 7); without one (or with lambda = 0) it is a probe that only
    measures how much dataset information the embedding holds. The paper uses one fully
    connected layer (``hidden_units=()``); the default adds one ReLU hidden layer, which
    makes the adversary stronger.

    Computes in float32 whatever the global policy: it is tiny, and its logits feed a loss.

    Args:
        num_datasets: number of datasets K (>= 2).
        hidden_units: sizes of the hidden ReLU layers, e.g. ``(256,)``; ``()`` for a linear
            classifier.
        normalize: L2-normalise the embedding first, so G_d sees the direction the margin
            head and verification use, not the norm.
        dropout: dropout rate after each hidden layer (0 = none).
        **kwargs: ``keras.layers.Layer`` arguments.

    Call arguments:
        inputs: (B, D) embeddings.
        training: enables dropout.

    Returns:
        float32 (B, K) dataset logits.
    """

    def __init__(self, num_datasets, hidden_units=(256,), normalize=True, dropout=0.0, **kwargs):
        kwargs["dtype"] = kwargs.get("dtype") or "float32"
        super().__init__(**kwargs)
        if isinstance(num_datasets, bool) or not isinstance(num_datasets, int) or num_datasets < 2:
            raise ValueError(f"`num_datasets` must be an int >= 2, got {num_datasets!r}")
        self.num_datasets = num_datasets
        if isinstance(hidden_units, int):
            hidden_units = (hidden_units,)
        hidden_units = tuple(hidden_units)
        bad = [units for units in hidden_units if isinstance(units, bool) or not isinstance(units, int) or units < 1]
        if bad:
            raise ValueError(f"`hidden_units` must be positive ints, got {hidden_units!r}")
        self.hidden_units = hidden_units
        self.normalize = bool(normalize)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self.hidden_layers = [
            keras.layers.Dense(units, activation="relu", dtype=self.dtype_policy, name=f"hidden_{i}")
            for i, units in enumerate(self.hidden_units)
        ]
        self.dropout_layers = [
            keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name=f"dropout_{i}")
            for i in range(len(self.hidden_units))
        ]
        self.output_layer = keras.layers.Dense(num_datasets, dtype=self.dtype_policy, name="dataset_logits")

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(f"DatasetClassifier expects (batch, embedding_size) inputs, got shape {tuple(input_shape)}")
        shape = tuple(input_shape)
        for hidden in self.hidden_layers:
            hidden.build(shape)
            shape = (shape[0], hidden.units)
        self.output_layer.build(shape)
        self.built = True

    def call(self, inputs, training=None):
        x = ops.cast(inputs, "float32")
        if self.normalize:
            x = x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-12))
        for hidden, dropout in zip(self.hidden_layers, self.dropout_layers):
            x = dropout(hidden(x), training=training)
        return self.output_layer(x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_datasets)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_datasets": self.num_datasets,
                "hidden_units": list(self.hidden_units),
                "normalize": self.normalize,
                "dropout": self.dropout,
            }
        )
        return config
