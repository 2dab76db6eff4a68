"""Quantisation-aware training: BN folding, fake quantisation, QAT model, int8 TFLite conversion."""

import numpy as np
import pytest
import tensorflow as tf

import keras

from kerasface.quantization import (
    FakeQuant,
    calibrate_ranges,
    cosine_distance,
    fake_quant_layers,
    fake_quantize_kernel,
    fine_tune,
    fold_batch_norms,
    fold_weights,
    qat_keras_embeddings,
    qat_tflite_flatbuffer,
    quantize_model,
    strip_fake_quant,
)
from kerasface.testing import run_all_checks

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- NumPy references


def numpy_fake_quant(x, range_min, range_max, num_bits=8, narrow_range=False):
    """TensorFlow's FakeQuantWithMinMaxVars: zero point nudged to an integer so 0.0 is exact."""
    quant_min = 1 if narrow_range else 0
    quant_max = 2**num_bits - 1
    scale = (range_max - range_min) / (quant_max - quant_min)
    zero_point_from_min = quant_min - range_min / scale
    if zero_point_from_min < quant_min:
        zero_point = quant_min
    elif zero_point_from_min > quant_max:
        zero_point = quant_max
    else:
        zero_point = np.floor(zero_point_from_min + 0.5)
    nudged_min = (quant_min - zero_point) * scale
    nudged_max = (quant_max - zero_point) * scale
    clamped = np.clip(x, nudged_min, nudged_max)
    return np.floor((clamped - nudged_min) / scale + 0.5) * scale + nudged_min, nudged_min, nudged_max


def numpy_symmetric_per_channel(kernel_2d):
    """int8 weights as TFLite stores them: per column, scale max|w| / 127, values in [-127, 127]."""
    scale = np.abs(kernel_2d).max(axis=0) / 127.0
    return np.clip(np.round(kernel_2d / scale), -127, 127) * scale


def set_random_bn_statistics(model, rng):
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.5, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.2, 2.0, n).astype("float32"))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.3, n).astype("float32"))


def tiny_embedding_model(image_size=112, seed=0):
    """conv-BN-PReLU, depthwise-BN-PReLU, residual add, GDC-like neck in a nested backbone + L2 norm."""
    keras.utils.set_random_seed(seed)
    images = keras.Input((image_size, image_size, 3), name="image")
    x = keras.layers.Conv2D(8, 3, 4, padding="same", use_bias=False, name="stem_conv")(images)
    x = keras.layers.BatchNormalization(epsilon=1e-5, name="stem_bn")(x)
    x = keras.layers.PReLU(shared_axes=[1, 2], alpha_initializer=keras.initializers.Constant(0.25), name="stem_act")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    y = keras.layers.BatchNormalization(epsilon=1e-5, name="dw_bn")(y)
    y = keras.layers.PReLU(shared_axes=[1, 2], alpha_initializer=keras.initializers.Constant(0.25), name="dw_act")(y)
    y = keras.layers.Conv2D(8, 1, use_bias=False, name="project")(y)
    y = keras.layers.BatchNormalization(epsilon=1e-5, name="project_bn")(y)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.Conv2D(16, 3, 2, padding="same", use_bias=False, name="down")(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5, name="down_bn")(x)
    x = keras.layers.ReLU(name="down_relu")(x)
    size = x.shape[1]
    x = keras.layers.DepthwiseConv2D(size, padding="valid", use_bias=False, name="gdc")(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5, name="gdc_bn")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(12, use_bias=False, name="linear")(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5, scale=False, name="embedding_bn")(x)
    backbone = keras.Model(images, x, name="tiny_backbone")
    set_random_bn_statistics(backbone, np.random.default_rng(seed))
    outer = keras.Input((image_size, image_size, 3), name="image")
    embeddings = keras.layers.UnitNormalization(name="l2_normalize")(backbone(outer))
    return keras.Model(outer, embeddings, name="tiny_embedding")


def face_like_batch(n, size=112, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n, size, size, 3)).astype("float32")


# ---------------------------------------------------------------- BN folding


def test_fold_weights_matches_numpy_reference_for_conv_and_bn():
    images = keras.Input((6, 6, 3))
    conv = keras.layers.Conv2D(4, 3, use_bias=True, bias_initializer="random_normal")
    bn = keras.layers.BatchNormalization(epsilon=1e-3)
    keras.Model(images, bn(conv(images)))
    set_random_bn_statistics(keras.Model(images, bn(conv(images))), RNG)
    kernel, bias = fold_weights(conv, bn)
    w, b = conv.get_weights()
    gamma, beta, mean, var = (np.asarray(v) for v in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
    s = gamma / np.sqrt(var + 1e-3)
    np.testing.assert_allclose(kernel, w * s[None, None, None, :], rtol=1e-6)
    np.testing.assert_allclose(bias, (b - mean) * s + beta, rtol=1e-5, atol=1e-6)


def test_fold_weights_depthwise_multiplier_maps_channel_c_times_m():
    images = keras.Input((5, 5, 3))
    dw = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False)
    bn = keras.layers.BatchNormalization()
    set_random_bn_statistics(keras.Model(images, bn(dw(images))), RNG)
    kernel, bias = fold_weights(dw, bn)
    (w,) = dw.get_weights()
    s = np.asarray(bn.gamma) / np.sqrt(np.asarray(bn.moving_variance) + bn.epsilon)
    for c in range(3):
        for m in range(2):
            np.testing.assert_allclose(kernel[:, :, c, m], w[:, :, c, m] * s[c * 2 + m], rtol=1e-6)
    assert bias.shape == (6,)


def test_fold_batch_norms_equals_original_and_removes_every_bn():
    model = tiny_embedding_model()
    folded = fold_batch_norms(model)
    kinds = [type(layer).__name__ for layer in folded.layers]
    assert "BatchNormalization" not in kinds and "Functional" not in kinds
    assert kinds.count("Conv2D") == 3 and kinds.count("DepthwiseConv2D") == 2 and kinds.count("Dense") == 1
    x = face_like_batch(4)
    original, result = model(x, training=False), folded(x, training=False)
    assert float(keras.ops.max(keras.ops.abs(original - result))) < 1e-5
    # Layers are copies: changing the folded model leaves the original alone.
    folded.get_layer("linear").kernel.assign(keras.ops.zeros_like(folded.get_layer("linear").kernel))
    assert float(keras.ops.max(keras.ops.abs(model(x) - original))) == 0.0


def test_fold_batch_norms_keeps_a_bn_shared_with_another_consumer():
    images = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same")(images)
    normalized = keras.layers.BatchNormalization()(conv)
    model = keras.Model(images, keras.layers.Add()([conv, normalized]))
    set_random_bn_statistics(model, RNG)
    x = face_like_batch(2, 8)
    folded = fold_batch_norms(model)
    np.testing.assert_allclose(folded(x), model(x), atol=1e-5)


def test_rebuild_rejects_subclassed_model():
    class Plain(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="not a functional Keras model"):
        fold_batch_norms(Plain())


# ---------------------------------------------------------------- FakeQuant


@pytest.mark.parametrize("range_min, range_max, narrow", [(-0.73, 1.91, False), (-2.0, 0.37, True), (0.2, 3.0, False)])
def test_fake_quant_matches_numpy_nudged_reference(range_min, range_max, narrow):
    layer = FakeQuant(narrow_range=narrow)
    # Random points, not a grid: a grid point on an exact half step rounds either way in float32.
    x = np.sort(np.random.default_rng(5).uniform(-3.5, 3.5, 2001)).astype(np.float32).reshape(1, -1)
    layer.build(x.shape)
    layer.range_min.assign(range_min)
    layer.range_max.assign(range_max)
    expected, nudged_min, nudged_max = numpy_fake_quant(x.astype(np.float64), range_min, range_max, narrow_range=narrow)
    result = keras.ops.convert_to_numpy(layer(x, training=False))
    np.testing.assert_allclose(result, expected, atol=1e-5)
    assert len(np.unique(np.round(result, 5))) <= (255 if narrow else 256)
    # 0.0 is exactly representable whatever the range (the zero point is nudged to an integer).
    assert float(keras.ops.convert_to_numpy(layer(np.zeros((1, 1), np.float32)))[0, 0]) == 0.0


def test_fake_quant_training_updates_range_by_ema_and_includes_zero():
    layer = FakeQuant(ema_decay=0.9)
    first = np.array([[0.5, 1.0, 2.0]], np.float32)  # all positive: min becomes 0, not 0.5
    second = np.array([[-1.0, 0.0, 4.0]], np.float32)
    layer(first, training=True)
    assert (float(layer.range_min.numpy()), float(layer.range_max.numpy())) == (0.0, 2.0)
    layer(second, training=True)
    np.testing.assert_allclose([layer.range_min.numpy(), layer.range_max.numpy()], [-0.1, 2.2], rtol=1e-6)
    layer(np.full((1, 3), 100.0, np.float32), training=False)  # inference leaves the range alone
    np.testing.assert_allclose(layer.range_max.numpy(), 2.2, rtol=1e-6)


def test_fake_quant_gradient_is_straight_through_inside_range_zero_outside():
    layer = FakeQuant()
    x = tf.constant(np.linspace(-2.0, 2.0, 81, dtype=np.float32)[None])
    layer.build(x.shape)
    layer.range_min.assign(-1.0)
    layer.range_max.assign(1.5)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = keras.ops.sum(layer(x, training=False) * 3.0)
    gradient = tape.gradient(y, x).numpy()[0]
    _, nudged_min, nudged_max = numpy_fake_quant(0.0, -1.0, 1.5)
    inside = (x.numpy()[0] >= nudged_min) & (x.numpy()[0] <= nudged_max)
    np.testing.assert_allclose(gradient[inside], 3.0)
    np.testing.assert_allclose(gradient[~inside], 0.0)
    assert inside.sum() > 20 and (~inside).sum() > 10


def test_fake_quant_rejects_bad_arguments():
    with pytest.raises(ValueError, match="`ema_decay` must be in"):
        FakeQuant(ema_decay=1.0)
    with pytest.raises(ValueError, match="`num_bits` must be in"):
        FakeQuant(num_bits=1)


def test_fake_quant_passes_shared_checks(tmp_path):
    inputs = RNG.normal(0, 1, (4, 6, 5)).astype("float32")
    run_all_checks(
        lambda: FakeQuant(ema_decay=0.9),
        inputs,
        tmp_path,
        call_kwargs={"training": True},
        options={"mixed_precision": {"output_dtype": "float16", "atol": 5e-2}},
    )


def test_weight_fake_quant_matches_numpy_per_channel_symmetric():
    conv_kernel = RNG.normal(0, 0.2, (3, 3, 4, 5)).astype("float32")
    result = keras.ops.convert_to_numpy(fake_quantize_kernel(conv_kernel))
    expected = numpy_symmetric_per_channel(conv_kernel.reshape(-1, 5)).reshape(conv_kernel.shape)
    np.testing.assert_allclose(result, expected, atol=1e-6)
    depthwise = RNG.normal(0, 0.2, (3, 3, 4, 2)).astype("float32")
    result = keras.ops.convert_to_numpy(fake_quantize_kernel(depthwise, depthwise=True))
    # Channel c * M + m has its own scale: (H, W, C, M) flattened to (H * W, C * M).
    expected = numpy_symmetric_per_channel(depthwise.reshape(9, 8)).reshape(depthwise.shape)
    np.testing.assert_allclose(result, expected, atol=1e-6)
    levels = np.round(result.reshape(9, 8) / (np.abs(depthwise.reshape(9, 8)).max(axis=0) / 127))
    assert levels.min() == -127 or levels.max() == 127
    assert levels.min() >= -127 and levels.max() <= 127
    dense = RNG.normal(0, 0.2, (6, 4)).astype("float32")
    result = keras.ops.convert_to_numpy(fake_quantize_kernel(dense, per_channel=False))
    np.testing.assert_allclose(result, numpy_symmetric_per_channel(dense.reshape(-1, 1)).reshape(6, 4), atol=1e-6)


# ---------------------------------------------------------------- QAT model and int8 file


def test_quantize_model_places_fake_quants_where_tflite_requantizes():
    qat = quantize_model(tiny_embedding_model())
    names = [layer.name for layer in fake_quant_layers(qat)]
    # Input, each conv/dense output (not "down": its ReLU is fused), PReLUs, Add, ReLU.
    assert names == [
        "input_quant", "stem_conv_quant", "stem_act_quant", "dw_quant", "dw_act_quant", "project_quant",
        "add_quant", "down_relu_quant", "gdc_quant", "linear_quant",
    ]
    kinds = {type(layer).__name__ for layer in qat.layers}
    assert {"QuantizedConv2D", "QuantizedDepthwiseConv2D", "QuantizedDense"} <= kinds
    assert not kinds & {"Conv2D", "DepthwiseConv2D", "Dense", "BatchNormalization"}
    assert type(qat.layers[-1]).__name__ == "UnitNormalization"


def test_qat_model_converts_to_int8_tflite_that_it_predicts(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    model = tiny_embedding_model()
    qat = quantize_model(model)
    faces = (np.random.default_rng(1).uniform(0, 255, (48, 112, 112, 3))).astype(np.uint8)
    calibrate_ranges(qat, faces[:32], batch_size=16)
    with pytest.raises(ValueError, match="empty range"):
        qat_tflite_flatbuffer(quantize_model(model))
    flatbuffer = qat_tflite_flatbuffer(qat)
    interpreter = Interpreter(model_content=flatbuffer)
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "PRELU", "ADD", "L2_NORMALIZATION"} <= ops
    weights = [t for t in interpreter.get_tensor_details() if len(t["shape"]) == 4 and t["dtype"] == np.int8]
    assert any(len(t["quantization_parameters"]["scales"]) > 1 for t in weights)  # per-channel kernels
    x = (faces[32:].astype(np.float32) - 127.5) / 128
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    lite = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    keras_qat = qat_keras_embeddings(qat, x)
    keras_float = keras.ops.convert_to_numpy(model(x))
    cos_qat = np.sum(lite * keras_qat, axis=1) / np.linalg.norm(lite, axis=1)
    cos_float = np.sum(lite * keras_float, axis=1) / np.linalg.norm(lite, axis=1)
    # The int8 file differs from the fake-quant model only by int32 accumulation details
    # and the 1/128 output step; from the float model by the whole quantisation error.
    assert cos_qat.min() > 0.999, cos_qat.min()
    assert np.abs(lite - keras_qat).max() < 3 / 128
    assert (1 - cos_qat).mean() < 0.5 * (1 - cos_float).mean()


@pytest.mark.slow
def test_fine_tune_trains_qat_model_and_strip_restores_float_layers():
    model = tiny_embedding_model(image_size=112, seed=3)
    qat = quantize_model(model)
    faces = (np.random.default_rng(2).uniform(0, 255, (32, 112, 112, 3))).astype(np.uint8)
    calibrate_ranges(qat, faces, batch_size=16)
    x = (faces.astype(np.float32) - 127.5) / 128
    teacher = keras.ops.convert_to_numpy(model(x))

    def distance():
        return float(np.mean(keras.ops.convert_to_numpy(cosine_distance(teacher, qat_keras_embeddings(qat, x)))))

    before = distance()
    kernel_before = keras.ops.convert_to_numpy(qat.get_layer("linear").kernel).copy()
    history = fine_tune(qat, model, faces, epochs=2, batch_size=16, learning_rate=1e-4, verbose=0)
    losses = history.history["loss"]
    assert len(losses) == 2 and np.all(np.isfinite(losses))
    assert np.abs(keras.ops.convert_to_numpy(qat.get_layer("linear").kernel) - kernel_before).max() > 0
    # A random tiny model is almost unharmed by int8 (distance ~1e-4); training must keep it so.
    assert distance() < max(10 * before, 1e-3), (before, distance())
    plain = strip_fake_quant(qat)
    assert not {type(layer).__name__ for layer in plain.layers} & {"FakeQuant", "QuantizedConv2D"}
    np.testing.assert_allclose(plain.get_layer("linear").kernel, qat.get_layer("linear").kernel)


def test_cosine_distance_reference():
    a = RNG.normal(size=(5, 7)).astype("float32")
    b = RNG.normal(size=(5, 7)).astype("float32")
    expected = 1 - (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(cosine_distance(a, b)), expected, rtol=1e-5)


def test_fine_tune_rejects_float_images():
    model = tiny_embedding_model()
    with pytest.raises(ValueError, match="training images must be uint8"):
        fine_tune(quantize_model(model), model, np.zeros((2, 112, 112, 3), np.float32))


def test_qat_model_saves_and_reloads_with_its_ranges(tmp_path):
    qat = quantize_model(tiny_embedding_model(image_size=64))
    faces = np.random.default_rng(4).uniform(0, 255, (16, 64, 64, 3)).astype(np.uint8)
    calibrate_ranges(qat, faces, batch_size=8)
    qat.save(tmp_path / "qat.keras")
    reloaded = keras.saving.load_model(tmp_path / "qat.keras")
    x = (faces.astype(np.float32) - 127.5) / 128
    np.testing.assert_array_equal(qat_keras_embeddings(reloaded, x), qat_keras_embeddings(qat, x))
    assert [type(layer).__name__ for layer in reloaded.layers[:3]] == ["InputLayer", "FakeQuant", "QuantizedConv2D"]
    ranges = {layer.name: float(layer.range_max.numpy()) for layer in fake_quant_layers(reloaded)}
    assert all(value > 0 for value in ranges.values())
