"""MobileFaceNet and its family (SE/CBAM, mbf, AirFace, LFRC SE-MobileFaceNet): structure and budgets.

The registry-wide shared checks and export parity live in tests/test_backbone_zoo.py.
"""

import keras
import numpy as np
import pytest

from kerasface import backbones
from kerasface.backbones import MobileFaceNet
from kerasface.backbones.lfrc_se_mobilefacenet import TABLE1_STAGES, TABLE2_STEPS, lfrc_stages
from kerasface.budget import count_macs
from kerasface.layers import ConvolutionalBlockAttention, SqueezeExcitation
from kerasface.testing.backbone_cases import small_config

MIB = 2**20


def _layers_of(model, cls):
    return [layer for layer in model.layers if isinstance(layer, cls)]


def _bottleneck_count(model):
    return len({layer.name.split("_")[0] for layer in model.layers if layer.name.startswith("block")})


def test_registry_and_presets():
    names = backbones.list()
    for name in ("mobilefacenet", "mobilefacenet_se", "mobilefacenet_cbam", "mobilefacenet_mbf", "airface",
                 "lfrc_se_mobilefacenet", "lfrc_se_mobilefacenet_step0"):
        assert name in names
        assert backbones.get_class(name) is MobileFaceNet
    model = backbones.get("mobilefacenet", embedding_size=128)
    assert model.output_shape == (None, 128)
    # A preset's defaults are overridable and end up in the config, so .keras files reload it.
    model = backbones.get("lfrc_se_mobilefacenet", **small_config("lfrc_se_mobilefacenet"))
    assert model.get_config()["attention"] == "se" and model.get_config()["expansion"] == "channels"
    with pytest.raises(ValueError, match="Unknown backbone 'resnet9000'"):
        backbones.get("resnet9000")
    with pytest.raises(ValueError, match="already registered"):
        backbones.add_preset("airface", "mobilefacenet")


def test_paper_parameter_count_and_structure():
    model = MobileFaceNet(embedding_size=128)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    # Paper: 0.99M parameters (BN moving statistics are not parameters there).
    assert abs(trainable - 0.99e6) / 0.99e6 < 0.02, trainable
    # 7x7 map before the GDC, as in Table 1.
    assert tuple(model.get_layer("neck_gdc_dw").input.shape[1:3]) == (7, 7)
    assert all(layer.synchronized for layer in _layers_of(model, keras.layers.BatchNormalization))
    assert _bottleneck_count(model) == 15


def test_attention_variants_put_one_module_in_every_bottleneck():
    se = backbones.get("mobilefacenet_se", embedding_size=128)
    cbam = backbones.get("mobilefacenet_cbam", embedding_size=128)
    assert len(_layers_of(se, SqueezeExcitation)) == 15
    assert len(_layers_of(cbam, ConvolutionalBlockAttention)) == 15
    # SE acts on the expanded channels (after the depthwise conv), CBAM on the block output.
    assert se.get_layer("block0_se").input.shape[-1] == 128
    assert cbam.get_layer("block0_cbam").input.shape[-1] == 64


def test_mbf_matches_arcface_torch_layout():
    model = backbones.get("mobilefacenet_mbf")
    assert model.get_layer("stem_conv_conv").filters == 128
    assert model.get_layer("stem_dwconv_dw").input.shape[-1] == 128
    # Fixed depthwise widths 128/256/512/256, as arcface_torch's get_mbf(scale=2).
    widths = [model.get_layer(f"block{i}_depthwise_dw").input.shape[-1] for i in (0, 1, 5, 6, 12, 13)]
    assert widths == [128, 128, 256, 256, 512, 256]
    assert model.get_layer("conv_1x1_conv").filters == 512 and model.output_shape == (None, 512)


def test_airface_table1_structure_and_flops():
    model = backbones.get("airface")
    assert _bottleneck_count(model) == 1 + 9 + 1 + 16 + 1 + 6
    cbams = _layers_of(model, ConvolutionalBlockAttention)
    assert len(cbams) == 34 and {layer.gate for layer in cbams} == {"one_plus_tanh"}
    assert tuple(model.get_layer("neck_gdc_dw").input.shape[1:]) == (7, 7, 1024)
    assert model.get_layer("block27_expand_conv").filters == 8 * 128  # t = 8 at the last downsampling
    assert model.output_shape == (None, 512)
    cost = count_macs(model)
    # Table 4 gives "1G" FLOPs with insightface's counter (2 x MACs: MobileFaceNet is 440M
    # there); "1G" is rounded, ours is 1.06G (docs/zoo.md).
    assert abs(2 * cost.macs - 1e9) / 1e9 < 0.10, cost.macs


def test_lfrc_step5_is_table1_and_meets_table2_budget():
    model = backbones.get("lfrc_se_mobilefacenet")
    assert model.output_shape == (None, 282)
    assert model.get_config()["stages"] == TABLE1_STAGES
    assert model.get_layer("stem_conv_conv").filters == 24
    assert _bottleneck_count(model) == sum(stage[2] for stage in TABLE1_STAGES) == 50
    assert len(_layers_of(model, SqueezeExcitation)) == 50
    cost = count_macs(model)
    # Table 2 "FLOPs" are 2 x MACs (976.6M); "Size 20M" read as MiB of float32 weights.
    assert abs(2 * cost.macs - TABLE2_STEPS[5]["flops"]) / TABLE2_STEPS[5]["flops"] < 0.05, cost.macs
    assert abs(4 * cost.params / MIB - 20) / 20 < 0.05, cost.params


def test_lfrc_steps_follow_table2():
    for step, row in TABLE2_STEPS.items():
        kwargs = lfrc_stages(step)
        (c1, _), (c2, n2), (c3, n3), (c4, n4), (c5, n5) = row["convs"]
        assert kwargs["stem_channels"] == c1 and kwargs["neck_channels"] == c5
        assert kwargs["embedding_size"] == row["dim"]
        stride1 = [(t, c, n) for t, c, n, s in kwargs["stages"] if s == 1]
        assert [(c, n) for _, c, n in stride1] == [(c1, n2), (c2, n3), (c3, n4), (c4, n5)]
        assert [c for _, c, _, s in kwargs["stages"] if s == 2] == [c2, c3, c4]
    with pytest.raises(ValueError, match="`step` must be one of .* got 6"):
        lfrc_stages(6)


def test_width_multiplier_and_necks():
    base = small_config("mobilefacenet")
    narrow = MobileFaceNet(**base)
    wide = MobileFaceNet(**{**base, "width_multiplier": 0.5})
    assert wide.get_layer("stem_conv_conv").filters == 2 * narrow.get_layer("stem_conv_conv").filters
    # The neck width is absolute, as in arcface_torch.
    assert wide.get_layer("conv_1x1_conv").filters == narrow.get_layer("conv_1x1_conv").filters == 32
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    for neck in ("gnap", "gap", "e"):
        model = MobileFaceNet(**{**base, "neck": neck, "dropout": 0.2 if neck != "gnap" else 0.0})
        out = model(x, training=False)
        assert tuple(out.shape) == (2, 16) and out.dtype == "float32"
        assert MobileFaceNet.from_config(model.get_config()).get_config() == model.get_config()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"image_shape": (112, 112)}, r"`image_shape` must be \(H, W, 3\), got \(112, 112\)"),
        ({"embedding_size": 0}, "`embedding_size` must be >= 1, got 0"),
        ({"attention": "eca"}, "`attention` must be one of .* got 'eca'"),
        ({"attention_gate": "softmax"}, "`gate` must be one of .* got 'softmax'"),
        ({"expansion": "absolute"}, "`expansion` must be one of .* got 'absolute'"),
        ({"stem_groups": "grouped"}, "`stem_groups` must be 'depthwise', None or an int >= 1, got 'grouped'"),
        ({"neck": "fc"}, "`neck` must be one of .* got 'fc'"),
        ({"stages": ((2, 64, 0, 2),)}, r"`stages` must be non-empty \(t, c, n, s\) tuples"),
        ({"width_multiplier": 0}, "`width_multiplier` must be > 0, got 0"),
    ],
)
def test_input_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MobileFaceNet(**kwargs)
