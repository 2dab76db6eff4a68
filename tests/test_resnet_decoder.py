import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface.backbones.backbone_registry import BACKBONES
from kerasface.backbones.resnet_decoder import ResNetDecoder
from kerasface.budget import count_macs

SMALL = {
    "embedding_size": 16,
    "image_shape": (32, 32, 3),
    "stage_blocks": (1, 1, 1, 1),
    "stage_channels": (16, 16, 8, 8),
}


def reference_cost(embedding_size, size, blocks, channels):
    """Trainable params and MACs of the reversed ResNet, by hand from its description.

    Every conv is bias-free and followed by BN (gamma, beta); PReLU has one slope per channel.
    A transposed conv costs (input pixels) x k*k*C_in*C_out MACs.
    """
    n = size // 2 ** len(channels)
    c = channels[0]
    params = embedding_size * n * n * c + 2 * c + c
    macs = embedding_size * n * n * c
    for stage, (count, out) in enumerate(zip(blocks, channels)):
        for block in range(count):
            if stage > 0 and block == 0:
                params += c * out + 2 * out  # 1x1 transposed shortcut + BN
                params += 9 * c * out + 3 * out  # 3x3 transposed conv1 + BN + PReLU
                macs += n * n * c * out + n * n * 9 * c * out
                n *= 2
            else:
                params += 9 * c * out + 3 * out
                macs += n * n * 9 * c * out
            params += 9 * out * out + 2 * out + out  # conv2 + BN, PReLU after the add
            macs += n * n * 9 * out * out
            c = out
    params += 9 * c * c + 3 * c  # reversed stem: 3x3 transposed, BN, PReLU
    macs += n * n * 9 * c * c
    n *= 2
    params += 9 * c * 3 + 3  # output conv with bias
    macs += n * n * 9 * c * 3
    assert n == size
    return params, macs


def trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def random_embeddings(batch, size=16, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, size)).astype(np.float32)


def test_registry():
    assert "latse_decoder" in BACKBONES.list()
    model = BACKBONES.get("latse_decoder", **SMALL)
    assert isinstance(model, ResNetDecoder)
    assert model.input.name == "embedding"
    assert model.output_shape == (None, 32, 32, 3)


def test_paper_size_parameters_and_macs():
    model = ResNetDecoder(embedding_size=512)
    params, macs = reference_cost(512, 112, (2, 2, 2, 2), (512, 256, 128, 64))
    assert trainable(model) == params == 26_377_731
    assert model.get_layer("project_dense").kernel.shape == (512, 7 * 7 * 512)
    cost = count_macs(model)
    assert cost.complete, (cost.uncounted_ops, cost.notes)
    assert cost.macs == macs == 1_845_673_984
    # 7 -> 14 -> 28 -> 56 -> 112, as a reversed ResNet-18 with an upsampling stem.
    names = ("project_act", "stage1_block2_act", "stage2_block2_act", "stage3_block2_act", "stage4_block2_act")
    sizes = [int(model.get_layer(name).output.shape[1]) for name in (*names, "stem_act")]
    assert sizes == [7, 7, 14, 28, 56, 112]
    deconvs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2DTranspose)]
    assert sorted(layer.name for layer in deconvs) == sorted(
        [f"stage{s}_block1_{part}_deconv" for s in (2, 3, 4) for part in ("conv1", "shortcut")] + ["stem_deconv"]
    )
    assert all(layer.strides == (2, 2) for layer in deconvs)
    batch_norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert batch_norms and all(layer.synchronized for layer in batch_norms)


def test_small_parameter_count():
    model = ResNetDecoder(**SMALL)
    params, _ = reference_cost(16, 32, (1, 1, 1, 1), (16, 16, 8, 8))
    assert trainable(model) == params


@pytest.mark.parametrize(
    "kind, function, low, high",
    [("tanh", np.tanh, -1.0, 1.0), ("sigmoid", lambda z: 1.0 / (1.0 + np.exp(-z)), 0.0, 1.0)],
)
def test_output_activation_and_range(kind, function, low, high):
    keras.utils.set_random_seed(1)
    model = ResNetDecoder(**SMALL, output_activation=kind)
    embeddings = 5.0 * random_embeddings(4)
    before = keras.Model(model.input, model.get_layer("output_conv").output)
    logits = keras.ops.convert_to_numpy(before(embeddings, training=False))
    images = keras.ops.convert_to_numpy(model(embeddings, training=False))
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.float32
    np.testing.assert_allclose(images, function(logits), atol=1e-6)
    assert low <= images.min() and images.max() <= high
    assert images.std() > 0


def test_upsampling_shortcut_matches_numpy():
    keras.utils.set_random_seed(2)
    model = ResNetDecoder(**SMALL)
    outputs = [model.get_layer(name).output for name in ("stage1_block1_act", "stage2_block1_shortcut_pad")]
    probe = keras.Model(model.input, outputs)
    features, shortcut = (keras.ops.convert_to_numpy(t) for t in probe(random_embeddings(2), training=False))
    kernel = keras.ops.convert_to_numpy(model.get_layer("stage2_block1_shortcut_deconv").kernel)  # (1, 1, out, in)
    # The transpose of a 1x1 stride-2 conv: each input pixel lands on an even position of the doubled grid.
    expected = np.zeros((2, 4, 4, kernel.shape[2]), np.float32)
    expected[:, ::2, ::2] = np.einsum("bhwi,oi->bhwo", features, kernel[0, 0])
    np.testing.assert_allclose(shortcut, expected, atol=1e-5)


def test_gradients_reach_the_embedding():
    keras.utils.set_random_seed(3)
    model = ResNetDecoder(**SMALL)
    embeddings = tf.constant(random_embeddings(4))
    target = tf.constant(np.random.default_rng(1).uniform(-1, 1, size=(4, 32, 32, 3)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(embeddings)
        loss = tf.reduce_mean(tf.abs(model(embeddings, training=True) - target))
    grad = tape.gradient(loss, embeddings).numpy()
    assert grad.shape == (4, 16) and np.isfinite(grad).all()
    assert (np.abs(grad).sum(axis=1) > 0).all()
    weight_grads = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None and np.isfinite(keras.ops.convert_to_numpy(g)).all() for g in weight_grads)


def test_inference_is_per_sample():
    keras.utils.set_random_seed(4)
    model = ResNetDecoder(**SMALL)
    embeddings = random_embeddings(3)
    batch = keras.ops.convert_to_numpy(model(embeddings, training=False))
    for i in range(3):
        single = keras.ops.convert_to_numpy(model(embeddings[i : i + 1], training=False))
        np.testing.assert_allclose(batch[i : i + 1], single, atol=1e-5)
    assert np.abs(batch[0] - batch[1]).max() > 1e-3


def test_mixed_precision_output_is_float32():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = ResNetDecoder(**SMALL)
        images = model(random_embeddings(2), training=False)
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.get_layer("stem_deconv").compute_dtype == "float16"
    assert keras.backend.standardize_dtype(images.dtype) == "float32"


def test_config_round_trip():
    model = ResNetDecoder(**SMALL, output_activation="sigmoid", name="decoder")
    config = model.get_config()
    json.dumps(config)
    assert config == {"name": "decoder", "trainable": True, **SMALL, "output_activation": "sigmoid"}
    clone = ResNetDecoder.from_config(config)
    assert clone.get_config() == config and trainable(clone) == trainable(model)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_shape": (100, 100, 3)}, r"H and W must be positive multiples of 16 .*got \(100, 100, 3\)"),
        ({"image_shape": (112, 96, 1)}, r"`image_shape` must be \(H, W, 3\), got \(112, 96, 1\)"),
        ({"output_activation": "relu"}, r"`output_activation` must be one of \('tanh', 'sigmoid'\), got 'relu'"),
        ({"embedding_size": 0}, "`embedding_size` must be >= 1, got 0"),
        ({"stage_blocks": (2, 2, 2)}, r"one block count >= 1 per stage .*\(4 stages\), got \(2, 2, 2\)"),
        ({"stage_blocks": (2, 0, 2, 2)}, r"got \(2, 0, 2, 2\)"),
        ({"stage_channels": ()}, r"`stage_channels` must be a non-empty tuple of ints >= 1, got \(\)"),
    ],
)
def test_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResNetDecoder(**kwargs)


def test_fewer_stages_change_the_divisor():
    model = ResNetDecoder(embedding_size=8, image_shape=(24, 40, 3), stage_blocks=(1, 1, 1), stage_channels=(8, 8, 8))
    assert model.output_shape == (None, 24, 40, 3)
    assert model.get_layer("project_reshape").output.shape[1:] == (3, 5, 8)
