"""Distillation: the feature loss, the Distiller model, cached teacher embeddings, the recipe path."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

from kerasface import heads
from kerasface.data import FacePipeline, FolderSource
from kerasface.losses.embedding_distillation_loss import EmbeddingDistillationLoss, teacher_cosine
from kerasface.models.distiller import Distiller, _teacher_view
from kerasface.testing import run_all_checks
from kerasface.training.teacher_embeddings import precompute_teacher_embeddings


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _backbone(size=6, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((112, 112, 3)), keras.layers.AveragePooling2D(16), keras.layers.Flatten(), keras.layers.Dense(size)],
        name="tiny",
    )


def _images(n=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 112, 112, 3)).astype("uint8")


# ------------------------------------------------------------------ loss


@pytest.mark.parametrize("feature", ["cosine", "l2"])
@pytest.mark.parametrize("similarity_weight", [0.0, 0.5])
def test_distillation_loss_matches_numpy(feature, similarity_weight):
    rng = np.random.default_rng(1)
    teacher, student = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    loss = EmbeddingDistillationLoss(feature, similarity_weight=similarity_weight, reduction=None)
    got = keras.ops.convert_to_numpy(loss(teacher.astype("float32"), student.astype("float32")))
    t, s = _unit(teacher), _unit(student)
    expected = 1 - np.sum(s * t, 1) if feature == "cosine" else np.sum((s - t) ** 2, 1)
    expected = expected + similarity_weight * np.mean((s @ s.T - t @ t.T) ** 2, axis=1)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(teacher_cosine(teacher, student)), np.sum(s * t, 1), atol=1e-6)


def test_distillation_loss_gradient_moves_the_student_towards_the_teacher():
    import tensorflow as tf

    teacher = tf.constant([[1.0, 0.0, 0.0]])
    student = tf.Variable([[0.6, 0.8, 0.0]])
    with tf.GradientTape() as tape:
        value = EmbeddingDistillationLoss("cosine")(teacher, student)
    grad = tape.gradient(value, student).numpy()
    # d(1 - s.t/|s|)/ds = -(t - (s.t) s/|s|^2)/|s| at |s| = 1
    np.testing.assert_allclose(grad, -(np.array([[1.0, 0, 0]]) - 0.6 * np.array([[0.6, 0.8, 0]])), atol=1e-6)


def test_distillation_loss_rejects_bad_arguments():
    with pytest.raises(ValueError, match="`feature` must be one of"):
        EmbeddingDistillationLoss("kl")
    with pytest.raises(ValueError, match="`similarity_weight` must be >= 0, got -1"):
        EmbeddingDistillationLoss(similarity_weight=-1)
    loss = EmbeddingDistillationLoss("l2", similarity_weight=0.25)
    assert EmbeddingDistillationLoss.from_config(loss.get_config()).get_config() == loss.get_config()


# ------------------------------------------------------------------ Distiller


def test_teacher_view_picks_the_mirror_embedding_of_mirrored_faces():
    given = np.arange(3 * 2 * 2, dtype="float32").reshape(3, 2, 2)
    mirrored = np.array([True, False, True])
    got = keras.ops.convert_to_numpy(_teacher_view(given, mirrored))
    np.testing.assert_array_equal(got, np.where(mirrored[:, None], given[:, 1], given[:, 0]))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(_teacher_view(given, None)), given[:, 0])
    with pytest.raises(ValueError, match="mirror view, or flip=0"):
        _teacher_view(given[:, 0], mirrored)
    with pytest.raises(ValueError, match=r"must be \(B, D\) or \(B, 2, D\)"):
        _teacher_view(np.zeros((3, 3, 2), "float32"), None)


def test_feature_loss_of_a_step_equals_numpy_with_a_projection():
    model = Distiller(_backbone(6), teacher_size=4, flip=0.0)
    model.build((None, 112, 112, 3))
    assert model.projection is not None and tuple(model.projection.kernel.shape) == (6, 4)
    model.compile_losses(keras.optimizers.SGD(0.0), feature_loss="cosine", feature_weight=3.0)
    images = _images()
    teacher = np.random.default_rng(2).normal(size=(8, 4)).astype("float32")
    logs = model.evaluate({"images": images, "teacher": teacher}, batch_size=8, verbose=0, return_dict=True)
    features = keras.ops.convert_to_numpy(model({"images": images})["feature"])
    cos = np.sum(_unit(features) * _unit(teacher), 1)
    assert logs["loss"] == pytest.approx(3.0 * np.mean(1 - cos), rel=1e-4)
    assert logs["teacher_cosine"] == pytest.approx(np.mean(cos), rel=1e-4, abs=1e-6)
    # Inference is the student alone: D = 6, unit length, no projection.
    embeddings = model.predict(images, verbose=0)
    assert embeddings.shape == (8, 6)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)
    assert model.embedding_model.output_shape == (None, 6)


def test_fit_copies_a_keras_teacher_which_stays_frozen_and_unsaved(tmp_path):
    teacher = _backbone(5, seed=3)
    frozen = [w.copy() for w in teacher.get_weights()]
    model = Distiller(_backbone(5, seed=4), flip=0.5, seed=1)
    model.build((None, 112, 112, 3))
    model.teacher = teacher
    model.compile_losses(keras.optimizers.Adam(0.05), feature_loss="l2")
    images = _images(16)
    history = model.fit(images, batch_size=8, epochs=12, verbose=0).history
    assert history["teacher_cosine"][-1] > history["teacher_cosine"][0] + 0.1
    assert history["teacher_cosine"][-1] > 0.8
    for before, after in zip(frozen, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    path = tmp_path / "student.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, Distiller) and loaded.teacher is None and loaded.head is None
    assert len(loaded.weights) == len(model.weights)  # the teacher's weights are not in the file
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)


def test_numpy_teacher_with_a_margin_head_logs_both_losses():
    calls = []

    def peer(batch):
        calls.append(batch.shape)
        assert batch.dtype == np.float32 and np.abs(batch).max() <= 1.0  # normalised pixels
        return np.tile(np.eye(3, dtype="float32")[:1], (len(batch), 1))

    model = Distiller(_backbone(6), heads.get("arcface", num_classes=4, scale=16.0, margin=0.2), teacher_size=3)
    model.build((None, 112, 112, 3))
    model.teacher = peer
    model.compile_losses(keras.optimizers.SGD(0.01), margin_weight=0.5)
    images, labels = _images(8), np.arange(8) % 4
    history = model.fit(images, labels, batch_size=4, epochs=1, verbose=0).history
    assert {"feature_loss", "identity_loss", "identity_accuracy", "feature_teacher_cosine"} <= set(history)
    assert history["loss"][0] == pytest.approx(history["feature_loss"][0] + 0.5 * history["identity_loss"][0], rel=1e-3)
    assert calls and calls[0] == (4, 112, 112, 3)


def test_distiller_errors_name_what_is_missing():
    with pytest.raises(ValueError, match="`teacher_size` must be a positive int or None, got 0"):
        Distiller(_backbone(), teacher_size=0)
    with pytest.raises(ValueError, match=r"`flip` must be in \[0, 1\], got 2"):
        Distiller(_backbone(), flip=2)
    model = Distiller(_backbone(4), flip=0.0)
    model.build((None, 112, 112, 3))
    with pytest.raises(TypeError, match="a teacher must be a Keras model or a callable"):
        model.teacher = "sface.onnx"
    model.compile_losses(keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="no teacher embeddings"):
        model.fit(_images(4), batch_size=4, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="gives 3-d embeddings, the student \\(no `teacher_size`\\) gives 4"):
        model.fit({"images": _images(4), "teacher": np.zeros((4, 3), "float32")}, batch_size=4, verbose=0)
    with pytest.raises(ValueError, match="`margin_weight` must be >= 0"):
        model.compile_losses(keras.optimizers.SGD(0.1), margin_weight=-1)
    headed = Distiller(_backbone(4), heads.get("arcface", num_classes=3), flip=0.0)
    headed.build((None, 112, 112, 3))
    headed.compile_losses(keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="needs \\(images, labels\\) batches"):
        headed.fit({"images": _images(4), "teacher": np.zeros((4, 4), "float32")}, batch_size=4, verbose=0)


def test_distiller_shared_checks(tmp_path):
    images = _images(4).astype("float32") / 128 - 1
    labels = np.arange(4) % 3
    teacher = np.random.default_rng(5).normal(size=(4, 5)).astype("float32")
    targets = {"feature": teacher, "identity": labels}
    losses = {"feature": EmbeddingDistillationLoss(), "identity": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}

    def factory():
        # s = 8 keeps float16's relative error on the logits inside the check's tolerance.
        return Distiller(_backbone(6), heads.get("arcface", num_classes=3, scale=8.0), teacher_size=5, flip=0.0)

    run_all_checks(factory, {"images": images, "labels": labels}, tmp_path,
                   options={"mirrored": {"targets": targets, "loss": losses}, "xla": {"atol": 1e-4, "rtol": 1e-4}})


# ------------------------------------------------------------------ cached teacher embeddings


def _folder(tmp_path, bad=True):
    root = tmp_path / "faces"
    rng = np.random.default_rng(0)
    for identity in range(3):
        (root / f"id{identity}").mkdir(parents=True)
        for k in range(3):
            Image.fromarray(rng.integers(0, 256, (112, 112, 3)).astype("uint8")).save(root / f"id{identity}" / f"{k}.jpg")
    if bad:
        (root / "id1" / "broken.jpg").write_bytes(b"not a jpeg")
    return FolderSource(root)


class _CountingTeacher(keras.Model):
    def __init__(self):
        super().__init__(name="counting_teacher")
        self.body = _backbone(4, seed=7)
        self.seen = 0

    def call(self, images, training=None):
        self.seen += int(images.shape[0])
        return keras.ops.normalize(self.body(images), axis=-1)


def test_precomputed_embeddings_cover_every_record_with_its_mirror(tmp_path):
    source = _folder(tmp_path)
    teacher = _CountingTeacher()
    messages = []
    result = precompute_teacher_embeddings(teacher, source, tmp_path / "cache", batch_size=4, print_fn=messages.append)
    assert result.embeddings.shape == (source.num_records, 2, 4) and not result.from_cache
    broken = [i for i in range(source.num_records) if "broken" in source.describe(i)]
    assert len(result.bad_records) == 1 and "broken.jpg" in next(iter(result.bad_records))
    np.testing.assert_array_equal(result.embeddings[broken[0]], 0)
    assert any("1 unreadable record(s) skipped" in m for m in messages)
    good = [i for i in range(source.num_records) if i not in broken]
    for index in good[:3]:
        pixels = np.asarray(Image.open(source.file_paths[index]).convert("RGB"), "float32")
        normalised = ((pixels - 127.5) / 128)[None]
        direct = keras.ops.convert_to_numpy(teacher.body(normalised))
        mirrored = keras.ops.convert_to_numpy(teacher.body(normalised[:, :, ::-1]))
        np.testing.assert_allclose(result.embeddings[index, 0], _unit(direct)[0], atol=2e-5)
        np.testing.assert_allclose(result.embeddings[index, 1], _unit(mirrored)[0], atol=2e-5)
    again = precompute_teacher_embeddings(teacher, source, tmp_path / "cache", batch_size=4, print_fn=messages.append)
    assert again.from_cache and again.path == result.path
    np.testing.assert_array_equal(again.embeddings, result.embeddings)
    assert json.loads(result.path.with_suffix(".json").read_text())["records"] == source.num_records


def test_precompute_resumes_an_interrupted_run(tmp_path):
    source = _folder(tmp_path, bad=False)
    full = precompute_teacher_embeddings(_CountingTeacher(), source, tmp_path / "a", mirror=False, batch_size=3,
                                         print_fn=lambda m: None)
    # An interrupted run: the partial file holds the first 4 records, the done mask says so.
    cache = tmp_path / "b"
    cache.mkdir()
    stem = full.path.stem
    partial = np.lib.format.open_memmap(cache / f"{stem}.partial.npy", mode="w+", dtype="float32",
                                        shape=full.embeddings.shape)
    partial[:4] = full.embeddings[:4]
    partial.flush()
    del partial
    np.save(cache / f"{stem}.done.npy", np.arange(source.num_records) < 4)
    teacher = _CountingTeacher()
    resumed = precompute_teacher_embeddings(teacher, source, cache, mirror=False, batch_size=3, print_fn=lambda m: None)
    assert teacher.seen == source.num_records - 4  # only the records not done yet
    np.testing.assert_allclose(resumed.embeddings, full.embeddings, atol=1e-6)
    assert not (cache / f"{stem}.done.npy").exists()


def test_pipeline_record_features_follow_the_records(tmp_path):
    source = _folder(tmp_path, bad=False)
    ids = np.arange(source.num_records)
    pipeline = FacePipeline(source, batch_size=4, augmentation=None, seed=3,
                            record_features={"record": ids, "double": 2 * ids.astype("float32")})
    inputs, labels = next(iter(pipeline.dataset))
    records = inputs["record"].numpy()
    np.testing.assert_array_equal(labels.numpy(), source.labels[records])
    np.testing.assert_array_equal(inputs["double"].numpy(), 2 * records)
    with pytest.raises(ValueError, match=r"one row per record \(9\), got shape \(3,\)"):
        FacePipeline(source, batch_size=4, record_features={"teacher": np.zeros(3)})
    with pytest.raises(ValueError, match="'images' is taken"):
        FacePipeline(source, batch_size=4, record_features={"images": ids})


# ------------------------------------------------------------------ recipe


def test_distill_recipe_trains_from_a_kerasface_teacher(tmp_path):
    from kerasface.recipe import apply_overrides, load_recipe, smoke_overrides
    from kerasface.training import train

    teacher_dir = tmp_path / "teacher.keras"
    keras.Sequential([keras.Input((112, 112, 3)), keras.layers.AveragePooling2D(28), keras.layers.Flatten(),
                      keras.layers.Dense(12), keras.layers.UnitNormalization()]).save(teacher_dir)
    recipe = apply_overrides(load_recipe("distill"), [
        *smoke_overrides("distill"), f"distill.teacher={str(teacher_dir)!r}", "distill.teacher_kwargs={}",
        "model.embedding_size=16",
    ])
    result = train(recipe, tmp_path / "run", verbose=0, print_fn=lambda m: None)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["distill"]["teacher_size"] == 12 and summary["distill"]["projection"]
    assert isinstance(result.model, Distiller) and result.model.head is None
    assert "teacher_cosine" in result.history
    assert list((tmp_path / "run" / "teacher_embeddings").glob("teacher_*-mirror.npy"))
