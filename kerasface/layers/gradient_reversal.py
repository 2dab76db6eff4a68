"""Gradient reversal layer (Ganin & Lempitsky): identity forward, ``-lambda * grad`` backward."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasface")
class GradientReversal(keras.layers.Layer):
    """Identity in the forward pass; multiplies the gradient by ``-lambda`` in the backward pass.

    Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015, Sec. 3.3;
    used by DAIL (Wang et al., ICPR 2020, eq. 7-8) between the face embedding G_f and the dataset
    classifier G_d: G_d minimises the dataset loss L_d while G_f, through this layer, maximises
    it, so the embedding stops encoding which dataset a face came from.

    ``lambda`` lives in a non-trainable variable (``self.strength``), so a callback can change
    it during ``fit`` without retracing (:class:`kerasface.training.GradientReversalSchedule`):
    0 during DAIL's first stage, where it is exactly a stop-gradient and G_d trains on a frozen
    view of the embedding (eq. 9-10), then the paper's 0.1, or Ganin's ramp.

    The reversal is written ``sg(x) - lambda * (x - sg(x))`` with ``sg`` the stop-gradient: the
    second term is exactly zero forward, its derivative is ``-lambda``. Plain ``keras.ops``
    keeps it working in eager mode, ``tf.function``, XLA and under ``tf.distribute`` with no
    registered gradient.

    Args:
        strength: initial ``lambda`` (>= 0). DAIL uses 0 in stage 1 and 0.1 in stage 2.
        **kwargs: ``keras.layers.Layer`` arguments (name, dtype, ...).

    Call arguments:
        inputs: any float tensor.

    Returns:
        ``inputs`` unchanged (same shape and dtype).
    """

    def __init__(self, strength=1.0, **kwargs):
        super().__init__(**kwargs)
        self.strength = _check_strength(strength)
        self.supports_masking = True

    def build(self, input_shape):
        # ``lambda_`` not ``strength``: the attribute ``strength`` is the config value.
        self.lambda_ = self.add_weight(
            name="lambda",
            shape=(),
            initializer=keras.initializers.Constant(self.strength),
            trainable=False,
            # Every replica holds the same value; a callback assigns it in cross-replica context.
            aggregation="only_first_replica",
            dtype="float32",
        )

    def set_strength(self, value):
        """Assign a new ``lambda`` (takes effect at the next step, no retrace)."""
        self.lambda_.assign(float(_check_strength(value)))

    def get_strength(self):
        """The current ``lambda`` as a Python float."""
        return float(ops.convert_to_numpy(self.lambda_))

    def call(self, inputs):
        frozen = ops.stop_gradient(inputs)
        return frozen - ops.cast(self.lambda_, inputs.dtype) * (inputs - frozen)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"strength": self.strength})
        return config


def _check_strength(value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`strength` (lambda) must be a number >= 0, got {value!r}") from None
    if isinstance(value, bool) or not number >= 0.0 or number == float("inf"):
        raise ValueError(f"`strength` (lambda) must be a finite number >= 0, got {value!r}")
    return number
