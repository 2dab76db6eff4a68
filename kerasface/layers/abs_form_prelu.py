"""PReLU written as ``x * (1 + a) / 2 + |x| * (1 - a) / 2`` so int8 TFLite runs it in XNNPACK."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasface")
class AbsFormPReLU(keras.layers.Layer):
    """Parametric ReLU computed from ``|x|``: the same function as ``keras.layers.PReLU``.

    ``prelu(x) = max(x, 0) + a * min(x, 0) = x * (1 + a) / 2 + |x| * (1 - a) / 2`` for every
    per-channel slope ``a`` (He et al., "Delving Deep into Rectifiers", 2015, Eq. 1). Why
    another form: LiteRT's XNNPACK delegate has no int8 PRELU kernel, so every PReLU of an int8
    MobileFaceNet splits the delegated graph and runs on LiteRT's slow reference kernel (33
    splits, int8 ~6x slower than float32). ``|x|`` is written ``leaky_relu(x, -1)``, which
    converts to LEAKY_RELU; XNNPACK runs it, MUL and ADD in int8, keeping one partition.
    Use it at export time (``kerasface.export.prelu_rewrite.with_abs_form_prelu``), not to train.

    Args:
        fold_scale: compute ``s x + |s x| (1 - a) / (1 + a)`` with ``s = (1 + a) / 2``, which
            is the same for ``a > -1`` and lets the converter fold the multiply by ``s`` into
            the convolution before it (3 int8 ops, not 4). Only valid while every slope is
            above -1; ``with_abs_form_prelu`` sets it from the trained slopes.
        alpha_initializer: initializer of the slopes (PReLU's default is zeros).
        shared_axes: axes sharing one slope, as in ``keras.layers.PReLU``.
        **kwargs: ``keras.layers.Layer`` arguments.

    Call arguments:
        inputs: float tensor (B, ..., C).

    Returns:
        Same shape and dtype as ``inputs``.
    """

    def __init__(self, fold_scale=False, alpha_initializer="zeros", shared_axes=None, **kwargs):
        super().__init__(**kwargs)
        self.fold_scale = bool(fold_scale)
        self.alpha_initializer = keras.initializers.get(alpha_initializer)
        if shared_axes is None or isinstance(shared_axes, (list, tuple)):
            self.shared_axes = None if shared_axes is None else [int(axis) for axis in shared_axes]
        else:
            self.shared_axes = [int(shared_axes)]

    def build(self, input_shape):
        shape = list(input_shape[1:])
        for axis in self.shared_axes or ():
            shape[axis - 1] = 1
        if any(size is None for size in shape):
            raise ValueError(
                f"AbsFormPReLU needs every non-batch, non-shared input dimension known, got input "
                f"shape {tuple(input_shape)} with shared_axes={self.shared_axes}"
            )
        self.alpha = self.add_weight(name="alpha", shape=tuple(shape), initializer=self.alpha_initializer)

    def call(self, inputs):
        alpha = ops.cast(self.alpha, inputs.dtype)
        if not self.fold_scale:
            magnitude = ops.leaky_relu(inputs, negative_slope=-1.0)
            return inputs * ((1.0 + alpha) * 0.5) + magnitude * ((1.0 - alpha) * 0.5)
        # With s = (1 + a) / 2 > 0, |s x| = s |x|, so prelu(x) = s x + |s x| (1 - a) / (1 + a);
        # s x is the convolution's only user, so the converter folds the multiply into it.
        scaled = inputs * ((1.0 + alpha) * 0.5)
        magnitude = ops.leaky_relu(scaled, negative_slope=-1.0)
        return scaled + magnitude * ((1.0 - alpha) / (1.0 + alpha))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "fold_scale": self.fold_scale,
                "alpha_initializer": keras.initializers.serialize(self.alpha_initializer),
                "shared_axes": self.shared_axes,
            }
        )
        return config
