import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface import backbones, heads
from kerasface.models import FaceRecognizer, load_embedding_model
from kerasface.testing import run_all_checks
from kerasface.testing.backbone_cases import small_config

# Three shallow stages (one with a residual add) on 32x32 inputs: the same layer types as the
# paper network at a fraction of the tracing and compile time of the shared checks.
SMALL = small_config("mobilefacenet")


def _model(num_classes=6):
    return FaceRecognizer(backbones.get("mobilefacenet", **SMALL), heads.get("arcface", num_classes=num_classes))


def _data(n=16, num_classes=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 32, 32, 3)).astype(np.float32), rng.integers(0, num_classes, n).astype(np.int32)


def test_call_paths():
    model = _model()
    images, labels = _data(4)
    embeddings = model(images).numpy()
    assert embeddings.shape == (4, 16)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    logits = model((images, labels))
    assert logits.shape == (4, 6) and logits.dtype == "float32"
    np.testing.assert_allclose(model.embedding_model(images).numpy(), embeddings, atol=1e-5)


def test_uint8_images_are_normalised_like_the_pipeline():
    model = _model()
    pixels = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    _, labels = _data(4)
    reference = (pixels.astype(np.float32) - 127.5) / 128.0  # kerasface's pixel convention
    np.testing.assert_allclose(model(pixels).numpy(), model(reference).numpy(), atol=1e-6)
    np.testing.assert_allclose(
        model((pixels, labels)).numpy(), model((reference, labels)).numpy(), atol=1e-5
    )


def test_fit_uses_labels_in_the_head_and_learns():
    model = _model()
    images, labels = _data(16)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    before = model.evaluate(data, verbose=0)
    # The evaluated loss must be the margin loss: recompute it by hand from (images, labels).
    by_hand = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, model((images, labels), training=False))
    assert before == pytest.approx(float(by_hand), rel=1e-4)
    history = model.fit(data, epochs=15, verbose=0).history["loss"]
    # Training-mode loss (batch statistics): eval mode would also test how fast BN's moving
    # statistics settle, which is not what this test is about.
    assert history[-1] < history[0] * 0.7, history


def test_fit_without_labels_is_a_clear_error():
    model = _model()
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images, _ = _data(4)
    with pytest.raises(ValueError, match="needs \\(images, labels\\) batches"):
        model.fit(images, epochs=1, verbose=0)


def test_save_load_and_embedding_model_loader(tmp_path):
    model = _model()
    images, _ = _data(4)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(restored, FaceRecognizer)
    np.testing.assert_allclose(restored(images).numpy(), model(images).numpy(), atol=1e-6)
    embedding = load_embedding_model(tmp_path / "model.keras")
    np.testing.assert_allclose(embedding(images).numpy(), model(images).numpy(), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="no model found"):
        load_embedding_model(tmp_path / "empty_dir_that_exists" if (tmp_path / "empty_dir_that_exists").mkdir() is None else None)
    with pytest.raises(ValueError, match="expected a .keras file"):
        (tmp_path / "weights.h5").write_bytes(b"x")
        load_embedding_model(tmp_path / "weights.h5")


def test_embedding_model_is_float32_and_normalised_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _model()
        images, _ = _data(2)
        out = model.embedding_model(images)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert out.dtype == "float32"
    np.testing.assert_allclose(np.linalg.norm(out.numpy(), axis=1), 1.0, atol=1e-3)


def test_shared_checks(tmp_path):
    # Seeded so the comparison does not depend on which tests ran before (they move the global
    # RNG), and 4 samples per replica so training-mode BN statistics are not degenerate.
    keras.utils.set_random_seed(0)
    images, labels = _data(8)
    run_all_checks(
        _model,
        [images, labels],
        tmp_path,
        call_kwargs={"training": False},
        options={
            # Logits are s * cos with s = 64: a float16 backbone's ~1e-3 cosine error is ~0.06 here.
            "mixed_precision": {"atol": 0.15},
            "xla": {"gradient_atol": 1e-4, "gradient_rtol": 1e-3},
            "mirrored": {"atol": 1e-4, "rtol": 1e-3},
        },
    )
