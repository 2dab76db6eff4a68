"""ShardedHead: class centres split over replicas give the unsharded loss, gradients and training."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface import heads
from kerasface.models import FaceRecognizer
from kerasface.testing.mirrored_check import mirrored_strategy

C, D, B = 13, 8, 8  # 13 classes: the last shard is padded for 2 and 4 replicas


def _devices():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < 2:
        pytest.skip("needs 2+ logical CPUs (tests/conftest.py splits the CPU)")
    return devices


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(B, D)).astype(np.float32)
    labels = np.array([0, 12, 5, 5, 7, 3, 11, 6], np.int32)
    centres = rng.normal(size=(C, D)).astype(np.float32)
    return embeddings, labels, centres


def _dense_loss_and_gradients(name, embeddings, labels, centres):
    head = heads.get(name, num_classes=C)
    head.build([(B, D), (B,)])
    head.kernel.assign(centres.T)
    x = tf.constant(embeddings)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = head([x, labels], training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    kernel_gradient, x_gradient = tape.gradient(loss, [head.kernel, x])
    return float(loss), kernel_gradient.numpy().T, x_gradient.numpy()


def _sharded_loss_and_gradients(name, embeddings, labels, centres, devices):
    strategy = mirrored_strategy(devices)
    replicas = len(devices)
    with strategy.scope():
        head = heads.ShardedHead(name, num_classes=C)
        head.build([(B // replicas, D), (B // replicas,)])
    head.set_centres(centres)
    per_replica = B // replicas

    def part(values):
        return strategy.experimental_distribute_values_from_function(
            lambda context: values[context.replica_id_in_sync_group * per_replica:][:per_replica]
        )

    @tf.function
    def step(x, y):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                tape.watch([x] + head.shard_variables())
                pair = head([x, y], training=True)
                losses = keras.losses.sparse_categorical_crossentropy(tf.zeros_like(y), pair, from_logits=True)
                loss = tf.reduce_sum(losses) / B
            shard_gradient, x_gradient = tape.gradient(loss, head.shard_variables() + [x])
            return loss, tf.convert_to_tensor(shard_gradient), x_gradient

        return strategy.run(replica_step, args=(x, y))

    loss, shard_gradients, x_gradients = step(part(tf.constant(embeddings)), part(tf.constant(labels)))
    local = strategy.experimental_local_results
    return (
        float(sum(v.numpy() for v in local(loss))),
        np.concatenate([g.numpy() for g in local(shard_gradients)])[:C],
        np.concatenate([g.numpy() for g in local(x_gradients)]),
        head,
    )


@pytest.mark.parametrize("name", ["arcface", "cosface", "mv_softmax", "li_arcface"])
def test_sharded_loss_and_gradients_equal_the_unsharded_head(name):
    devices = _devices()
    embeddings, labels, centres = _problem()
    loss, kernel_gradient, x_gradient = _dense_loss_and_gradients(name, embeddings, labels, centres)
    sharded_loss, shard_gradient, sharded_x_gradient, head = _sharded_loss_and_gradients(
        name, embeddings, labels, centres, devices
    )
    assert head.num_shards == len(devices) and head.shard_size == -(-C // len(devices))
    np.testing.assert_allclose(sharded_loss, loss, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(shard_gradient, kernel_gradient, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sharded_x_gradient, x_gradient, rtol=1e-5, atol=1e-5)
    # Each replica holds only its rows; the full matrix comes back in class order.
    assert all(c.shape == (head.shard_size, D) for c in head.kernel.value.values)
    np.testing.assert_array_equal(head.centres(), centres)


# A second TensorFlow process, ~20 s: run with -m slow (2 replicas run in the default suite).
@pytest.mark.slow
def test_four_replicas_in_a_subprocess():
    # The suite's process has 2 logical CPUs; 4 need a process of their own.
    env = {**os.environ, "KERASFACE_TEST_CPUS": "4", "TF_CPP_MIN_LOG_LEVEL": "3"}
    finished = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"{__file__}::test_sharded_loss_and_gradients_equal_the_unsharded_head"],
        env=env, capture_output=True, text=True, timeout=600, cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert finished.returncode == 0, finished.stdout[-3000:]
    assert "4 passed" in finished.stdout


def _backbone():
    return keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(D, name="embed")])


def test_training_on_two_replicas_equals_one_device(tmp_path):
    devices = _devices()[:2]
    rng = np.random.default_rng(3)
    images = rng.normal(size=(B, 4, 4, 3)).astype(np.float32)
    _, labels, centres = _problem()
    backbone = _backbone()
    start = [w.numpy() for w in backbone.weights]

    def optimizer():
        return keras.optimizers.SGD(learning_rate=0.5, momentum=0.9, weight_decay=1e-2)

    def fit(model):
        model.compile(optimizer=optimizer(), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        dataset = tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(B)
        model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)

    dense = FaceRecognizer(_backbone(), heads.get("arcface", num_classes=C))
    dense.build((None, 4, 4, 3))
    dense.backbone.set_weights(start)
    dense.head.kernel.assign(centres.T)
    fit(dense)

    strategy = mirrored_strategy(devices)
    with strategy.scope():
        sharded = FaceRecognizer(_backbone(), heads.ShardedHead("arcface", num_classes=C))
        sharded.build((None, 4, 4, 3))
        sharded.backbone.set_weights(start)
        sharded.head.set_centres(centres)
        fit(sharded)
    np.testing.assert_allclose(sharded.head.centres(), dense.head.kernel.numpy().T, rtol=1e-5, atol=1e-5)
    for a, b in zip(sharded.backbone.weights, dense.backbone.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)

    # Saved with the full matrix; loads on one device (one shard) and on two.
    sharded.save(tmp_path / "sharded.keras")
    single = keras.saving.load_model(tmp_path / "sharded.keras")
    assert single.head.num_shards == 1
    np.testing.assert_allclose(single.head.centres(), sharded.head.centres())
    with strategy.scope():
        again = keras.saving.load_model(tmp_path / "sharded.keras")
    assert again.head.num_shards == 2
    np.testing.assert_allclose(again.head.centres(), sharded.head.centres())
    # Inference logits against all centres equal the dense head's.
    x = dense.backbone(images)
    np.testing.assert_allclose(single.head(x).numpy(), dense.head(x).numpy(), rtol=1e-5, atol=1e-4)


def test_sampled_shards_update_only_their_rows():
    devices = _devices()[:2]
    strategy = mirrored_strategy(devices)
    embeddings, labels, centres = _problem()
    classes = 40
    centres = np.random.default_rng(5).normal(size=(classes, D)).astype(np.float32)
    with strategy.scope():
        head = heads.ShardedHead("arcface", num_classes=classes, sample_rate=0.25)
        head.build([(B // 2, D), (B // 2,)])
    head.set_centres(centres)

    @tf.function
    def step(x, y):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                tape.watch(head.shard_variables())
                pair = head([x, y], training=True)
                loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(tf.zeros_like(y), pair, from_logits=True))
            (gradient,) = tape.gradient(loss, head.shard_variables())
            head.apply_shard_gradient(gradient, 0.1, momentum=0.9, weight_decay=0.01)  # decay moves every sampled row
            return tf.shape(gradient.values)[0]

        return strategy.run(replica_step, args=(x, y))

    split = lambda v: strategy.experimental_distribute_values_from_function(  # noqa: E731
        lambda c: v[c.replica_id_in_sync_group * 4:][:4])
    rows = step(split(tf.constant(embeddings)), split(tf.constant(labels)))
    # 20 rows per shard, ceil(0.25 * 20) = 5 sampled, but never fewer than the 8 gathered labels.
    assert [int(r) for r in strategy.experimental_local_results(rows)] == [8, 8]
    changed = np.any(head.centres() != centres, axis=1)
    assert changed.sum() == 16 and all(changed[labels])


def test_refuses_heads_with_all_class_statistics():
    for name in ("adacos", "curricularface", "npcface", "magface", "subcenter_arcface", "softmax"):
        with pytest.raises(ValueError, match="cannot be sampled or sharded"):
            heads.ShardedHead(name, num_classes=C)
    with pytest.raises(ValueError, match="sample_rate"):
        heads.ShardedHead("arcface", num_classes=C, sample_rate=0.0)


# Two training runs under MirroredStrategy, ~45 s: run with -m slow.
@pytest.mark.slow
def test_recipe_trains_sharded_over_two_replicas_and_resumes(tmp_path):
    from kerasface.data.synthetic_faces import write_synthetic_faces
    from kerasface.recipe import Recipe, apply_overrides
    from kerasface.training import train

    _devices()
    faces = tmp_path / "faces"
    write_synthetic_faces(faces, num_identities=9, images_per_identity=4, seed=0)
    tiny = "{'width_multiplier': 0.25, 'neck_channels': 32, 'stages': ((2, 64, 1, 2), (2, 128, 1, 2))}"
    recipe = apply_overrides(Recipe(), [
        f"data.root={faces}", "data.batch_size=4", "train.epochs=1", "model.embedding_size=16",
        f"model.backbone_kwargs={tiny}", "head.sharded=True", "train.strategy=mirrored", "train.steps_per_epoch=3",
    ])
    result = train(recipe, tmp_path / "run", verbose=0, print_fn=lambda *_: None)
    head = result.model.head
    assert isinstance(head, heads.ShardedHead) and head.num_shards == 2 and head.shard_size == 5
    assert np.isfinite(result.history["loss"]).all()
    # The backup holds the full centre matrix; a longer run resumes from it.
    trained = head.centres()
    np.testing.assert_array_equal(keras.saving.load_model(tmp_path / "run" / "model.keras").head.centres(), trained)
    restored = keras.saving.load_model(tmp_path / "run" / "model.keras")
    restored.load_weights(tmp_path / "run" / "backup" / "latest.weights.h5")
    np.testing.assert_array_equal(restored.head.centres(), trained)
    again = train(apply_overrides(recipe, ["train.epochs=2"]), tmp_path / "run", verbose=0, print_fn=lambda *_: None)
    assert again.initial_epoch == 1
    assert again.model.optimizer.iterations.numpy() == 6
    assert not np.array_equal(again.model.head.centres(), trained)
