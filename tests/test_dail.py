"""DAIL: gradient reversal, dataset classifier, DAILRecognizer, two-stage schedule, recipe."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface.layers import DatasetClassifier, GradientReversal
from kerasface.models import DAILRecognizer
from kerasface.recipe import apply_overrides, load_recipe, smoke_overrides
from kerasface.testing import run_all_checks
from kerasface.training import GradientReversalSchedule

# ---------------------------------------------------------------- gradient reversal


@pytest.mark.parametrize("strength", [0.0, 0.1, 1.0, 2.5])
def test_reversal_is_identity_forward_and_minus_lambda_backward(strength):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(4, 5)).astype(np.float32))
    upstream = rng.normal(size=(4, 5)).astype(np.float32)
    layer = GradientReversal(strength)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * upstream)
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), -strength * upstream, rtol=1e-6, atol=1e-7)


def test_strength_changes_without_retracing_the_function():
    layer = GradientReversal(0.0)
    layer.build((None, 3))
    traces = []

    @tf.function
    def gradient(x):
        traces.append(1)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(layer(x))
        return tape.gradient(y, x)

    x = tf.ones((2, 3))
    np.testing.assert_array_equal(gradient(x).numpy(), np.zeros((2, 3)))
    layer.set_strength(0.1)
    np.testing.assert_allclose(gradient(x).numpy(), np.full((2, 3), -0.1), rtol=1e-6)
    assert len(traces) == 1 and layer.get_strength() == pytest.approx(0.1)
    assert layer.strength == 0.0  # the config value is the initial lambda


def test_strength_set_outside_the_replicas_reaches_every_replica():
    from kerasface.testing.mirrored_check import default_devices, mirrored_strategy

    if len(default_devices()) < 2:
        pytest.skip("needs 2 logical CPUs (tests/conftest.py splits the CPU)")
    strategy = mirrored_strategy()
    with strategy.scope():
        layer = GradientReversal(0.0)
        layer.build((None, 3))

    @tf.function
    def gradients(x):
        def replica_gradient(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = tf.reduce_sum(layer(x))
            return tape.gradient(y, x)

        return strategy.run(replica_gradient, args=(x,))

    layer.set_strength(0.3)  # as the schedule callback does, in cross-replica context
    results = strategy.experimental_local_results(gradients(tf.ones((2, 3))))
    assert len(results) == 2
    for result in results:
        np.testing.assert_allclose(result.numpy(), np.full((2, 3), -0.3), rtol=1e-6)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "x", True])
def test_strength_must_be_a_finite_non_negative_number(bad):
    with pytest.raises(ValueError, match="`strength` \\(lambda\\) must be"):
        GradientReversal(bad)


def test_gradient_reversal_shared_checks(tmp_path):
    # A model around the layer: the training-step checks need trainable weights on both sides.
    def factory():
        return keras.Sequential(
            [keras.Input((6,)), keras.layers.Dense(4, name="before"), GradientReversal(0.5), keras.layers.Dense(3, name="after")]
        )

    x = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)
    run_all_checks(factory, x, tmp_path)


# ---------------------------------------------------------------- dataset classifier


def test_dataset_classifier_matches_a_numpy_mlp():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 8)).astype(np.float32)
    layer = DatasetClassifier(3, hidden_units=(6,))
    out = keras.ops.convert_to_numpy(layer(x))
    w1, b1, w2, b2 = [keras.ops.convert_to_numpy(w) for w in layer.weights]
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    expected = np.maximum(unit @ w1 + b1, 0) @ w2 + b2
    assert out.shape == (5, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    linear = DatasetClassifier(2, hidden_units=(), normalize=False)
    out = keras.ops.convert_to_numpy(linear(x))
    w, b = [keras.ops.convert_to_numpy(v) for v in linear.weights]
    np.testing.assert_allclose(out, x @ w + b, rtol=1e-5, atol=1e-6)


def test_dataset_classifier_validation():
    with pytest.raises(ValueError, match="`num_datasets` must be an int >= 2, got 1"):
        DatasetClassifier(1)
    with pytest.raises(ValueError, match="`hidden_units` must be positive ints, got \\(0,\\)"):
        DatasetClassifier(2, hidden_units=(0,))
    with pytest.raises(ValueError, match="expects \\(batch, embedding_size\\) inputs, got shape \\(None, 4, 4\\)"):
        DatasetClassifier(2).build((None, 4, 4))


def test_dataset_classifier_shared_checks(tmp_path):
    x = np.random.default_rng(3).normal(size=(4, 8)).astype(np.float32)
    run_all_checks(lambda: DatasetClassifier(3, hidden_units=(5,)), x, tmp_path,
                   options={"mixed_precision": {"output_dtype": "float32"}})


# ---------------------------------------------------------------- DAILRecognizer

COUNTS = [3, 2, 4]  # label ranges [0, 3), [3, 5), [5, 9)


def _recognizer(strength=0.0, counts=COUNTS, dataset_aware=True, seed=0):
    from kerasface import heads

    keras.utils.set_random_seed(seed)
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, name="embed")], name="backbone")
    head = heads.get("arcface", num_classes=sum(counts), scale=16.0, margin=0.2)
    if dataset_aware:
        head = heads.get("dataset_aware", head=head, dataset_num_classes=counts)
    model = DAILRecognizer(
        backbone, head, counts,
        dataset_classifier=DatasetClassifier(len(counts), hidden_units=(5,), name="dataset_classifier"),
        gradient_reversal=GradientReversal(strength, name="gradient_reversal"),
    )
    model.build((None, 6))
    return model


def _features(n=12, seed=4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype(np.float32), rng.integers(0, sum(COUNTS), n).astype(np.int32)


def test_dataset_ids_follow_the_label_ranges():
    labels = np.arange(sum(COUNTS))
    expected = np.searchsorted(np.cumsum(COUNTS), labels, side="right")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(_recognizer().dataset_ids(labels)), expected)


@pytest.mark.parametrize("strength", [0.0, 0.1])
def test_embedding_gets_minus_lambda_times_the_dataset_loss_gradient(strength):
    model = _recognizer(strength)
    x, labels = _features()
    datasets = keras.ops.convert_to_numpy(model.dataset_ids(labels))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    kernel = model.backbone.get_layer("embed").kernel
    with tf.GradientTape(persistent=True) as tape:
        out = model((x, labels), training=True)
        through_grl = loss_fn(datasets, out["dataset"])
        direct = loss_fn(datasets, model.dataset_classifier(model.backbone(x)))  # G_d(G_f(x)) with no reversal
    np.testing.assert_allclose(
        tape.gradient(through_grl, kernel).numpy(), -strength * tape.gradient(direct, kernel).numpy(), rtol=1e-5, atol=1e-8
    )
    # G_d itself always descends on L_d at full weight.
    gd_kernel = model.dataset_classifier.weights[0]
    np.testing.assert_allclose(tape.gradient(through_grl, gd_kernel).numpy(), tape.gradient(direct, gd_kernel).numpy(),
                               rtol=1e-5, atol=1e-8)
    assert out["identity"].shape == (12, sum(COUNTS)) and out["dataset"].shape == (12, 3)
    assert out["identity"].dtype == "float32" and out["dataset"].dtype == "float32"


def test_dail_recognizer_shared_checks(tmp_path):
    x, labels = _features(8)
    datasets = np.searchsorted(np.cumsum(COUNTS), labels, side="right")
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    # The check wraps the model in a functional one, so it gets both targets and losses itself.
    mirrored = {"targets": {"identity": labels, "dataset": datasets},
                "loss": {"identity": cross_entropy, "dataset": cross_entropy}}
    run_all_checks(lambda: _recognizer(0.1), [x, labels], tmp_path, options={"mirrored": mirrored})


def test_validation_names_the_mismatch():
    from kerasface import heads

    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8)])
    with pytest.raises(ValueError, match="sums to 5, but the head has num_classes=9"):
        DAILRecognizer(backbone, heads.get("arcface", num_classes=9), [2, 3])
    with pytest.raises(ValueError, match="must list >= 2 positive class counts, got \\[9\\]"):
        DAILRecognizer(backbone, heads.get("arcface", num_classes=9), [9])
    with pytest.raises(ValueError, match="predicts 2 datasets, but `dataset_num_classes` lists 3"):
        DAILRecognizer(backbone, heads.get("arcface", num_classes=9), COUNTS, dataset_classifier=DatasetClassifier(2))


def test_fit_logs_both_losses_and_saves_and_reloads(tmp_path):
    model = _recognizer(0.1)
    model.compile_losses(keras.optimizers.SGD(0.05), dataset_loss_weight=0.5)
    x, labels = _features(16)
    history = model.fit(x, labels, batch_size=8, epochs=1, verbose=0).history
    assert {"identity_loss", "dataset_loss", "identity_accuracy", "dataset_accuracy", "loss"} <= set(history)
    assert history["loss"][0] == pytest.approx(history["identity_loss"][0] + 0.5 * history["dataset_loss"][0], rel=1e-4)
    path = tmp_path / "dail.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, DAILRecognizer) and loaded.dataset_num_classes == COUNTS
    assert loaded.gradient_reversal.get_strength() == pytest.approx(0.1)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    out, again = model((x, labels)), loaded((x, labels))
    np.testing.assert_allclose(again["dataset"], out["dataset"], atol=1e-5)


# ---------------------------------------------------------------- two-stage schedule


class _RecordStrength(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.values = []

    def on_train_batch_end(self, batch, logs=None):
        self.values.append(self.model.gradient_reversal.get_strength())


class _SnapshotBackbone(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.kernels = []

    def on_train_batch_end(self, batch, logs=None):
        self.kernels.append(self.model.backbone.get_weights()[0])


def test_stage_two_starts_at_the_configured_step():
    x, labels = _features(24)
    runs = {}
    for name, callbacks in (("frozen", []), ("switched", [GradientReversalSchedule(strength=0.1, switch_step=3)])):
        model = _recognizer()
        record, snapshots = _RecordStrength(), _SnapshotBackbone()
        model.compile_losses(keras.optimizers.SGD(0.1))
        model.fit(x, labels, batch_size=4, epochs=2, steps_per_epoch=3, verbose=0, shuffle=False,
                  callbacks=[*callbacks, record, snapshots])
        runs[name] = (record.values, snapshots.kernels)
    assert runs["switched"][0] == pytest.approx([0.0] * 3 + [0.1] * 3)
    assert runs["frozen"][0] == [0.0] * 6
    # The embedding follows the lambda = 0 run exactly until step 3, then the reversed L_d moves it.
    difference = [np.abs(a - b).max() for a, b in zip(runs["frozen"][1], runs["switched"][1])]
    assert difference[:3] == [0.0] * 3 and difference[3] > 0.0


def test_schedule_reads_the_step_from_the_optimizer_so_a_resumed_run_is_in_stage_two():
    model = _recognizer()
    model.compile_losses(keras.optimizers.SGD(0.1))
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(7)
    schedule = GradientReversalSchedule(strength=0.25, switch_step=5)
    schedule.set_model(model)
    schedule.on_train_begin()
    schedule.on_train_batch_begin(0)
    assert model.gradient_reversal.get_strength() == pytest.approx(0.25)


def test_ganin_ramp_values():
    schedule = GradientReversalSchedule(strength=0.1, switch_step=10, ramp="ganin", total_steps=110)
    for step in (0, 9, 10, 35, 60, 110, 500):
        p = min(max(step - 10, 0) / 100, 1.0)
        expected = 0.0 if step < 10 else 0.1 * (2 / (1 + math.exp(-10 * p)) - 1)
        assert schedule.value(step) == pytest.approx(expected, abs=1e-12)
    assert schedule.value(10) == 0.0 and 0.099 < schedule.value(110) < 0.1


def test_schedule_validation():
    with pytest.raises(ValueError, match="needs `total_steps` > `switch_step` \\(5\\), got None"):
        GradientReversalSchedule(0.1, switch_step=5, ramp="ganin")
    with pytest.raises(ValueError, match="`ramp` must be one of"):
        GradientReversalSchedule(0.1, ramp="linear")
    with pytest.raises(ValueError, match="has no GradientReversal layer"):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(keras.optimizers.SGD(0.1), "mse")
        model.fit(np.zeros((2, 2)), np.zeros((2, 1)), verbose=0, callbacks=[GradientReversalSchedule(0.1)])


# ---------------------------------------------------------------- data split, recipe, smoke run


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    from kerasface.data.synthetic_faces import write_synthetic_faces

    root = tmp_path_factory.mktemp("faces")
    write_synthetic_faces(root, num_identities=6, images_per_identity=6, seed=0)
    return root


def test_overlapping_split_layout(faces, tmp_path):
    from kerasface.data import split_overlapping

    split = split_overlapping(faces, tmp_path / "split", shared_fraction=1 / 3, seed=0)
    names = sorted(p.name for p in faces.iterdir())
    assert split.only_a == names[:2] and split.shared == names[2:4] and split.only_b == names[4:]
    a, b = split.roots
    assert sorted(p.name for p in a.iterdir()) == names[:4] and sorted(p.name for p in b.iterdir()) == names[2:]
    for identity in split.shared:
        in_a = {p.name for p in (a / identity).iterdir()}
        in_b = {p.name for p in (b / identity).iterdir()}
        assert not in_a & in_b and len(in_a | in_b) == 6 and len(in_a) == 3  # disjoint halves, nothing lost
    assert split.num_images == (18, 18)
    assert json.loads((tmp_path / "split" / "split.json").read_text())["shared"] == split.shared
    with pytest.raises(FileExistsError, match="already exists"):
        split_overlapping(faces, tmp_path / "split")


def test_cli_takes_several_datasets_and_smoke_overrides():
    import argparse

    from kerasface.cli import train_command

    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    args = parser.parse_args(["recipes/dail.py", "--data", "/a", "--data", "/b", "--smoke", "--set", "train.epochs=3"])
    recipe = train_command.recipe_from_args(args)
    assert recipe.data.root == ("/a", "/b") and recipe.data.roots == ("/a", "/b")
    assert recipe.train.epochs == 3 and recipe.train.steps_per_epoch == 3 and recipe.dail.switch_step == 3
    one = train_command.recipe_from_args(parser.parse_args(["--data", "/a"]))
    assert one.data.root == "/a" and one.data.roots == ("/a",)
    assert apply_overrides(one, ["data.root=['/x', '/y']"]).data.root == ("/x", "/y")
    assert smoke_overrides("arcface")[-1] == "eval.sets=()"


def test_paper_defaults_in_the_recipe():
    recipe = load_recipe("dail")
    assert (recipe.model.backbone, recipe.model.embedding_size, recipe.data.batch_size) == ("mobilenet_v1", 128, 512)
    assert (recipe.head.name, recipe.head.scale, recipe.head.margin) == ("arcface", 64.0, 0.5)
    assert recipe.optimizer.lr == 0.005 and recipe.optimizer.decay_epochs == (8, 14, 20)
    assert recipe.dail.gradient_reversal == 0.1 and recipe.dail.crossing_dropout_p == 1e-4
    assert recipe.dail.resolved_switch_step(240_000) == 80_000


def test_single_dataset_with_reversal_is_an_error():
    from kerasface.training import build_face_recognizer

    with pytest.raises(ValueError, match="needs two or more datasets"):
        build_face_recognizer(apply_overrides(load_recipe("dail"), ["model.embedding_size=8"]), num_classes=4)


def test_smoke_run_of_the_recipe_on_two_overlapping_datasets(faces, tmp_path):
    import dataclasses

    from kerasface.data import split_overlapping
    from kerasface.training import train

    split = split_overlapping(faces, tmp_path / "split")
    recipe = apply_overrides(load_recipe("dail"), [
        *smoke_overrides("dail"), "data.batch_size=8", "model.embedding_size=16",
        "model.backbone_kwargs={'width_multiplier': 0.25, 'blocks': ((64, 2), (128, 2))}",
    ])
    recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, root=tuple(map(str, split.roots))))
    logs = []
    result = train(recipe, tmp_path / "run", verbose=0, print_fn=logs.append)
    assert isinstance(result.model, DAILRecognizer)
    assert result.history["grl_lambda"] == pytest.approx([0.0, 0.1])  # switch at step 3 of 2 x 3
    assert any("dataset-aware arcface" in line and "lambda=0.1 from step 3" in line for line in logs)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["datasets"]["num_classes"] == [4, 4] and summary["datasets"]["switch_step"] == 3
    assert {"label_map_0.json", "label_map_1.json"} <= {p.name for p in (tmp_path / "run").iterdir()}
    embedding = keras.saving.load_model(tmp_path / "run" / "embedding.keras")
    assert embedding.output_shape == (None, 16)


def test_training_source_of_several_roots_and_backbone_initialisation(faces, tmp_path):
    from kerasface.data import split_overlapping
    from kerasface.training import build_face_recognizer, open_training_source
    from kerasface.training.train_model import init_backbone

    split = split_overlapping(faces, tmp_path / "split")
    recipe = apply_overrides(load_recipe("dail"), [
        f"data.root={[str(root) for root in split.roots]}", "data.dataset_weights=[3, 1]", "model.embedding_size=8",
        "model.backbone_kwargs={'width_multiplier': 0.25, 'blocks': ((64, 2),)}",
    ])
    source = open_training_source(recipe, tmp_path / "run")
    assert source.dataset_names == ["A", "B"] and source.dataset_num_classes == [4, 4]
    assert source.weights == pytest.approx([0.75, 0.25])
    assert json.loads((tmp_path / "run" / "label_map_1.json").read_text())["id_0005"] == 3
    trained = build_face_recognizer(recipe, 8, [4, 4])
    trained.embedding_model.save(tmp_path / "embedding.keras")
    fresh = build_face_recognizer(recipe, 8, [4, 4])
    init_backbone(fresh, tmp_path / "embedding.keras", print_fn=lambda *_: None)
    for got, want in zip(fresh.backbone.get_weights(), trained.backbone.get_weights()):
        np.testing.assert_array_equal(got, want)
    other = build_face_recognizer(apply_overrides(recipe, ["model.embedding_size=4"]), 8, [4, 4])
    with pytest.raises(ValueError, match="train.init_from=.*embedding.keras: its backbone has"):
        init_backbone(other, tmp_path / "embedding.keras")
    with pytest.raises(ValueError, match="`data.dataset_weights=\\(1, 2\\)` needs two or more datasets"):
        open_training_source(apply_overrides(recipe, [f"data.root={split.roots[0]}", "data.dataset_weights=[1, 2]"]))
