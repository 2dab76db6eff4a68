"""Parameter/MAC/FLOP counting and budget checks against hand-computed numbers."""

import argparse
import io
import math
import re

import keras
import numpy as np
import pytest

from kerasface.budget import (
    ModelCost,
    check,
    count_macs,
    file_size_bytes,
    format_quantity,
    model_size_bytes,
    parse_quantity,
)
from kerasface.cli import budget_command


def _model(input_shape, *layers):
    inputs = keras.Input(input_shape)
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


def _conv_out(size, kernel, stride, padding):
    # Independent of TensorFlow: the textbook output-size formulas.
    if padding == "same":
        return math.ceil(size / stride)
    return (size - kernel) // stride + 1


def _params(model):
    return sum(int(np.prod(w.shape)) for w in model.weights)


@pytest.mark.parametrize(
    "size, channels, filters, kernel, stride, padding, use_bias",
    [
        ((17, 17), 3, 8, (3, 3), 2, "same", False),
        ((17, 13), 5, 6, (5, 3), 2, "valid", True),
        ((9, 9), 4, 7, (1, 1), 1, "valid", True),
    ],
)
def test_conv2d_macs_and_flops(size, channels, filters, kernel, stride, padding, use_bias):
    model = _model(
        size + (channels,),
        keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=use_bias),
    )
    cost = count_macs(model)
    h = _conv_out(size[0], kernel[0], stride, padding)
    w = _conv_out(size[1], kernel[1], stride, padding)
    out_elements = h * w * filters
    expected_macs = out_elements * kernel[0] * kernel[1] * channels
    assert cost.macs == expected_macs
    assert cost.flops == 2 * expected_macs + (out_elements if use_bias else 0)
    assert cost.breakdown["Conv2D"].count == 1
    assert cost.params == kernel[0] * kernel[1] * channels * filters + (filters if use_bias else 0)
    assert cost.input_shape == size + (channels,)
    assert cost.complete


def test_depthwise_conv_macs_and_flops():
    model = _model(
        (10, 10, 4), keras.layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2)
    )
    cost = count_macs(model)
    out_elements = 5 * 5 * (4 * 2)
    assert cost.macs == out_elements * 3 * 3
    assert cost.flops == 2 * out_elements * 9 + out_elements  # + bias
    assert cost.breakdown["DepthwiseConv2dNative"].macs == out_elements * 9


def test_dense_macs_and_flops_2d_and_3d():
    cost = count_macs(_model((20,), keras.layers.Dense(10)))
    assert (cost.macs, cost.flops, cost.params) == (200, 2 * 200 + 10, 210)
    # A Dense on a sequence applies the same matmul at each of the 5 positions.
    cost = count_macs(_model((5, 20), keras.layers.Dense(10, use_bias=False)))
    assert (cost.macs, cost.flops) == (5 * 20 * 10, 2 * 5 * 20 * 10)


def test_grouped_conv_counts_inside_nested_function():
    # Keras runs grouped convolutions through an XLA-compiled nested function
    # (StatefulPartitionedCall); its Conv2D must still be found.
    model = _model((10, 10, 8), keras.layers.Conv2D(12, 3, groups=4, padding="valid", use_bias=False))
    cost = count_macs(model)
    assert cost.macs == 8 * 8 * 12 * 3 * 3 * (8 // 4)
    assert cost.flops == 2 * cost.macs
    assert cost.params == 3 * 3 * 2 * 12


def test_transposed_conv_macs():
    model = _model((6, 5, 8), keras.layers.Conv2DTranspose(4, 3, strides=2, use_bias=False))
    cost = count_macs(model)
    # Every input pixel scatters a 3x3x4 patch, each value a product with one of 8 channels.
    assert cost.macs == 6 * 5 * 8 * 3 * 3 * 4
    assert cost.breakdown["Conv2DBackpropInput"].count == 1


def test_elementwise_pooling_and_reduction_flops():
    inputs = keras.Input((8, 6, 3))
    x = keras.ops.sigmoid(inputs) * inputs + inputs  # Sigmoid, Mul, AddV2: 3 per element
    x = keras.layers.MaxPooling2D(2)(x)  # window 4 per output element
    x = keras.layers.GlobalAveragePooling2D()(x)  # 1 per input element
    cost = count_macs(keras.Model(inputs, x))
    elements = 8 * 6 * 3
    pooled = 4 * 3 * 3
    assert cost.macs == 0
    assert cost.breakdown["Sigmoid"].flops == elements
    assert cost.breakdown["MaxPool"].flops == pooled * 4
    assert cost.breakdown["Mean"].flops == pooled
    assert cost.flops == 3 * elements + 4 * pooled + pooled


def test_mobilefacenet_like_block():
    # conv3x3 s2 + BN + PReLU -> depthwise 3x3 + BN + PReLU -> linear 1x1 conv + BN.
    c_in, c_mid, c_out = 3, 16, 8
    layers = [
        keras.layers.Conv2D(c_mid, 3, strides=2, padding="same", use_bias=False),
        keras.layers.BatchNormalization(),
        keras.layers.PReLU(shared_axes=[1, 2]),
        keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False),
        keras.layers.BatchNormalization(),
        keras.layers.PReLU(shared_axes=[1, 2]),
        keras.layers.Conv2D(c_out, 1, use_bias=False),
        keras.layers.BatchNormalization(),
    ]
    model = _model((16, 16, c_in), *layers)
    cost = count_macs(model)
    hw = 8 * 8
    conv_macs = hw * c_mid * 3 * 3 * c_in + hw * c_out * c_mid
    dw_macs = hw * c_mid * 3 * 3
    assert cost.breakdown["Conv2D"].macs == conv_macs
    assert cost.breakdown["DepthwiseConv2dNative"].macs == dw_macs
    assert cost.macs == conv_macs + dw_macs
    # BN costs at least a multiply and an add per element, PReLU at least
    # max/min-ish, multiply, add (4); per-channel statistics work stays small.
    bn_elements = hw * (c_mid + c_mid + c_out)
    prelu_elements = 2 * hw * c_mid
    extra = cost.flops - 2 * cost.macs
    assert 2 * bn_elements + 4 * prelu_elements <= extra
    assert extra <= 2 * bn_elements + 6 * prelu_elements + 10 * (3 * c_mid + c_out)
    assert "Rsqrt" in cost.breakdown or "FusedBatchNormV3" in cost.breakdown
    # Params: conv + depthwise + pointwise kernels, BN (gamma, beta, mean, var), PReLU alphas.
    kernels = 3 * 3 * c_in * c_mid + 3 * 3 * c_mid + c_mid * c_out
    expected_params = kernels + 4 * (2 * c_mid + c_out) + 2 * c_mid
    assert cost.params == expected_params == _params(model)
    assert cost.trainable_params == expected_params - 2 * (2 * c_mid + c_out)
    assert model_size_bytes(model) == 4 * expected_params
    assert model_size_bytes(model, "int8") == expected_params
    assert model_size_bytes(cost, "fp16") == 2 * expected_params


def test_while_loop_body_counted_once_with_note():
    class RepeatedMatmul(keras.layers.Layer):
        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], input_shape[-1]), name="kernel")

        def call(self, x):
            return keras.ops.fori_loop(0, 3, lambda i, v: keras.ops.matmul(v, self.kernel), x)

    cost = count_macs(_model((4,), RepeatedMatmul()))
    assert cost.macs == 4 * 4
    assert not cost.complete
    assert any("trip count unknown" in note for note in cost.notes)


def test_unknown_ops_are_reported_not_dropped():
    model = _model((4, 4, 2), keras.layers.UpSampling2D(interpolation="bilinear"))
    cost = count_macs(model)
    assert cost.uncounted_ops == {"ResizeBilinear": 1}
    assert not cost.complete


def test_input_shape_errors():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
    with pytest.raises(ValueError, match=r"input_shape.*\(None, None, 3\)"):
        count_macs(model)
    cost = count_macs(model, input_shape=(5, 5, 3))
    assert cost.macs == 3 * 3 * 2 * 3 * 3 * 3
    a, b = keras.Input((3,)), keras.Input((3,))
    with pytest.raises(ValueError, match="2 inputs"):
        count_macs(keras.Model([a, b], a + b))
    with pytest.raises(ValueError, match=r"got \(0, 3\)"):
        count_macs(model, input_shape=(0, 3))


@pytest.mark.parametrize(
    "text, expected",
    [("1G", 10**9), ("20M", 20 * 10**6), ("1.5k", 1500), ("20", 20), (" 2.5 m ", 2_500_000),
     ("0.5", 0.5), ("3T", 3 * 10**12), (7, 7), ("1e3", 1000)],
)
def test_parse_quantity(text, expected):
    value = parse_quantity(text)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("text", ["1X", "", "G", "1.2.3M", "-1G", "20MB", "nan", "inf"])
def test_parse_quantity_rejects_bad_strings(text):
    with pytest.raises(ValueError, match="quantity") as info:
        parse_quantity(text)
    assert repr(text) in str(info.value)


def test_format_quantity():
    assert format_quantity(1_234_567_890) == "1.23G"
    assert format_quantity(221_000_000) == "221.00M"
    assert format_quantity(1500) == "1.50K"
    assert format_quantity(20) == "20"


def _cost(**kwargs):
    values = dict(params=1000, trainable_params=900, macs=0, flops=0, breakdown={}, input_shape=(1,))
    values.update(kwargs)
    return ModelCost(**values)


def test_check_violations_and_messages():
    cost = _cost(params=6_000_000, macs=1_234_000_000, flops=2_500_000_000)
    report = check(cost, max_macs="1G", max_flops=3e9, max_params="20M", max_size_mb=20)
    assert report.within_budget is False
    assert report.violations == ["MACs 1.23G > limit 1.00G", "fp32 size 24.00 MB > limit 20.00 MB"]
    assert report.size_fp32_bytes == 24_000_000 and report.size_int8_bytes == 6_000_000
    assert report.limits == {"macs": 10**9, "flops": 3 * 10**9, "params": 20 * 10**6, "size_mb": 20}

    report = check(cost, max_params="5M", max_flops="2.5G")
    assert report.violations == ["params 6.00M > limit 5.00M"]  # equal to the limit is within
    assert check(cost).within_budget and check(cost).violations == []


def test_check_shows_enough_digits_to_differ():
    report = check(_cost(macs=1_000_400_000), max_macs="1G")
    assert report.violations == ["MACs 1.0004G > limit 1.0000G"]


def test_check_names_the_bad_limit():
    with pytest.raises(ValueError, match=r"max_params.*'20X'"):
        check(_cost(), max_params="20X")


def test_check_counts_a_real_model():
    model = _model((20,), keras.layers.Dense(10))
    report = check(model, max_macs=199, max_params=210)
    assert report.violations == ["MACs 200 > limit 199"]
    assert report.macs == 200 and report.params == 210


def test_file_size_bytes(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"x" * 1234)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"y" * 66)
    assert file_size_bytes(tmp_path / "a.bin") == 1234
    assert file_size_bytes(tmp_path) == 1300
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        file_size_bytes(tmp_path / "missing.keras")


def _args(*argv):
    parser = argparse.ArgumentParser()
    budget_command.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_arguments_parse_quantities():
    args = _args("--backbone", "x", "--max-flops", "1G", "--max-params", "20M", "--max-size-mb", "20")
    assert (args.max_flops, args.max_params, args.max_size_mb, args.max_macs) == (10**9, 20 * 10**6, 20, None)
    with pytest.raises(SystemExit):
        _args("--max-macs", "1X")


def test_cli_table_and_exit_codes():
    small = _model((20,), keras.layers.Dense(10))
    out, err = io.StringIO(), io.StringIO()
    code = budget_command.check_models([("tiny", small)], out=out, err=err)
    assert code == 0
    table = out.getvalue()
    for label in ("backbone", "params", "MACs", "FLOPs", "fp32 size", "int8 size"):
        assert label in table
    row = next(line for line in table.splitlines() if line.startswith("tiny"))
    assert row.split()[1:4] == ["210", "210", "200"]  # params, trainable, MACs
    assert "410" in row  # FLOPs: 2 * 200 + 10

    out, err = io.StringIO(), io.StringIO()
    code = budget_command.check_models(
        [("tiny", small), ("big", lambda: _model((100,), keras.layers.Dense(100)))],
        limits={"max_params": parse_quantity("1k")},
        out=out,
        err=err,
    )
    assert code == 1
    assert "OVER BUDGET big: params 10.10K > limit 1.00K" in err.getvalue()
    assert "1 of 2 model(s) over budget" in err.getvalue()
    assert "tiny" not in err.getvalue()

    def broken():
        raise ValueError("cannot build")

    out, err = io.StringIO(), io.StringIO()
    code = budget_command.check_models([("broken", broken), ("tiny", small)], out=out, err=err)
    assert code == 2
    assert "broken: ValueError: cannot build" in err.getvalue()
    assert "tiny" in out.getvalue()


def _backbones():
    backbones = pytest.importorskip("kerasface.backbones", reason="kerasface.backbones is not written yet")
    if not hasattr(backbones, "get") or "mobilefacenet" not in backbones.list():
        pytest.skip("kerasface.backbones has no 'mobilefacenet' registered yet")
    return backbones


def test_mobilefacenet_matches_paper():
    # Chen et al. 2018: 0.99M parameters, 221M MAdds at 112x112 with a 128-d embedding.
    # The paper counts learnable parameters (PyTorch/Caffe keep BN running statistics
    # out of the parameter count), so compare trainable parameters.
    backbones = _backbones()
    cost = count_macs(backbones.get("mobilefacenet", embedding_size=128), input_shape=(112, 112, 3))
    assert cost.trainable_params == pytest.approx(0.99e6, rel=0.02)
    assert cost.macs == pytest.approx(221e6, rel=0.02)
    assert cost.complete, (cost.uncounted_ops, cost.notes)


def test_cli_run_with_registered_backbone(capsys):
    _backbones()
    args = _args("--backbone", "mobilefacenet", "--embedding-size", "128", "--max-macs", "200M")
    code = budget_command.run(args)
    captured = capsys.readouterr()
    assert code == 1
    assert "mobilefacenet" in captured.out
    assert re.search(r"OVER BUDGET mobilefacenet: MACs 2\d\d\.\d\dM > limit 200\.00M", captured.err)
    assert budget_command.run(_args("--backbone", "no-such-net")) == 2
    assert "unknown backbone(s) no-such-net" in capsys.readouterr().err


@pytest.mark.slow
def test_mobilenet_v2_near_published_macs():
    # Sandler et al. 2018: 300M multiply-adds, 3.4M parameters at 224x224.
    cost = count_macs(keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None))
    assert cost.macs == pytest.approx(300e6, rel=0.02)
    assert cost.trainable_params == pytest.approx(3.47e6, rel=0.02)
