"""The shared layer/model checks pass on well-behaved objects and fail on broken ones."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from kerasface.testing import (
    CHECK_NAMES,
    check_mirrored,
    check_mixed_precision,
    check_saving,
    check_serialization,
    check_xla,
    run_all_checks,
)

NUM_CLASSES = 5
EMBEDDING_DIM = 6
IMAGE_SIZE = 16


# --- well-behaved objects -------------------------------------------------------------


@keras.saving.register_keras_serializable(package="kerasface_tests")
class ToyCosineHead(keras.layers.Layer):
    """Cosine head with an additive margin on the target class, float32 logits.

    Args:
        num_classes: number of classes C.
        scale: logit scale s.
        margin: cosine margin m subtracted from the target logit in training.

    Call arguments:
        inputs: ``[embeddings, labels]`` or ``embeddings``.
        training: apply the margin (needs labels).

    Returns:
        float32 (B, C) logits ``s * (cos - m * onehot)`` in training, ``s * cos`` otherwise.
    """

    def __init__(self, num_classes, scale=8.0, margin=0.2, **kwargs):
        kwargs["dtype"] = kwargs.get("dtype") or "float32"
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.scale = scale
        self.margin = margin

    def build(self, input_shape):
        embedding_shape = input_shape[0] if isinstance(input_shape[0], (list, tuple)) else input_shape
        self.kernel = self.add_weight(
            name="kernel",
            shape=(embedding_shape[-1], self.num_classes),
            initializer=keras.initializers.RandomNormal(seed=3),
        )

    def call(self, inputs, training=None):
        embeddings, labels = inputs if isinstance(inputs, (list, tuple)) else (inputs, None)
        cos = ops.matmul(
            ops.normalize(ops.cast(embeddings, "float32"), axis=-1), ops.normalize(self.kernel, axis=0)
        )
        if labels is None or not training:
            return self.scale * cos
        return self.scale * (cos - self.margin * ops.one_hot(labels, self.num_classes))

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "scale": self.scale,
            "margin": self.margin,
        }


@keras.saving.register_keras_serializable(package="kerasface_tests")
class ToyBackbone(keras.Model):
    """Functional conv backbone built in ``__init__`` like keras-hub backbones.

    Args:
        embedding_dim: size D of the L2-normalised float32 embeddings.
        width: channels of the conv layer.
        image_size: side of the square RGB input.
        synchronized: use synchronized BatchNormalization (global-batch statistics).

    Call arguments:
        images: (B, image_size, image_size, 3) float32.

    Returns:
        (B, embedding_dim) float32 L2-normalised embeddings.
    """

    def __init__(self, embedding_dim=EMBEDDING_DIM, width=4, image_size=IMAGE_SIZE, synchronized=True, **kwargs):
        images = keras.Input((image_size, image_size, 3), name="images")
        x = keras.layers.Conv2D(
            width, 3, strides=2, padding="same", use_bias=False,
            kernel_initializer=keras.initializers.HeNormal(seed=1),
        )(images)
        x = keras.layers.BatchNormalization(synchronized=synchronized)(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        x = keras.layers.Dense(embedding_dim, kernel_initializer=keras.initializers.GlorotUniform(seed=2))(x)
        # float32 embeddings under mixed precision, as the project's embedding models promise.
        embeddings = keras.layers.UnitNormalization(dtype="float32")(x)
        super().__init__(images, embeddings, **kwargs)
        self.embedding_dim = embedding_dim
        self.width = width
        self.image_size = image_size
        self.synchronized = synchronized

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "embedding_dim": self.embedding_dim,
            "width": self.width,
            "image_size": self.image_size,
            "synchronized": self.synchronized,
        }


def head_inputs(batch=8, seed=0):
    rng = np.random.default_rng(seed)
    embeddings = rng.standard_normal((batch, EMBEDDING_DIM)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, size=batch).astype("int32")
    return [embeddings, labels]


def backbone_images(batch=8, seed=0):
    """Images whose second half (the second replica's slice) has another mean and spread."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    images[batch // 2 :] = images[batch // 2 :] * 3.0 + 2.0
    return images


# --- broken objects -------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="kerasface_tests")
class ForgetfulScale(keras.layers.Layer):
    """Computes ``x * factor + offset`` but leaves ``offset`` out of its config."""

    def __init__(self, factor=2.0, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor
        self.offset = offset

    def call(self, x):
        return x * self.factor + self.offset

    def get_config(self):
        # Overriding get_config turns off Keras's automatic capture of the init arguments.
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="kerasface_tests")
class HiddenScale(keras.layers.Layer):
    """Puts ``factor`` in its config but stores it only privately."""

    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self._factor = factor

    def call(self, x):
        return x * self._factor

    def get_config(self):
        return {**super().get_config(), "factor": self._factor}


@keras.saving.register_keras_serializable(package="kerasface_tests")
class Float16LeakDense(keras.layers.Layer):
    """Declares the float32 policy, yet returns float16 (when ``leak``) like a careless head."""

    def __init__(self, units=3, leak=True, **kwargs):
        kwargs["dtype"] = kwargs.get("dtype") or "float32"
        super().__init__(**kwargs)
        self.units = units
        self.leak = leak

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units))

    def call(self, x):
        y = ops.matmul(x, self.kernel)
        return ops.cast(y, "float16") if self.leak else y

    def get_config(self):
        return {**super().get_config(), "units": self.units, "leak": self.leak}


class PythonCounterScale(keras.layers.Layer):
    """Scales by a Python call counter: eager sees 1, 2, 3...; a compiled trace freezes it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def call(self, x):
        self.calls += 1
        return x * float(self.calls)


class NumpyFunctionScale(keras.layers.Layer):
    """Runs Python code inside the graph, which XLA cannot compile."""

    def call(self, x):
        y = tf.numpy_function(lambda a: a * 2.0, [x], tf.float32)
        return tf.ensure_shape(y, x.shape)


class UnregisteredDense(keras.layers.Dense):
    """A custom Dense nobody registered for serialization."""


# --- well-behaved objects pass ---------------------------------------------------------


def test_all_checks_pass_on_keras_dense(tmp_path):
    inputs = np.random.default_rng(1).standard_normal((8, 6)).astype("float32")
    results = run_all_checks(lambda: keras.layers.Dense(4), inputs, tmp_path)
    assert set(results) == set(CHECK_NAMES)
    # Dense follows the policy: float16 really ran, so outputs differ a little from float32.
    assert results["mixed_precision"]["output_dtypes"] == ["float16"]
    assert 0.0 < results["mixed_precision"]["max_output_diff"] < 1e-2
    assert results["saving"]["path"].is_file()
    assert keras.config.dtype_policy().name == "float32"


def test_all_checks_pass_on_head_with_labels(tmp_path):
    inputs = head_inputs()
    results = run_all_checks(
        lambda: ToyCosineHead(NUM_CLASSES), inputs, tmp_path, call_kwargs={"training": True}
    )
    # Declared float32 policy: logits stay float32 and equal the float32 build exactly.
    assert results["mixed_precision"]["output_dtypes"] == ["float32"]
    assert results["mixed_precision"]["max_output_diff"] == 0.0

    # The training step trained the head on the labels: its loss is the sparse categorical
    # crossentropy of the margin logits of the initial weights, computed here in NumPy.
    embeddings, labels = inputs
    kernel = keras.ops.convert_to_numpy(keras.initializers.RandomNormal(seed=3)((EMBEDDING_DIM, NUM_CLASSES)))
    cos = (embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)) @ (
        kernel / np.linalg.norm(kernel, axis=0, keepdims=True)
    )
    logits = 8.0 * (cos - 0.2 * np.eye(NUM_CLASSES)[labels])
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected_loss = -log_softmax[np.arange(len(labels)), labels].mean()
    np.testing.assert_allclose(results["mirrored"]["loss"], expected_loss, rtol=1e-5)


def test_all_checks_pass_on_backbone_with_synchronized_bn(tmp_path):
    results = run_all_checks(
        lambda: ToyBackbone(),
        backbone_images(),
        tmp_path,
        call_kwargs={"training": True},
        options={"mixed_precision": {"output_dtype": "float32"}},
    )
    assert results["mixed_precision"]["output_dtypes"] == ["float32"]
    assert results["xla"]["max_gradient_diff"] < 1e-4


# --- broken objects fail ---------------------------------------------------------------


def test_serialization_fails_when_config_omits_an_init_argument():
    with pytest.raises(AssertionError, match=r"serialization check \(ForgetfulScale\).*missing from get_config\(\): \['offset'\]"):
        check_serialization(ForgetfulScale(3.0, offset=1.0))


def test_serialization_fails_when_init_argument_is_not_a_public_attribute():
    with pytest.raises(AssertionError, match=r"not stored as public attributes: \['factor'\]"):
        check_serialization(HiddenScale(3.0))


def test_serialization_fails_for_unregistered_class():
    with pytest.raises(AssertionError, match="register_keras_serializable"):
        check_serialization(UnregisteredDense(3))


def test_saving_fails_for_unregistered_class(tmp_path):
    inputs = np.ones((4, 6), "float32")
    with pytest.raises(AssertionError, match=r"saving check \(UnregisteredDense\).*load_model.*register"):
        check_saving(lambda: UnregisteredDense(3), inputs, tmp_path)
    # The registered parent class round-trips through the same path (given as an object).
    result = check_saving(keras.layers.Dense(3), inputs, tmp_path)
    assert result["path"].is_file()


def test_mixed_precision_fails_when_declared_float32_output_is_float16():
    inputs = np.random.default_rng(2).standard_normal((4, 6)).astype("float32")
    with pytest.raises(AssertionError, match=r"mixed precision check.*output 0 is float16, expected float32"):
        check_mixed_precision(lambda: Float16LeakDense(leak=True), inputs)
    assert keras.config.dtype_policy().name == "float32", "the global policy leaked out of a failed check"
    result = check_mixed_precision(lambda: Float16LeakDense(leak=False), inputs)
    assert result["output_dtypes"] == ["float32"]


def test_mixed_precision_fails_on_requested_float32_output():
    inputs = np.random.default_rng(2).standard_normal((4, 6)).astype("float32")
    with pytest.raises(AssertionError, match="output_dtype='float32' was requested"):
        check_mixed_precision(lambda: keras.layers.Dense(3), inputs, output_dtype="float32")


def test_xla_fails_when_python_state_is_frozen_in_the_trace():
    inputs = np.ones((2, 3), "float32")
    with pytest.raises(AssertionError, match=r"XLA check \(PythonCounterScale\): call 2: outputs: max \|difference\| 1"):
        check_xla(PythonCounterScale, inputs)


def test_xla_fails_when_layer_cannot_compile():
    with pytest.raises(AssertionError, match=r"XLA check \(NumpyFunctionScale\): .*failed to compile"):
        check_xla(NumpyFunctionScale, np.ones((2, 3), "float32"))


@pytest.mark.parametrize("synchronized", [True, False])
def test_mirrored_catches_per_replica_batch_norm(synchronized):
    # The replicas' halves of the batch have different statistics, so plain BN normalises
    # each half differently than the single device normalises the whole batch.
    factory = lambda: ToyBackbone(synchronized=synchronized)  # noqa: E731
    if synchronized:
        result = check_mirrored(factory, backbone_images())
        assert result["max_weight_diff"] < 1e-5
    else:
        with pytest.raises(AssertionError, match=r"MirroredStrategy check \(ToyBackbone\), training step: weight"):
            check_mirrored(factory, backbone_images())


def test_mirrored_rejects_uneven_batch():
    with pytest.raises(ValueError, match="global batch of 7 does not split evenly over 2 replicas"):
        check_mirrored(lambda: keras.layers.Dense(2), np.ones((7, 3), "float32"))


def test_checks_that_rebuild_need_a_factory():
    with pytest.raises(TypeError, match="zero-argument factory"):
        check_xla(keras.layers.Dense(2), np.ones((2, 3), "float32"))


def test_run_all_checks_reports_every_failure(tmp_path):
    with pytest.raises(AssertionError, match=r"(?s)1 of the shared checks failed:\nmixed precision check") as info:
        run_all_checks(lambda: Float16LeakDense(leak=True), np.ones((4, 6), "float32"), tmp_path, skip=("mirrored",))
    assert "serialization check" not in str(info.value)
    with pytest.raises(ValueError, match=r"unknown check names \['xla_check'\]"):
        run_all_checks(lambda: keras.layers.Dense(2), np.ones((4, 3), "float32"), tmp_path, skip=("xla_check",))
