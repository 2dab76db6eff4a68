"""Attention and pooling layers of the backbones, and the embedding necks, against NumPy."""

import keras
import numpy as np
import pytest

from kerasface.backbones.embedding_neck import NECKS, embedding_neck
from kerasface.layers import ConvolutionalBlockAttention, GlobalNormAwarePooling, SqueezeExcitation, attention_gate
from kerasface.testing import run_all_checks

RNG = np.random.default_rng(0)


def _np_gate(x, kind):
    return {
        "sigmoid": 1.0 / (1.0 + np.exp(-x)),
        "hard_sigmoid": np.clip(x + 3.0, 0.0, 6.0) / 6.0,
        "one_plus_tanh": 1.0 + np.tanh(x),
    }[kind]


def _randomize(layer):
    for weight in layer.weights:
        weight.assign(RNG.normal(scale=0.5, size=weight.shape).astype("float32"))


@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid", "one_plus_tanh"])
def test_squeeze_excitation_matches_numpy(gate):
    x = RNG.normal(size=(3, 5, 4, 16)).astype("float32")
    layer = SqueezeExcitation(reduction=4, gate=gate)
    layer(x)
    _randomize(layer)
    assert layer.reduce_kernel.shape == (16, 8)  # max(min_channels=8, 16 // 4)
    w1, b1, w2, b2 = (w.numpy() for w in (layer.reduce_kernel, layer.reduce_bias, layer.expand_kernel, layer.expand_bias))
    squeezed = x.mean(axis=(1, 2))
    weights = _np_gate(np.maximum(squeezed @ w1 + b1, 0.0) @ w2 + b2, gate)
    np.testing.assert_allclose(layer(x).numpy(), x * weights[:, None, None, :], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gate", ["sigmoid", "one_plus_tanh"])
def test_cbam_matches_numpy(gate):
    x = RNG.normal(size=(2, 6, 5, 32)).astype("float32")
    layer = ConvolutionalBlockAttention(reduction=8, spatial_kernel_size=3, gate=gate)
    layer(x)
    _randomize(layer)
    w1, b1, w2, b2, k, kb = (w.numpy() for w in layer.weights)

    def mlp(v):
        return np.maximum(v @ w1 + b1, 0.0) @ w2 + b2

    channel = _np_gate(mlp(x.mean(axis=(1, 2))) + mlp(x.max(axis=(1, 2))), gate)
    refined = x * channel[:, None, None, :]
    descriptor = np.stack([refined.mean(axis=-1), refined.max(axis=-1)], axis=-1)
    padded = np.pad(descriptor, ((0, 0), (1, 1), (1, 1), (0, 0)))
    spatial = np.zeros(x.shape[:3], np.float32)
    for i in range(x.shape[1]):
        for j in range(x.shape[2]):
            spatial[:, i, j] = np.einsum("bhwc,hwc->b", padded[:, i : i + 3, j : j + 3, :], k[..., 0])
    expected = refined * _np_gate(spatial + kb, gate)[..., None]
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_one_plus_tanh_gate_range_and_identity_at_zero():
    x = np.array([-50.0, 0.0, 50.0], np.float32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(attention_gate(x, "one_plus_tanh")), [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="`gate` must be one of .* got 'softmax'"):
        attention_gate(x, "softmax")


def test_global_norm_aware_pooling_matches_numpy():
    x = RNG.normal(size=(2, 4, 3, 8)).astype("float32")
    x[0, 0, 0] *= 50.0  # one loud position must not dominate the average
    norms = np.sqrt((x**2).sum(-1, keepdims=True) + 1e-6)
    expected = (x * norms.mean(axis=(1, 2), keepdims=True) / norms).mean(axis=(1, 2))
    np.testing.assert_allclose(GlobalNormAwarePooling()(x).numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "layer,message",
    [
        (lambda: SqueezeExcitation(reduction=0), "`reduction` must be >= 1, got 0"),
        (lambda: SqueezeExcitation(gate="relu"), "`gate` must be one of"),
        (lambda: ConvolutionalBlockAttention(spatial_kernel_size=4), "odd and >= 1, got 4"),
        (lambda: GlobalNormAwarePooling(epsilon=0), "`epsilon` must be > 0, got 0"),
    ],
)
def test_argument_errors(layer, message):
    with pytest.raises(ValueError, match=message):
        layer()


@pytest.mark.parametrize(
    "factory",
    [
        lambda: SqueezeExcitation(reduction=2, gate="one_plus_tanh"),
        lambda: ConvolutionalBlockAttention(reduction=2, gate="one_plus_tanh"),
        GlobalNormAwarePooling,
    ],
    ids=["se", "cbam", "gnap"],
)
def test_layers_pass_shared_checks(factory, tmp_path):
    x = RNG.normal(size=(4, 6, 6, 16)).astype("float32")
    options = {
        "mixed_precision": {"atol": 5e-2, "rtol": 5e-2},
        # The spatial kernel's gradient sums B*H*W products; XLA reorders that sum.
        "xla": {"gradient_atol": 1e-4, "gradient_rtol": 1e-3},
    }
    run_all_checks(factory, x, tmp_path, options=options)


@pytest.mark.parametrize("neck", NECKS)
def test_necks_shapes_dtypes_and_errors(neck):
    inputs = keras.Input((4, 4, 32))
    model = keras.Model(inputs, embedding_neck(inputs, neck, 24, dropout=0.1 if neck in ("gap", "e") else 0.0))
    out = model(RNG.normal(size=(3, 4, 4, 32)).astype("float32"), training=False)
    assert tuple(out.shape) == (3, 24) and out.dtype == "float32"
    assert model.layers[-1].name == "embedding"
    with pytest.raises(ValueError, match="`embedding_size` must be >= 1, got 0"):
        embedding_neck(inputs, neck, 0)


def test_neck_errors_and_gnap_keeps_width():
    inputs = keras.Input((4, 4, 32))
    with pytest.raises(ValueError, match="`neck` must be one of .* got 'avg'"):
        embedding_neck(inputs, "avg", 8)
    with pytest.raises(ValueError, match=r"`dropout` must be in \[0, 1\), got 1.5"):
        embedding_neck(inputs, "e", 8, dropout=1.5)
    model = keras.Model(inputs, embedding_neck(inputs, "gnap", 32))
    # D == C: GNAP needs no linear layer (insightface's GNAP at 512-d).
    assert not any(isinstance(layer, keras.layers.Dense) for layer in model.layers)
