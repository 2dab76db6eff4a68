"""AbsFormPReLU and the export-time PReLU rewrite: same function as PReLU, int8 XNNPACK-friendly ops."""

import keras
import numpy as np
import pytest

from kerasface.export.prelu_rewrite import with_abs_form_prelu
from kerasface.layers.abs_form_prelu import AbsFormPReLU
from kerasface.testing import run_all_checks


def _numpy_prelu(x, alpha):
    return np.where(x > 0, x, alpha * x)


def _layer(alpha, shared_axes=(1, 2)):
    layer = AbsFormPReLU(shared_axes=list(shared_axes))
    layer.build((None, 4, 5, alpha.shape[-1]))
    layer.alpha.assign(alpha.reshape(layer.alpha.shape))
    return layer


def test_matches_numpy_prelu_for_every_slope_sign():
    rng = np.random.default_rng(0)
    alpha = np.array([-0.5, 0.0, 0.25, 1.0, 2.0], np.float32)
    x = rng.normal(size=(3, 4, 5, 5)).astype(np.float32)
    got = keras.ops.convert_to_numpy(_layer(alpha)(x))
    np.testing.assert_allclose(got, _numpy_prelu(x, alpha), atol=1e-6)


def test_gradients_match_prelu():
    import tensorflow as tf

    rng = np.random.default_rng(1)
    alpha = rng.uniform(0, 0.5, 6).astype(np.float32)
    x = tf.constant(rng.normal(size=(2, 3, 3, 6)).astype(np.float32))
    prelu = keras.layers.PReLU(shared_axes=[1, 2])
    prelu.build(x.shape)
    prelu.alpha.assign(alpha.reshape(1, 1, 6))
    grads = []
    for layer in (prelu, _layer(alpha)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(layer(x) * tf.range(1.0, 7.0))
        grads.append([g.numpy() for g in tape.gradient(y, [x, layer.alpha])])
    for expected, got in zip(*grads):
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_unknown_dimension_is_an_error():
    with pytest.raises(ValueError, match="needs every non-batch"):
        AbsFormPReLU().build((None, None, 5, 3))


def test_shared_checks(tmp_path):
    alpha = np.linspace(-0.2, 0.4, 4).astype(np.float32)
    x = np.random.default_rng(2).normal(size=(4, 4, 5, 4)).astype(np.float32)
    run_all_checks(lambda: _layer(alpha), x, tmp_path)


def test_rewrite_keeps_the_function_and_the_other_weights():
    inputs = keras.Input((8, 8, 3))
    inner_in = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(4, 3, padding="same")(inner_in)
    y = keras.layers.PReLU(shared_axes=[1, 2], alpha_initializer=keras.initializers.RandomUniform(0, 0.5))(y)
    inner = keras.Model(inner_in, y, name="backbone")
    outputs = keras.layers.UnitNormalization()(keras.layers.Flatten()(inner(inputs)))
    model = keras.Model(inputs, outputs)
    copy = with_abs_form_prelu(model)
    layers = [layer for layer in copy.get_layer("backbone").layers]
    assert any(isinstance(layer, AbsFormPReLU) for layer in layers)
    assert not any(isinstance(layer, keras.layers.PReLU) for layer in layers)
    x = np.random.default_rng(3).normal(size=(2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(copy.predict_on_batch(x), model.predict_on_batch(x), atol=1e-6)
    plain = keras.Model(inputs, keras.layers.Flatten()(inputs))
    assert with_abs_form_prelu(plain) is plain
