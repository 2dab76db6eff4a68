"""Generic TFLite/ONNX conversion and the export parity checks in kerasface.testing."""

import keras
import numpy as np
import pytest

from kerasface.export.generic_conversion import (
    OnnxModelRunner,
    TFLiteModelRunner,
    onnx_model_proto,
    tflite_flatbuffer,
)
from kerasface.export.tflite_export import UnsupportedOpsError, tflite_op_names
from kerasface.testing.export_parity_check import (
    check_export_parity,
    check_exported_parity,
    check_onnx_parity,
    check_tflite_parity,
)


def small_conv_model(seed=0, name="small_conv"):
    """32x32 images -> (B, 16): conv, BN with non-trivial statistics, PReLU, depthwise, dropout, dense."""
    keras.utils.set_random_seed(seed)
    images = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(images)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.PReLU(shared_axes=[1, 2])(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(16)(x)
    model = keras.Model(images, outputs, name=name)
    bn = model.get_layer("bn")
    rng = np.random.default_rng(seed)
    # Statistics far from the (0, 1) initial ones, so training-mode BN would give other outputs.
    bn.moving_mean.assign(rng.normal(0.5, 0.3, 8).astype("float32"))
    bn.moving_variance.assign(rng.uniform(2.0, 4.0, 8).astype("float32"))
    return model


def decoder_model(embedding_size=16):
    """(B, D) embeddings -> (B, 8, 8, 3) images, like the LATSE decoder."""
    keras.utils.set_random_seed(1)
    embeddings = keras.Input((embedding_size,), name="embedding")
    x = keras.layers.Dense(4 * 4 * 8)(embeddings)
    x = keras.layers.Reshape((4, 4, 8))(x)
    x = keras.layers.Conv2DTranspose(8, 3, strides=2, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(3, 3, padding="same", activation="tanh")(x)
    return keras.Model(embeddings, x, name="decoder")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(0.0, 0.6, (3, 32, 32, 3)).astype("float32")


@pytest.fixture(scope="module")
def model():
    return small_conv_model()


@pytest.fixture(scope="module")
def flatbuffer(model):
    return tflite_flatbuffer(model)


def test_parity_passes_on_a_small_conv_model(model, images, flatbuffer):
    results = check_export_parity(model, images)
    assert set(results) == {"tflite", "onnx"}
    for result in results.values():
        assert result["model"] == "small_conv"
        assert result["output_shapes"] == [(3, 16)]
        assert 0.0 <= result["max_abs_diff"] <= 1e-4
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "PRELU", "FULLY_CONNECTED"} <= set(results["tflite"]["ops"])
    assert not [op for op in results["tflite"]["ops"] if op.startswith("custom:")]
    assert "Conv" in results["onnx"]["ops"] and results["onnx"]["opset"] == 17

    # The reported difference is the one an independent LiteRT run gives, against inference mode.
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    runner = interpreter.get_signature_runner("serving_default")
    exported = runner(image=images)["output"]
    inference = keras.ops.convert_to_numpy(model(images, training=False))
    # A fresh copy: a training-mode call would also update the BN statistics of `model`.
    training = keras.ops.convert_to_numpy(small_conv_model()(images, training=True))
    assert np.max(np.abs(training - inference)) > 1e-2  # so parity really is about inference mode
    result = check_exported_parity(model, flatbuffer, images)
    assert result["max_abs_diff"] == pytest.approx(float(np.max(np.abs(exported - inference))), abs=1e-7)
    assert result["size_bytes"] == len(flatbuffer)


def test_parity_fails_for_a_file_with_other_weights(model, images, tmp_path):
    other = small_conv_model(seed=7, name="other")
    with pytest.raises(AssertionError, match=r"TFLite export parity check \(model 'small_conv'\): outputs: max "
                       r"\|difference\| [0-9.e-]+ exceeds"):
        check_exported_parity(model, tflite_flatbuffer(other), images)
    path = tmp_path / "other.onnx"
    path.write_bytes(onnx_model_proto(other).SerializeToString())
    with pytest.raises(AssertionError, match=r"ONNX export parity check \(model 'small_conv'\)"):
        check_exported_parity(model, path, images)


class _EagerOnlyOffset(keras.layers.Layer):
    """Adds 1 when run eagerly only: what a Python-side branch does to a traced export."""

    def call(self, x):
        import tensorflow as tf

        return x + 1.0 if tf.executing_eagerly() else x


def test_parity_fails_when_the_traced_graph_differs_from_eager(images):
    images_in = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3)(images_in)
    model = keras.Model(images_in, _EagerOnlyOffset()(keras.layers.GlobalAveragePooling2D()(x)), name="branchy")
    with pytest.raises(AssertionError, match=r"TFLite export parity check \(model 'branchy'\).*max \|difference\| 1 "):
        check_tflite_parity(model, images)


def test_parity_reports_every_failing_format(images):
    images_in = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(images_in)
    model = keras.Model(images_in, _EagerOnlyOffset()(x), name="branchy2")
    with pytest.raises(AssertionError, match=r"(?s)2 of 2 export formats differ.*TFLite.*ONNX"):
        check_export_parity(lambda: model, images)


class _Erfinv(keras.layers.Layer):
    """An op with no TFLite builtin kernel (Flex only) and no standard ONNX op."""

    def call(self, x):
        return keras.ops.erfinv(keras.ops.tanh(x) * 0.5)


def test_flex_op_raises_unsupported_ops_error(images):
    images_in = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(_Erfinv()(images_in)))
    model = keras.Model(images_in, outputs, name="needs_flex")
    message = "model 'needs_flex' uses .* no TFLite builtin kernel: Erfinv"
    with pytest.raises(UnsupportedOpsError, match=message) as info:
        check_tflite_parity(model, images)
    assert info.value.ops == ["Erfinv"]
    with pytest.raises(ValueError, match="no ONNX opset 17 definition: Erfinv"):
        check_onnx_parity(model, images)


def test_embedding_to_image_model_converts_and_matches():
    embeddings = np.random.default_rng(2).normal(size=(5, 16)).astype("float32")
    results = check_export_parity(decoder_model, embeddings)
    for result in results.values():
        assert result["output_shapes"] == [(5, 8, 8, 3)]
    assert "TRANSPOSE_CONV" in results["tflite"]["ops"]


def test_mixed_precision_model_is_converted_in_float32(images):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        mixed = small_conv_model(name="mixed")
    finally:
        keras.config.set_dtype_policy(previous)
    assert mixed.get_layer("bn").compute_dtype == "float16"
    result = check_tflite_parity(mixed, images)
    assert result["max_abs_diff"] <= 1e-4
    assert not [op for op in result["ops"] if op.startswith("custom:")]


def test_int8_flatbuffer_is_full_integer_and_close(model, images, flatbuffer):
    representative = np.random.default_rng(3).normal(0.0, 0.6, (32, 32, 32, 3)).astype("float32")
    int8 = tflite_flatbuffer(model, quantize="int8", representative_inputs=representative)
    assert {"QUANTIZE", "DEQUANTIZE"} <= set(tflite_op_names(int8))
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=int8)
    conv_types = {
        detail["dtype"] for detail in interpreter.get_tensor_details() if "conv" in detail["name"].lower()
    }
    assert conv_types and conv_types <= {np.int8, np.int32}  # int32 conv biases
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    actual = TFLiteModelRunner(int8)(images)[0]
    cosine = np.sum(actual * expected, -1) / (np.linalg.norm(actual, axis=-1) * np.linalg.norm(expected, axis=-1))
    assert cosine.min() > 0.98, cosine
    float_runner = TFLiteModelRunner(flatbuffer)
    # Batches of different sizes on one runner (the interpreter is resized).
    np.testing.assert_allclose(float_runner(images[:1])[0], float_runner(images)[0][:1], atol=1e-5)


def test_argument_errors(model, images, flatbuffer):
    with pytest.raises(ValueError, match=r"quantize='int8' needs `representative_inputs`"):
        tflite_flatbuffer(model, quantize="int8")
    message = r"`representative_inputs` must be a float array \(N, 32, 32, 3\), got float32 \(4, 16, 16, 3\)"
    with pytest.raises(ValueError, match=message):
        tflite_flatbuffer(model, quantize="int8", representative_inputs=np.zeros((4, 16, 16, 3), "float32"))
    with pytest.raises(ValueError, match="only used with quantize='int8'"):
        tflite_flatbuffer(model, representative_inputs=images)
    with pytest.raises(ValueError, match=r"`quantize` must be one of .* got 'int4'"):
        tflite_flatbuffer(model, quantize="int4")
    with pytest.raises(ValueError, match=r"`opset` must be in 13..18 .* got 19"):
        onnx_model_proto(model, opset=19)
    a, b = keras.Input((4,)), keras.Input((4,))
    two_inputs = keras.Model([a, b], keras.layers.Add()([a, b]), name="two")
    with pytest.raises(ValueError, match="model 'two' has 2"):
        tflite_flatbuffer(two_inputs)
    with pytest.raises(ValueError, match=r"`formats` must be some of \('tflite', 'onnx'\), got \('coreml',\)"):
        check_export_parity(model, images, formats=("coreml",))
    with pytest.raises(ValueError, match="`exported` must be TFLite flatbuffer bytes"):
        check_exported_parity(model, "model.pb", images)
    with pytest.raises(ValueError, match=r"expected inputs of shape \(batch, 32, 32, 3\), got \(2, 8\)"):
        TFLiteModelRunner(flatbuffer)(np.zeros((2, 8), "float32"))


def test_onnx_runner_runs_a_file_with_free_batch(model, images, tmp_path):
    path = tmp_path / "m.onnx"
    proto = onnx_model_proto(model)
    path.write_bytes(proto.SerializeToString())
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    runner = OnnxModelRunner(path, num_threads=1)
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    np.testing.assert_allclose(runner(images.astype("float64"))[0], expected, atol=1e-4)
    np.testing.assert_allclose(runner(images[:1])[0], expected[:1], atol=1e-4)
