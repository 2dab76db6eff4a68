"""Global norm-aware pooling (insightface's GNAP embedding neck)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasface")
class GlobalNormAwarePooling(keras.layers.Layer):
    """Average pooling in which every position is rescaled to the mean feature norm first.

    ``mean_hw(x * mean_hw(|x|) / |x|)`` where ``|x|`` is the L2 norm over channels at each
    position: positions with strong activations (often background or occluders) no
    longer dominate the average (insightface's GNAP neck for MobileFaceNet).

    Args:
        epsilon: added to the norms so an all-zero position does not divide by zero.
        **kwargs: ``keras.layers.Layer`` arguments.

    Call arguments:
        inputs: (B, H, W, C) feature map.

    Returns:
        (B, C) pooled features, the dtype of ``inputs``.
    """

    def __init__(self, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        if not epsilon > 0:
            raise ValueError(f"`epsilon` must be > 0, got {epsilon}")
        self.epsilon = float(epsilon)

    def call(self, inputs):
        norms = ops.sqrt(ops.sum(ops.square(inputs), axis=-1, keepdims=True) + self.epsilon)
        mean_norm = ops.mean(norms, axis=(1, 2), keepdims=True)
        return ops.mean(inputs * (mean_norm / norms), axis=(1, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
