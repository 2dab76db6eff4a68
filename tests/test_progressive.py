"""Progressive schedules, per-layer weight decay, PK shorthand, budgets, class-balanced loss, warm starts."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasface import backbones, heads
from kerasface.data import get_sampler
from kerasface.models import FaceRecognizer
from kerasface.recipe import Recipe, apply_overrides, load_recipe, load_schedule
from kerasface.training.multiplied_decay_sgd import MultipliedDecaySGD
from kerasface.training.progressive_schedule import ProgressiveSchedule, ProgressiveStage

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ ProgressiveSchedule


def test_stages_wrap_their_overrides_and_scale_their_epochs():
    schedule = ProgressiveSchedule([
        ("a", ["head.name=arcface"]),
        ProgressiveStage("b", ["head.name=cosface", "optimizer.lr=0.01"], epochs_scale=0.5),
        ProgressiveStage("c", ["train.seed=3"]),
    ])
    assert schedule.stage_overrides(2) == ["head.name=arcface", "head.name=cosface", "optimizer.lr=0.01", "train.seed=3"]
    finalize_seen = []

    def finalize(recipe):
        finalize_seen.append(recipe.name)
        return apply_overrides(recipe, ["train.epochs=9", "optimizer.momentum=0.5"])

    staged = schedule.stage_recipes(Recipe(name="base"), finalize)
    assert [recipe.name for _, recipe in staged] == ["base_a", "base_b", "base_c"] == finalize_seen
    assert [recipe.head.name for _, recipe in staged] == ["arcface", "cosface", "cosface"]
    assert [recipe.train.epochs for _, recipe in staged] == [9, 4, 9]  # round(0.5 * 9) = 4 (banker's)
    assert [recipe.optimizer.lr for _, recipe in staged] == [0.1, 0.01, 0.01]
    assert all(recipe.optimizer.momentum == 0.5 for _, recipe in staged)  # the command line wins
    own = ProgressiveSchedule(schedule.stages, cumulative=False)
    assert own.stage_overrides(2) == ["train.seed=3"]


def test_schedule_validation():
    with pytest.raises(ValueError, match="at least one stage"):
        ProgressiveSchedule([])
    with pytest.raises(ValueError, match="must be unique"):
        ProgressiveSchedule([("a", []), ("a", [])])
    with pytest.raises(ValueError, match="stage name must be"):
        ProgressiveStage("a/b")
    with pytest.raises(ValueError, match="`epochs_scale` must be > 0"):
        ProgressiveStage("a", (), 0)
    with pytest.raises(ValueError, match="`warm_start` must be"):
        ProgressiveSchedule([("a", [])], warm_start="first")
    assert ProgressiveStage("a", "train.seed=1").overrides == ("train.seed=1",)


def test_run_warm_starts_each_stage_and_resumes(tmp_path):
    calls = []

    def fake_train(recipe, out_dir, verbose=1, print_fn=print):
        calls.append((recipe.name, recipe.train.init_from, recipe.train.init_head))
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "model.keras").write_text("weights")
        if recipe.name.endswith("a"):
            (out_dir / "best.keras").write_text("best weights")
        (out_dir / "summary.json").write_text(json.dumps({"epochs": recipe.train.epochs, "history": {"loss": [2.0, 1.0]}}))

    schedule = ProgressiveSchedule([("a", []), ("b", ["train.seed=1"]), ("c", [])])
    records = schedule.run(Recipe(name="r"), tmp_path, train_fn=fake_train, print_fn=lambda m: None)
    assert calls == [
        ("r_a", None, False),
        ("r_b", str(tmp_path / "0_a" / "best.keras"), True),  # the best model when there is one
        ("r_c", str(tmp_path / "1_b" / "model.keras"), True),
    ]
    assert [r["final_history"]["loss"] for r in records] == [1.0, 1.0, 1.0]
    saved = json.loads((tmp_path / "progressive.json").read_text())
    assert [stage["stage"] for stage in saved["stages"]] == ["a", "b", "c"]
    # Rerun after stage c was lost: a and b are not trained again.
    (tmp_path / "2_c" / "summary.json").unlink()
    calls.clear()
    schedule.run(Recipe(name="r"), tmp_path, train_fn=fake_train, print_fn=lambda m: None)
    assert [name for name, _, _ in calls] == ["r_c"]


def test_recipe_files_define_their_schedules():
    progressive = load_schedule(REPO / "recipes" / "progressive.py")
    assert [stage.name for stage in progressive.stages] == [
        "arcface", "combined", "svgs", "intra_inter", "class_balanced", "pk", "long_tail"]
    staged = dict((stage.name, recipe) for stage, recipe in progressive.stage_recipes(load_recipe("progressive")))
    assert staged["svgs"].head.name == "lfrc" and staged["svgs"].head.kwargs["t"] == 1.2
    assert staged["pk"].train.loss == "class_balanced" and staged["pk"].data.sampler == "pk:4"
    assert staged["long_tail"].data.min_images_per_class == 10
    assert staged["arcface"].train.epochs == 21 and staged["combined"].train.epochs == 7
    airface = load_schedule(REPO / "recipes" / "airface.py")
    staged = [recipe for _, recipe in airface.stage_recipes(load_recipe("airface"))]
    assert [r.head.name for r in staged] == ["li_arcface", "arcface", "combined"]
    assert [r.train.epochs for r in staged] == [30, 6, 6] and staged[1].optimizer.lr == 0.01
    assert staged[0].optimizer.weight_decay_multipliers == {"neck_linear": 10.0}
    assert load_schedule(REPO / "recipes" / "arcface.py") is None


# ------------------------------------------------------------------ weight decay multipliers


def test_multiplied_decay_scales_each_matching_variable():
    a = keras.Variable(np.full((2,), 2.0, "float32"), name="a")
    b = keras.Variable(np.full((2,), 2.0, "float32"), name="neck_linear_kernel")
    c = keras.Variable(np.full((2,), 2.0, "float32"), name="bn_gamma")
    optimizer = MultipliedDecaySGD(
        learning_rate=0.1, weight_decay=0.01, weight_decay_multipliers={"neck_linear": 10.0, "bn_": 0.0}
    )
    zeros = [np.zeros(2, "float32")] * 3
    optimizer.apply(zeros, [a, b, c])
    np.testing.assert_allclose(a.numpy(), 2.0 * (1 - 0.1 * 0.01))
    np.testing.assert_allclose(b.numpy(), 2.0 * (1 - 0.1 * 0.01 * 10))
    np.testing.assert_allclose(c.numpy(), 2.0)
    assert optimizer.weight_decay == 0.01  # restored after the per-group passes
    config = optimizer.get_config()
    assert MultipliedDecaySGD.from_config(config).weight_decay_multipliers == {"neck_linear": 10.0, "bn_": 0.0}


def test_multiplied_decay_matches_keras_paths_of_a_backbone():
    model = backbones.get("mobilefacenet", embedding_size=8, width_multiplier=0.25)
    optimizer = MultipliedDecaySGD(learning_rate=0.1, weight_decay=5e-4, weight_decay_multipliers={"neck_linear": 10.0})
    scaled = [v.path for v in model.trainable_weights if optimizer.weight_decay_multiplier(v) == 10.0]
    assert scaled == ["neck_linear/kernel"]


def test_multiplied_decay_validation():
    with pytest.raises(ValueError, match="bad pattern"):
        MultipliedDecaySGD(weight_decay=1e-4, weight_decay_multipliers={"(": 2.0})
    with pytest.raises(ValueError, match=r"must be a number >= 0, got -1"):
        MultipliedDecaySGD(weight_decay=1e-4, weight_decay_multipliers={"a": -1})
    with pytest.raises(ValueError, match="need a `weight_decay` > 0"):
        MultipliedDecaySGD(weight_decay_multipliers={"a": 2.0})


# ------------------------------------------------------------------ PK shorthand, budget, loss, warm start


def test_pk_shorthand_takes_p_from_the_batch_size():
    sampler = get_sampler("pk:4")
    assert sampler.identities_per_batch is None and sampler.images_per_identity == 4
    labels = np.repeat(np.arange(6), 5)

    class _Source:
        num_records = len(labels)
        num_classes = 6

        def __init__(self):
            self.labels = labels

        def class_counts(self):
            return np.bincount(labels)

    source = _Source()
    sampler.check(source, 8)
    assert sampler.steps_per_epoch(source, 8, True) == 3  # 6 identities, P = 2 per batch
    import tensorflow as tf

    batches = list(sampler.epoch_batches(source, 8, tf.constant([1, 2], tf.int64), True))
    for batch in batches:
        ids = labels[batch.numpy()]
        assert len(ids) == 8 and all(np.sum(ids == i) == 4 for i in np.unique(ids)) and len(np.unique(ids)) == 2
    with pytest.raises(ValueError, match="needs batch_size 8, got 10|cannot be split"):
        sampler.check(source, 10)


def test_budget_check_stops_a_recipe_over_budget():
    from kerasface.training.train_model import build_face_recognizer

    recipe = apply_overrides(Recipe(), [
        "model.backbone=mobilenet_v1", "model.backbone_kwargs={'width_multiplier': 0.25}", "model.embedding_size=8",
        "model.budget={'max_macs': '1M'}",
    ])
    with pytest.raises(ValueError, match=r"over its budget .*MACs .* > limit 1"):
        build_face_recognizer(recipe, num_classes=3)
    fits = apply_overrides(recipe, ["model.budget={'max_macs': '500M', 'max_size_mb': 20}"])
    assert isinstance(build_face_recognizer(fits, num_classes=3), FaceRecognizer)


@pytest.mark.slow
def test_lfrc_budget_refuses_se_reduction_16_and_takes_32():
    from kerasface.training.train_model import check_budget

    recipe = load_recipe("progressive")
    report = check_budget(backbones.get("lfrc_se_mobilefacenet", embedding_size=282, attention_reduction=32), recipe)
    assert report.macs <= 500e6 and report.within_budget
    with pytest.raises(ValueError, match=r"fp32 size 21\.\d+ MB > limit 20\.97 MB"):
        check_budget(backbones.get("lfrc_se_mobilefacenet", embedding_size=282), recipe)


def test_class_balanced_loss_and_long_tail_come_from_the_recipe():
    from kerasface.losses import ClassBalancedCrossentropy
    from kerasface.training.train_model import _identity_loss

    class _Source:
        def class_counts(self):
            return np.array([1, 10, 100])

    loss = _identity_loss(apply_overrides(Recipe(), ["train.loss=class_balanced", "train.loss_kwargs={'beta': 0.9}"]),
                          _Source())
    assert isinstance(loss, ClassBalancedCrossentropy) and loss.beta == 0.9
    np.testing.assert_array_equal(loss.class_counts, [1, 10, 100])
    with pytest.raises(ValueError, match="given for the plain cross-entropy"):
        _identity_loss(apply_overrides(Recipe(), ["train.loss_kwargs={'beta': 0.9}"]), _Source())


def test_unknown_training_loss_is_refused(tmp_path):
    from kerasface.training import train

    with pytest.raises(ValueError, match="`train.loss` must be one of"):
        train(apply_overrides(Recipe(), ["train.loss=focal"]), tmp_path)


def test_init_head_copies_class_centres_when_shapes_match(tmp_path):
    from kerasface.training.train_model import init_backbone

    def model(classes, seed):
        keras.utils.set_random_seed(seed)
        built = FaceRecognizer(backbones.get("mobilenet_v1", embedding_size=8, width_multiplier=0.25),
                               heads.get("arcface", num_classes=classes))
        built.build((None, 112, 112, 3))
        return built

    trained = model(5, 0)
    trained.save(tmp_path / "trained.keras")
    fresh = model(5, 1)
    messages = []
    init_backbone(fresh, tmp_path / "trained.keras", messages.append, head=True)
    np.testing.assert_array_equal(fresh.head.kernel.numpy(), trained.head.kernel.numpy())
    other = model(4, 2)
    before = other.head.kernel.numpy()
    init_backbone(other, tmp_path / "trained.keras", messages.append, head=True)
    np.testing.assert_array_equal(other.head.kernel.numpy(), before)
    assert any("head not initialised" in m and ("(8, 5)" in m or "(5, 8)" in m) for m in messages)
