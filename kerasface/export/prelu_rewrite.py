"""Copies of models with every PReLU in the form int8 XNNPACK runs (``AbsFormPReLU``)."""

import keras
import numpy as np

from kerasface.layers.all_layers import all_layers
from kerasface.layers.abs_form_prelu import AbsFormPReLU

# The folded form divides by 1 + a; below this slope the division would amplify rounding.
MIN_SLOPE = -0.99


def with_abs_form_prelu(model):
    """A copy of ``model`` computing the same function with each ``PReLU`` as ``AbsFormPReLU``.

    Layers whose slopes are all above -0.99 get the folded 3-op form (``fold_scale``), the
    others the 4-op form. Other layers are shared with ``model`` (same weights, no copy); each PReLU's slopes are
    copied into its replacement. Nested functional models (a backbone inside an embedding
    model) are rewritten too. A model without PReLU is returned as it is.

    Args:
        model: functional ``keras.Model``.

    Returns:
        ``keras.Model``.
    """
    if not any(isinstance(layer, keras.layers.PReLU) for layer in all_layers(model)):
        return model

    def clone(layer):
        if not isinstance(layer, keras.layers.PReLU):
            return layer
        lowest = float(np.min(keras.ops.convert_to_numpy(layer.alpha)))
        replacement = AbsFormPReLU(
            fold_scale=lowest > MIN_SLOPE,
            shared_axes=layer.shared_axes,
            name=layer.name,
            dtype=layer.dtype_policy,
        )
        replacement.build(layer.input.shape)
        replacement.alpha.assign(layer.alpha)
        return replacement

    return keras.models.clone_model(model, clone_function=clone, recursive=True)
