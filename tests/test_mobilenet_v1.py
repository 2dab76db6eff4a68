import json

import keras
import numpy as np
import pytest

from kerasface.backbones.backbone_registry import BACKBONES
from kerasface.backbones.mobilenet_v1 import MobileNetV1
from kerasface.budget import count_macs

# Howard et al. 2017, Table 1, typed in independently of the module: (kind, stride, output
# channels). "conv" is the full 3x3 stem on RGB, "dw" a depthwise 3x3, "pw" a pointwise 1x1.
TABLE_1 = [
    ("conv", 2, 32),
    ("dw", 1, 32), ("pw", 1, 64),
    ("dw", 2, 64), ("pw", 1, 128),
    ("dw", 1, 128), ("pw", 1, 128),
    ("dw", 2, 128), ("pw", 1, 256),
    ("dw", 1, 256), ("pw", 1, 256),
    ("dw", 2, 256), ("pw", 1, 512),
    *[("dw", 1, 512), ("pw", 1, 512)] * 5,
    ("dw", 2, 512), ("pw", 1, 1024),
    ("dw", 1, 1024), ("pw", 1, 1024),
]  # fmt: skip


def table_cost(size, prelu=True):
    """Conv weight count, trainable body params (conv + BN gamma/beta + PReLU) and MACs at size x size."""
    h = w = size
    channels = 3
    conv_weights = params = macs = 0
    for kind, stride, out in TABLE_1:
        h, w = -(-h // stride), -(-w // stride)  # "same" padding
        if kind == "conv":
            weights = 3 * 3 * channels * out
        elif kind == "dw":
            weights = 3 * 3 * channels
        else:
            weights = channels * out
        conv_weights += weights
        macs += h * w * weights
        params += weights + 2 * out + (out if prelu else 0)
        channels = out
    return conv_weights, params, macs, (h, w)


def gdc_neck_cost(spatial, channels, embedding_size):
    """GDC neck: HxW depthwise + BN, 1x1 linear to D + BN: (trainable params, MACs)."""
    params = spatial * spatial * channels + 2 * channels + channels * embedding_size + 2 * embedding_size
    return params, spatial * spatial * channels + channels * embedding_size


def trainable(layers):
    return sum(int(np.prod(w.shape)) for layer in layers for w in layer.trainable_weights)


@pytest.fixture(scope="module")
def paper_model():
    return MobileNetV1(embedding_size=128)


def test_reference_table_reproduces_the_paper():
    # Guards the hand reference itself: the paper's 224x224 ImageNet numbers.
    conv_weights, _, macs, spatial = table_cost(224)
    fc = 1024 * 1000
    assert spatial == (7, 7)
    assert abs(conv_weights + fc + 1000 - 4.2e6) / 4.2e6 < 0.01, conv_weights
    assert abs(macs + fc - 569e6) / 569e6 < 0.01, macs


def test_registry():
    assert "mobilenet_v1" in BACKBONES.list()
    model = BACKBONES.get("mobilenet_v1", image_shape=(32, 32, 3), width_multiplier=0.25)
    assert isinstance(model, MobileNetV1)
    assert model.embedding_size == 128  # DAIL's MobileNet embedding
    assert model.output_shape == (None, 128)


def test_paper_parameters_and_macs(paper_model):
    conv_weights, body_params, body_macs, spatial = table_cost(112)
    assert spatial == (4, 4)
    # The paper's 4.2M minus its 1000-way FC, body conv weights only (BN/PReLU excluded there).
    assert abs(conv_weights - (4.2e6 - 1.025e6)) / 3.175e6 < 0.02, conv_weights
    body_layers = [layer for layer in paper_model.layers if not layer.name.startswith("neck")]
    neck_layers = [layer for layer in paper_model.layers if layer.name.startswith("neck")]
    neck_params, neck_macs = gdc_neck_cost(4, 1024, 128)
    assert trainable(body_layers) == body_params == 3_217_920
    assert trainable(neck_layers) == neck_params
    cost = count_macs(paper_model)
    assert cost.complete, (cost.uncounted_ops, cost.notes)
    assert cost.trainable_params == body_params + neck_params == 3_367_680
    # At 112 the convs cost about a quarter of the paper's 569M at 224 (the last stage is 4x4, not 3.5x3.5).
    assert cost.macs == body_macs + neck_macs == 148_026_624


def test_structure(paper_model):
    model = paper_model
    assert tuple(model.get_layer("neck_gdc_dw").input.shape[1:]) == (4, 4, 1024)
    depthwise = [layer for layer in model.layers if isinstance(layer, keras.layers.DepthwiseConv2D)]
    # 13 blocks + the GDC.
    assert len(depthwise) == 14
    expected_strides = [stride for kind, stride, _ in TABLE_1 if kind == "dw"]
    assert [layer.strides[0] for layer in depthwise[:13]] == expected_strides
    pointwise = [model.get_layer(f"block{i}_pointwise_conv") for i in range(1, 14)]
    assert [layer.filters for layer in pointwise] == [out for kind, _, out in TABLE_1 if kind == "pw"]
    assert model.get_layer("stem_conv").strides == (2, 2)
    batch_norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(batch_norms) == 27 + 2 and all(layer.synchronized for layer in batch_norms)
    assert sum(isinstance(layer, keras.layers.PReLU) for layer in model.layers) == 27
    assert model.input.name == "image" and model.output.dtype == "float32"


def test_relu_variant_drops_only_the_prelu_slopes():
    prelu = MobileNetV1(embedding_size=64, image_shape=(64, 64, 3), width_multiplier=0.5)
    relu = MobileNetV1(embedding_size=64, image_shape=(64, 64, 3), width_multiplier=0.5, activation="relu")
    slopes = sum(
        int(np.prod(w.shape)) for layer in prelu.layers if isinstance(layer, keras.layers.PReLU) for w in layer.weights
    )
    assert not any(isinstance(layer, keras.layers.PReLU) for layer in relu.layers)
    assert sum(isinstance(layer, keras.layers.ReLU) for layer in relu.layers) == 27
    assert trainable(prelu.layers) - trainable(relu.layers) == slopes > 0


@pytest.mark.parametrize(
    "width, expected",
    [
        # stem, then the 13 pointwise widths; hand-rounded half up to multiples of 8, min 8.
        (0.25, [8, 16, 32, 32, 64, 64, 128, 128, 128, 128, 128, 128, 256, 256]),
        (0.3, [8, 16, 40, 40, 80, 80, 152, 152, 152, 152, 152, 152, 304, 304]),
        (0.05, [8, 8, 8, 8, 16, 16, 24, 24, 24, 24, 24, 24, 48, 48]),
    ],
)
def test_width_multiplier(width, expected):
    model = MobileNetV1(embedding_size=16, image_shape=(32, 32, 3), width_multiplier=width)
    widths = [model.get_layer("stem_conv").filters]
    widths += [model.get_layer(f"block{i}_pointwise_conv").filters for i in range(1, 14)]
    assert widths == expected


def test_forward_and_custom_blocks():
    model = MobileNetV1(
        embedding_size=16, image_shape=(32, 32, 3), width_multiplier=0.25, blocks=((64, 1), (128, 2), (256, 2))
    )
    # Stem s2 and two stride-2 blocks: 32 -> 4, the GDC's 4x4 as at full size.
    assert tuple(model.get_layer("neck_gdc_dw").input.shape[1:]) == (4, 4, 64)
    with pytest.raises(ValueError):
        model.get_layer("block4_depthwise_dw")
    images = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype(np.float32)
    embeddings = keras.ops.convert_to_numpy(model(images, training=False))
    assert embeddings.shape == (3, 16) and embeddings.dtype == np.float32
    assert np.isfinite(embeddings).all()
    assert not np.allclose(embeddings[0], embeddings[1])


@pytest.mark.parametrize("neck", ["gnap", "gap", "e"])
def test_other_necks(neck):
    model = MobileNetV1(embedding_size=24, image_shape=(32, 32, 3), width_multiplier=0.25, neck=neck, dropout=0.1)
    assert model.output_shape == (None, 24)
    assert model.get_config()["neck"] == neck


def test_config_round_trip():
    model = MobileNetV1(
        embedding_size=32, image_shape=(64, 64, 3), width_multiplier=0.5, neck="gap", dropout=0.2,
        activation="relu", blocks=((64, 1), (128, 2)), name="mnv1",
    )
    config = model.get_config()
    json.dumps(config)
    assert config == {
        "name": "mnv1", "trainable": True, "embedding_size": 32, "image_shape": (64, 64, 3),
        "width_multiplier": 0.5, "neck": "gap", "dropout": 0.2, "activation": "relu",
        "blocks": ((64, 1), (128, 2)),
    }  # fmt: skip
    clone = MobileNetV1.from_config(config)
    assert clone.get_config() == config
    assert clone.count_params() == model.count_params()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"embedding_size": 0}, "`embedding_size` must be >= 1, got 0"),
        ({"image_shape": (112, 112)}, r"`image_shape` must be \(H, W, 3\), got \(112, 112\)"),
        ({"image_shape": (112, 112, 1)}, r"`image_shape` must be \(H, W, 3\), got \(112, 112, 1\)"),
        ({"width_multiplier": 0}, "`width_multiplier` must be > 0, got 0"),
        ({"neck": "fc"}, "`neck` must be one of .*, got 'fc'"),
        ({"dropout": 1.0}, r"`dropout` must be in \[0, 1\), got 1.0"),
        ({"activation": "swish"}, r"`activation` must be one of \('prelu', 'relu'\), got 'swish'"),
        ({"blocks": ((64, 3),)}, r"`blocks` must be .*stride 1 or 2.*got \(\(64, 3\),\)"),
        ({"blocks": ()}, r"`blocks` must be a non-empty"),
        ({"blocks": (64, 128)}, r"`blocks` must be \(channels, stride\) pairs, got \(64, 128\)"),
    ],
)
def test_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MobileNetV1(**kwargs)
