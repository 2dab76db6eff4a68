import json

import keras
import numpy as np
import pytest

from kerasface.backbones.backbone_registry import BACKBONES
from kerasface.backbones.iresnet import DEPTH_BLOCKS, IResNet
from kerasface.budget.flop_counter import count_macs

# Tiny but complete: an identity block (stage 1, block 2), projection shortcuts, every layer type.
SMALL = {
    "embedding_size": 16,
    "image_shape": (32, 32, 3),
    "stage_blocks": (2, 1, 1, 1),
    "stage_channels": (8, 16, 16, 32),
    "stem_channels": 8,
}


def reference_cost(blocks, channels=(64, 128, 256, 512), stem=64, embedding_size=512, size=112):
    """Trainable parameters, BN moving statistics and MACs of arcface_torch's IResNet, by hand."""
    params, stats, macs = 0, 0, 0

    def conv(c_in, c_out, k, out_size):
        nonlocal params, macs
        params += k * k * c_in * c_out
        macs += out_size * out_size * c_out * k * k * c_in

    def bn(c, scale=True):
        nonlocal params, stats
        params += (2 if scale else 1) * c
        stats += 2 * c

    conv(3, stem, 3, size)
    bn(stem)
    params += stem  # PReLU
    c_in = stem
    for repeats, c in zip(blocks, channels):
        for block in range(repeats):
            in_size = size
            if block == 0:
                size = (size + 1) // 2
            bn(c_in)
            conv(c_in, c, 3, in_size)
            bn(c)
            params += c  # PReLU
            conv(c, c, 3, size)
            bn(c)
            if block == 0:
                conv(c_in, c, 1, size)
                bn(c)
            c_in = c
    bn(c_in)
    flat = size * size * c_in
    params += flat * embedding_size + embedding_size
    macs += flat * embedding_size
    bn(embedding_size, scale=False)
    return params, stats, macs


@pytest.fixture(scope="module")
def r50():
    model = BACKBONES.get("iresnet50")
    return model, count_macs(model)


@pytest.fixture(scope="module")
def r100():
    model = BACKBONES.get("iresnet100")
    return model, count_macs(model)


@pytest.mark.parametrize(
    "fixture, depth, published_params, published_macs",
    [("r50", 50, 43.6e6, 6.31e9), ("r100", 100, 65.2e6, 12.09e9)],
)
def test_published_parameters_and_macs(request, fixture, depth, published_params, published_macs):
    model, cost = request.getfixturevalue(fixture)
    assert model.depth == depth and model.name == f"iresnet{depth}"
    # insightface counts BN scale/shift and PReLU slopes but not BN moving statistics, i.e.
    # Keras's trainable weights (plus the 512 frozen BN scales that Keras does not create).
    assert abs(cost.trainable_params - published_params) / published_params < 0.02, cost.trainable_params
    assert abs(cost.macs - published_macs) / published_macs < 0.02, cost.macs
    params, stats, macs = reference_cost(DEPTH_BLOCKS[depth])
    assert cost.trainable_params == params
    assert cost.params - cost.trainable_params == stats
    assert cost.macs == macs
    assert cost.complete, (cost.uncounted_ops, cost.notes)


def test_stage_shapes_and_block_layout(r50):
    model, _ = r50
    assert model.input_shape == (None, 112, 112, 3) and model.output_shape == (None, 512)
    assert model.get_layer("stem_conv").output.shape[1:] == (112, 112, 64)
    layout = zip((3, 4, 14, 3), (56, 28, 14, 7), (64, 128, 256, 512))
    for stage, (repeats, size, channels) in enumerate(layout, 1):
        assert model.get_layer(f"stage{stage}_block{repeats}_add").output.shape[1:] == (size, size, channels)
        with pytest.raises(ValueError):
            model.get_layer(f"stage{stage}_block{repeats + 1}_add")

    def chain(prefix, names):
        layers = [model.get_layer(prefix + name) for name in names]
        for previous, layer in zip(layers, layers[1:]):
            assert layer.input is previous.output, (previous.name, layer.name)
        return [layer.__class__.__name__ for layer in layers]

    # An identity block: BN -> conv3x3 -> BN -> PReLU -> conv3x3 -> BN, + the block input.
    main = ["bn1", "conv1_conv", "conv1_bn", "conv1_act", "conv2_conv", "conv2_bn"]
    assert chain("stage3_block2_", main) == [
        "BatchNormalization", "Conv2D", "BatchNormalization", "PReLU", "Conv2D", "BatchNormalization"
    ]
    add = model.get_layer("stage3_block2_add")
    assert add.input[0] is model.get_layer("stage3_block2_conv2_bn").output
    assert add.input[1] is model.get_layer("stage3_block1_add").output
    assert model.get_layer("stage3_block2_bn1").input is model.get_layer("stage3_block1_add").output
    conv2 = model.get_layer("stage3_block2_conv2_conv")
    assert (conv2.kernel_size, conv2.strides, conv2.use_bias) == ((3, 3), (1, 1), False)

    # A first block: symmetric zero padding before the strided conv, a 1x1 strided shortcut.
    strided = main[:4] + ["conv2_pad"] + main[4:]
    assert chain("stage3_block1_", strided)[4] == "ZeroPadding2D"
    conv2 = model.get_layer("stage3_block1_conv2_conv")
    assert (conv2.strides, conv2.padding) == ((2, 2), "valid")
    assert model.get_layer("stage3_block1_conv2_pad").padding == ((1, 1), (1, 1))
    shortcut = model.get_layer("stage3_block1_shortcut_conv")
    assert (shortcut.kernel_size, shortcut.strides, shortcut.filters) == ((1, 1), (2, 2), 256)
    assert shortcut.input is model.get_layer("stage2_block4_add").output
    add = model.get_layer("stage3_block1_add")
    assert add.input[1] is model.get_layer("stage3_block1_shortcut_bn").output

    assert model.get_layer("stage3_block2_conv1_act").alpha.shape == (1, 1, 256)  # shared over H, W
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(layer.synchronized and layer.epsilon == 1e-5 for layer in bns)
    assert model.get_layer("neck_fc").kernel.shape == (7 * 7 * 512, 512)
    assert model.get_layer("neck_bn").gamma is None  # insightface freezes the embedding BN scale


def test_registry_presets():
    for depth in (18, 34, 50, 100):
        assert f"iresnet{depth}" in BACKBONES.list()
        assert BACKBONES.get_class(f"iresnet{depth}") is IResNet
    assert BACKBONES.preset_defaults("iresnet18") == {"depth": 18}
    assert BACKBONES.preset_defaults("iresnet34") == {"depth": 34}
    assert BACKBONES.preset_defaults("iresnet100") == {"depth": 100}
    model = BACKBONES.get(
        "iresnet34", embedding_size=8, image_shape=(32, 32, 3), stage_channels=(8, 8, 8, 8), stem_channels=8
    )
    assert model.depth == 34 and model.output_shape == (None, 8)
    blocks = [
        len({layer.name.split("_")[1] for layer in model.layers if layer.name.startswith(f"stage{stage}_")})
        for stage in range(1, 5)
    ]
    assert tuple(blocks) == (3, 4, 6, 3)


def test_config_round_trip():
    model = IResNet(**SMALL, dropout=0.2, name="tiny")
    config = model.get_config()
    json.dumps(config)  # raises unless JSON-serialisable
    assert config["stage_blocks"] == (2, 1, 1, 1) and config["dropout"] == 0.2 and config["name"] == "tiny"
    rebuilt = IResNet.from_config(config)
    assert rebuilt.get_config() == config
    assert rebuilt.count_params() == model.count_params()
    assert IResNet(**{**SMALL, "stage_blocks": None}).get_config()["stage_blocks"] is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"depth": 42}, r"`depth` must be one of \(18, 34, 50, 100, 200\), got 42"),
        ({"embedding_size": 0}, "`embedding_size` must be an integer >= 1, got 0"),
        ({"image_shape": (112, 112)}, r"`image_shape` must be \(H, W, 3\).*got \(112, 112\)"),
        ({"image_shape": (112, 112, 1)}, r"`image_shape` must be \(H, W, 3\).*got \(112, 112, 1\)"),
        ({"image_shape": (None, 112, 3)}, r"static H, W >= 1, got \(None, 112, 3\)"),
        ({"stage_blocks": (1, 1, 1)}, r"`stage_blocks` \(1, 1, 1\) and `stage_channels` .* one entry per stage"),
        ({"stage_blocks": (1, 0, 1, 1)}, r"`stage_blocks` must be positive integers, got \(1, 0, 1, 1\)"),
        ({"stem_channels": 0}, "`stem_channels` must be an integer >= 1, got 0"),
        ({"neck": "avg"}, "`neck` must be one of .*, got 'avg'"),
        ({"dropout": 1.0}, r"`dropout` must be in \[0, 1\), got 1.0"),
    ],
)
def test_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IResNet(**kwargs)


def _conv(x, kernel, stride, pad):
    """NHWC convolution with PyTorch's symmetric zero padding."""
    k = kernel.shape[0]
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out_h = (x.shape[1] - k) // stride + 1
    out_w = (x.shape[2] - k) // stride + 1
    out = 0
    for i in range(k):
        for j in range(k):
            patch = x[:, i : i + stride * out_h : stride, j : j + stride * out_w : stride]
            out = out + patch @ kernel[i, j]
    return out


def test_forward_matches_numpy_reference():
    keras.utils.set_random_seed(1)
    model = IResNet(**SMALL)
    rng = np.random.default_rng(0)
    # Random BN statistics and PReLU slopes, so an identity-like layer cannot pass unnoticed.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            if layer.gamma is not None:
                layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
            layer.beta.assign(rng.normal(0, 0.2, channels))
            layer.moving_mean.assign(rng.normal(0, 0.2, channels))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels))
        elif isinstance(layer, keras.layers.PReLU):
            layer.alpha.assign(rng.uniform(0.05, 0.5, layer.alpha.shape))
    weights = {w.path: w.numpy().astype(np.float64) for w in model.weights}

    def bn(x, name):
        gamma = weights.get(f"{name}/gamma", 1.0)
        std = np.sqrt(weights[f"{name}/moving_variance"] + 1e-5)
        return (x - weights[f"{name}/moving_mean"]) / std * gamma + weights[f"{name}/beta"]

    def prelu(x, name):
        return np.where(x > 0, x, weights[f"{name}/alpha"] * x)

    images = rng.normal(size=(2, 32, 32, 3))
    x = prelu(bn(_conv(images, weights["stem_conv/kernel"], 1, 1), "stem_bn"), "stem_act")
    for stage, repeats in enumerate(SMALL["stage_blocks"], 1):
        for block in range(1, repeats + 1):
            p = f"stage{stage}_block{block}_"
            stride = 2 if block == 1 else 1
            y = bn(x, p + "bn1")
            y = prelu(bn(_conv(y, weights[p + "conv1_conv/kernel"], 1, 1), p + "conv1_bn"), p + "conv1_act")
            y = bn(_conv(y, weights[p + "conv2_conv/kernel"], stride, 1), p + "conv2_bn")
            if block == 1:
                x = bn(_conv(x, weights[p + "shortcut_conv/kernel"], stride, 0), p + "shortcut_bn")
            x = x + y
    x = bn(x, "neck_input_bn").reshape(len(x), -1)  # NHWC flatten order
    x = bn(x @ weights["neck_fc/kernel"] + weights["neck_fc/bias"], "neck_bn")

    got = model(images.astype(np.float32), training=False)
    assert got.dtype == "float32" and got.shape == (2, 16)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), x, rtol=1e-4, atol=1e-4 * np.abs(x).max())
