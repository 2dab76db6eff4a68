"""LATSE: SimLoss/GLoss, the identity mean images, the teacher filter, the recognizer, label noise."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface.data import NoisyLabels, inject_label_noise
from kerasface.layers import IdentityMeanImages
from kerasface.losses import GenerativeLoss, StructuralSimilarityLoss
from kerasface.models import LATSERecognizer
from kerasface.testing import run_all_checks
from kerasface.training import TeacherFilter, class_centres_from_images

# ---------------------------------------------------------------- SSIM / GLoss


def _gaussian_window(size=11, sigma=1.5):
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    g /= g.sum()
    return np.outer(g, g)


def _valid_filter(image, window):
    size = window.shape[0]
    h, w = image.shape[0] - size + 1, image.shape[1] - size + 1
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            out[i, j] = np.sum(image[i:i + size, j:j + size] * window)
    return out


def _numpy_ssim(a, b, max_val=1.0):
    """Wang et al. 2004 SSIM: Gaussian 11x11 window (sigma 1.5), valid positions, mean over channels."""
    window = _gaussian_window()
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    values = []
    for c in range(a.shape[-1]):
        x, y = a[..., c].astype("float64"), b[..., c].astype("float64")
        mx, my = _valid_filter(x, window), _valid_filter(y, window)
        sxx = _valid_filter(x * x, window) - mx**2
        syy = _valid_filter(y * y, window) - my**2
        sxy = _valid_filter(x * y, window) - mx * my
        ssim_map = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
        values.append(ssim_map.mean())
    return float(np.mean(values))


def _images(n=3, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(n, size, size, 3)).astype("float32")


def test_sim_loss_is_zero_for_identical_images_and_matches_numpy_ssim():
    a = _images()
    b = np.clip(a + np.random.default_rng(1).normal(0, 0.1, a.shape), 0, 1).astype("float32")
    loss = StructuralSimilarityLoss(reduction=None)
    np.testing.assert_allclose(loss(a, a), 0.0, atol=1e-6)
    expected = [(1 - _numpy_ssim(b[i], a[i])) / 2 for i in range(len(a))]
    np.testing.assert_allclose(loss(a, b), expected, rtol=1e-4, atol=1e-5)
    assert 0.0 < min(expected) and max(expected) < 1.0


def test_ssim_equals_tf_image_ssim_in_value_and_gradient():
    from kerasface.losses import structural_similarity

    rng = np.random.default_rng(4)
    a = rng.uniform(size=(2, 28, 20, 3)).astype("float32")
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1).astype("float32")
    np.testing.assert_allclose(structural_similarity(a, b), tf.image.ssim(a, b, max_val=1.0), atol=1e-5)
    np.testing.assert_allclose(structural_similarity(a, b, max_val=2.0, filter_size=7),
                               tf.image.ssim(a, b, max_val=2.0, filter_size=7), atol=1e-5)
    x = tf.constant(b)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = tf.reduce_sum(structural_similarity(a, x))
        reference = tf.reduce_sum(tf.image.ssim(a, x, max_val=1.0))
    np.testing.assert_allclose(tape.gradient(ours, x), tape.gradient(reference, x), atol=1e-6)


def test_generative_loss_is_weighted_l1_plus_sim_loss():
    a, b = _images(seed=2), _images(seed=3)
    l1 = np.abs(a - b).mean(axis=(1, 2, 3))
    sim = np.array([(1 - _numpy_ssim(b[i], a[i])) / 2 for i in range(len(a))])
    np.testing.assert_allclose(GenerativeLoss(reduction=None)(a, b), l1 + sim, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        GenerativeLoss(l1_weight=0.5, ssim_weight=2.0, reduction=None)(a, b), 0.5 * l1 + 2 * sim, rtol=1e-4, atol=1e-5
    )
    assert float(GenerativeLoss()(a, b)) == pytest.approx(float(np.mean(l1 + sim)), rel=1e-4)
    restored = GenerativeLoss.from_config(GenerativeLoss(l1_weight=0.5).get_config())
    assert restored.l1_weight == 0.5 and restored.ssim_weight == 1.0


def test_generative_loss_input_errors():
    with pytest.raises(ValueError, match="smaller than the SSIM window 11"):
        GenerativeLoss()(_images(size=8), _images(size=8))
    with pytest.raises(ValueError, match="one shape"):
        GenerativeLoss()(_images(size=16), _images(size=12))
    with pytest.raises(ValueError, match="`l1_weight` must be >= 0, got -1"):
        GenerativeLoss(l1_weight=-1)


# ---------------------------------------------------------------- mean images (eq. 12)


def _mean_image_reference(batches, num_classes, momentum):
    """Eq. 12 applied once per identity per batch, with the identity's batch mean; first sight copies."""
    state = np.zeros((num_classes, *batches[0][0].shape[1:]), "float64")
    seen = np.zeros(num_classes, bool)
    outputs = []
    for images, labels in batches:
        new_state = state.copy()
        for c in np.unique(labels):
            mean = images[labels == c].mean(axis=0)
            new_state[c] = momentum * state[c] + (1 - momentum) * mean if seen[c] else mean
            seen[c] = True
        state = new_state
        outputs.append(state[labels])
    return outputs


def test_mean_image_update_matches_numpy_over_several_batches():
    rng = np.random.default_rng(0)
    batches = [(rng.uniform(size=(6, 8, 8, 3)).astype("float32"), rng.integers(0, 4, 6)) for _ in range(4)]
    layer = IdentityMeanImages(4, resolution=8, momentum=0.7, storage_dtype="float32")
    expected = _mean_image_reference(batches, 4, 0.7)
    for (images, labels), want in zip(batches, expected):
        got = layer([images, labels], training=True)
        np.testing.assert_allclose(got, want, atol=1e-6)
    counts = np.bincount(np.concatenate([np.unique(b[1]) for b in batches]), minlength=4)
    np.testing.assert_array_equal(layer.counts.numpy(), counts)
    # Outside training: the stored mean for seen identities, the image itself for unseen ones.
    probe = rng.uniform(size=(2, 8, 8, 3)).astype("float32")
    unseen = int(np.flatnonzero(counts == 0)[0]) if (counts == 0).any() else None
    labels = np.array([int(batches[-1][1][0]), unseen if unseen is not None else int(batches[-1][1][0])])
    out = np.asarray(layer([probe, labels], training=False))
    np.testing.assert_allclose(out[0], expected[-1][0], atol=1e-6)
    if unseen is not None:
        np.testing.assert_allclose(out[1], probe[1], atol=1e-6)


def test_uint8_storage_rounds_stochastically_without_bias():
    # A constant 0.5002 image: round-to-nearest would store 128/255 = 0.50196 forever;
    # stochastic rounding averages to the true value.
    layer = IdentityMeanImages(1, resolution=16, momentum=0.9, storage_dtype="uint8", seed=3)
    value = 0.5002
    image = np.full((1, 16, 16, 3), value, "float32")
    for _ in range(30):
        out = np.asarray(layer([image, np.zeros(1, "int32")], training=True))
    assert layer.images.dtype == "uint8"
    assert abs(out.mean() - value) < 2e-3
    assert np.max(np.abs(out - value)) <= 1 / 255 + 1e-6


def test_zero_weight_identities_keep_their_image_and_resolution_is_resized():
    layer = IdentityMeanImages(3, resolution=8, momentum=0.5, storage_dtype="float32")
    first = np.full((2, 16, 16, 3), 0.2, "float32")
    layer([first, np.array([0, 1])], training=True)
    second = np.full((2, 16, 16, 3), 0.8, "float32")
    out = np.asarray(layer([second, np.array([0, 1]), np.array([1.0, 0.0])], training=True))
    assert out.shape == (2, 16, 16, 3)  # back at the input size
    np.testing.assert_allclose(out[0], 0.5, atol=1e-6)  # 0.5 * 0.2 + 0.5 * 0.8
    np.testing.assert_allclose(out[1], 0.2, atol=1e-6)  # filtered out: unchanged
    np.testing.assert_array_equal(layer.counts.numpy(), [2, 1, 0])
    assert layer.bytes_per_identity == 8 * 8 * 3 * 4 + 4


def test_mean_images_validation():
    with pytest.raises(ValueError, match="`storage_dtype` must be one of"):
        IdentityMeanImages(3, storage_dtype="int8")
    with pytest.raises(ValueError, match="`momentum` must be in \\[0, 1\\), got 1.0"):
        IdentityMeanImages(3, momentum=1.0)


def test_mean_images_shared_checks(tmp_path):
    images = _images(n=4, size=8, seed=5)
    labels = np.array([0, 2, 0, 1], "int32")
    run_all_checks(
        lambda: IdentityMeanImages(3, resolution=8, momentum=0.6, storage_dtype="float32"),
        [images, labels], tmp_path, call_kwargs={"training": True},
        # No trainable weights: the training-step part has nothing to compare but the state.
        options={"mirrored": {"targets": images}},
    )


def test_mirrored_update_gathers_every_replica_batch():
    from kerasface.testing.mirrored_check import default_devices, mirrored_strategy

    if len(default_devices()) < 2:
        pytest.skip("needs 2 logical CPUs")
    rng = np.random.default_rng(7)
    images = rng.uniform(size=(4, 8, 8, 3)).astype("float32")
    labels = np.array([1, 0, 1, 2], "int32")  # identity 1 on both replicas
    strategy = mirrored_strategy()
    with strategy.scope():
        layer = IdentityMeanImages(3, resolution=8, momentum=0.5, storage_dtype="float32")
        layer.build([images.shape, labels.shape])
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    strategy.run(lambda x, y: layer([x, y], training=True), args=batch)
    expected = _mean_image_reference([(images, labels)], 3, 0.5)[0]
    for copy in layer.images.value.values:
        np.testing.assert_allclose(copy.numpy()[labels], expected, atol=1e-6)


@pytest.mark.parametrize("storage_dtype", ["float32", "uint8"])
def test_sharded_mean_images_match_one_device(storage_dtype):
    from kerasface.testing.mirrored_check import default_devices, mirrored_strategy

    if len(default_devices()) < 2:
        pytest.skip("needs 2 logical CPUs")
    rng = np.random.default_rng(11)
    classes = 5  # 3 + 2 rows: the second shard is padded
    batches = [(rng.uniform(size=(4, 8, 8, 3)).astype("float32"), rng.integers(0, classes, 4).astype("int32"))
               for _ in range(3)]
    kwargs = dict(resolution=8, momentum=0.6, storage_dtype=storage_dtype, seed=1)
    reference = IdentityMeanImages(classes, **kwargs)
    strategy = mirrored_strategy()
    with strategy.scope():
        sharded = IdentityMeanImages(classes, sharded=True, **kwargs)
        sharded.build([(2, 8, 8, 3), (2,)])
    assert sharded.num_shards == 2 and all(c.shape[0] == 4 for c in sharded.images.value.values)
    for images, labels in batches:
        want = np.asarray(reference([images, labels], training=True))
        dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
        batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
        got = strategy.run(lambda x, y: sharded([x, y], training=True), args=batch)
        got = np.concatenate([g.numpy() for g in strategy.experimental_local_results(got)])
        if storage_dtype == "float32":
            np.testing.assert_allclose(got, want, atol=1e-6)
    stored = sharded.all_images()
    if storage_dtype == "float32":
        np.testing.assert_allclose(stored, reference.images.numpy(), atol=1e-6)
    else:  # stochastic rounding draws differ by replica layout; one level at most
        assert np.max(np.abs(stored.astype(int) - reference.images.numpy().astype(int))) <= 1
    # Outside training each replica reads the rows of its own samples from both shards.
    images, labels = batches[-1]
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    read = strategy.run(lambda x, y: sharded([x, y], training=False), args=batch)
    read = np.concatenate([r.numpy() for r in strategy.experimental_local_results(read)])
    np.testing.assert_allclose(read, np.asarray(reference([images, labels], training=False)), atol=1 / 255 + 1e-6)
    # Saved files hold every identity in order; they load on one device (one shard).
    store = {}
    sharded.save_own_variables(store)
    single = IdentityMeanImages(classes, sharded=True, **kwargs)
    single.build([(4, 8, 8, 3), (4,)])
    single.load_own_variables(store)
    np.testing.assert_array_equal(single.all_images(), stored)


# ---------------------------------------------------------------- teacher filter (Algorithm 1)


def _identity_teacher(dim=4):
    inputs = keras.Input((dim,))
    return keras.Model(inputs, keras.layers.Identity()(inputs))


def test_filter_keeps_exactly_the_labels_in_the_teachers_top_k():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 4)).astype("float32")
    x = rng.normal(size=(20, 4)).astype("float32")
    labels = rng.integers(0, 6, 20).astype("int32")
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    scores = unit(x) @ unit(centres).T
    order = np.argsort(-scores, axis=1)
    for k in (1, 3):
        expected = np.array([labels[i] in order[i, :k] for i in range(20)])
        assert 0 < expected.sum() < 20
        keep = TeacherFilter(_identity_teacher(), centres, k=k).keep(x, labels)
        np.testing.assert_array_equal(np.asarray(keep), expected)
    with pytest.raises(ValueError, match="`k` must be in \\[1, 6\\]"):
        TeacherFilter(_identity_teacher(), centres, k=7)


def test_filter_from_a_face_recognizer_uses_its_head_and_a_peer_callable_its_class_means():
    from kerasface import heads
    from kerasface.models import FaceRecognizer

    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="embed")], name="backbone")
    recognizer = FaceRecognizer(backbone, heads.get("linearface", num_classes=5))
    recognizer.build((None, 4))
    teacher_filter = TeacherFilter.from_model(recognizer, k=2, num_classes=5, print_fn=lambda *_: None)
    kernel = recognizer.head.kernel.numpy().T
    np.testing.assert_allclose(
        teacher_filter.class_centres.numpy(), kernel / np.linalg.norm(kernel, axis=1, keepdims=True), atol=1e-6
    )
    assert "classifier head" in teacher_filter.description
    with pytest.raises(ValueError, match="needs a folder dataset"):
        TeacherFilter.from_model(recognizer, k=1, num_classes=7, source=None, print_fn=lambda *_: None)


def test_class_centres_are_re_estimated_from_the_samples_ranked_first():
    # Class 0: three faces whose teacher feature is near e0 and one mislabelled near e1;
    # class 1: near e1. The "teacher" reads the feature from the first pixel.
    features = np.array([[1, 0.1], [1, -0.1], [1, 0], [0, 1], [0.1, 1], [-0.1, 1]], "float32")
    labels = np.array([0, 0, 0, 0, 1, 1])
    pixels = np.full((6, 112, 112, 3), 127.5, "float32")
    pixels[:, 0, 0, :2] = 127.5 + 100 * features
    centres = class_centres_from_images(lambda batch: np.asarray(batch)[:, 0, 0, :2], pixels, labels, 2)
    np.testing.assert_allclose(centres[0], [1, 0], atol=1e-5)  # the mislabelled face no longer pulls it
    plain_mean = features[:4].mean(axis=0)
    assert plain_mean[1] / np.linalg.norm(plain_mean) > 0.2


# ---------------------------------------------------------------- the recognizer


def _latse(decoder=True, filter_mode="embedding", seed=0):
    from kerasface import heads
    from kerasface.backbones.resnet_decoder import ResNetDecoder

    keras.utils.set_random_seed(seed)
    backbone = keras.Sequential(
        [keras.Input((16, 16, 3)), keras.layers.Flatten(), keras.layers.Dense(8, name="embed")], name="student"
    )
    head = heads.get("linearface", num_classes=4, scale=16.0)
    kwargs = {}
    if decoder:
        kwargs["decoder"] = ResNetDecoder(
            embedding_size=8, image_shape=(16, 16, 3), stage_blocks=(1, 1), stage_channels=(8, 4),
            output_activation="sigmoid", name="decoder",
        )
        kwargs["mean_images"] = IdentityMeanImages(4, resolution=16, momentum=0.5, storage_dtype="float32",
                                                   name="mean_images")
    model = LATSERecognizer(backbone, head, filter_mode=filter_mode, **kwargs)
    model.build((None, 16, 16, 3))
    return model


def _batch(n=8, seed=1):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 16, 16, 3)).astype("uint8"), rng.integers(0, 4, n).astype("int32")


def test_generative_loss_gradient_reaches_the_encoder_through_the_decoder():
    model = _latse()
    images, labels = _batch()
    targets = np.asarray(images, "float32") / 255.0
    kernel = model.backbone.get_layer("embed").kernel
    with tf.GradientTape() as tape:
        decoded = model((images, labels), training=True)["image"]
        loss = GenerativeLoss()(targets, decoded)
    grad = tape.gradient(loss, kernel)
    assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0


def test_filtered_samples_send_no_gradient_to_the_student_but_train_the_head():
    model = _latse()
    images, labels = _batch()
    keep = np.array([1, 0, 1, 0, 0, 1, 0, 0], bool)
    targets = np.asarray(images, "float32") / 255.0
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    kernel = model.backbone.get_layer("embed").kernel

    def grads(keep_mask, rows):
        # Inference-mode BN: in training mode batch statistics couple the samples' gradients.
        with tf.GradientTape(persistent=True) as tape:
            out = model((images, labels, keep_mask), training=False)
            per_sample = ce(labels, out["identity"]) + GenerativeLoss(reduction=None)(targets, out["image"])
            loss = tf.reduce_sum(tf.gather(per_sample, rows))
        return tape.gradient(loss, kernel).numpy(), tape.gradient(loss, model.head.kernel).numpy()

    everything = np.arange(8)
    student_all, head_all = grads(keep, everything)
    student_kept, _ = grads(np.ones(8, bool), np.flatnonzero(keep))
    # The student's gradient is that of the kept samples alone; the head still learns from all.
    np.testing.assert_allclose(student_all, student_kept, rtol=1e-4, atol=1e-7)
    _, head_unfiltered = grads(np.ones(8, bool), everything)
    np.testing.assert_allclose(head_all, head_unfiltered, rtol=1e-4, atol=1e-7)
    # Forward values do not change with the mask.
    np.testing.assert_allclose(model((images, labels, keep))["identity"], model((images, labels))["identity"], atol=1e-6)


class _FixedFilter:
    """Stands in for a TeacherFilter: keeps a fixed pattern."""

    num_classes = 4

    def __init__(self, pattern):
        self.pattern = np.asarray(pattern, bool)

    def keep(self, images, labels):
        return tf.constant(self.pattern)


@pytest.mark.parametrize("filter_mode", ["embedding", "sample"])
def test_fit_with_everything_filtered_leaves_the_student_unchanged(filter_mode):
    model = _latse(filter_mode=filter_mode)
    model.teacher_filter = _FixedFilter(np.zeros(8, bool))
    model.compile_losses(keras.optimizers.SGD(0.1))
    images, labels = _batch()
    before_student = [w.copy() for w in model.backbone.get_weights()]
    before_head = model.head.kernel.numpy().copy()
    history = model.fit(images, labels, batch_size=8, epochs=1, verbose=0).history
    for old, new in zip(before_student, model.backbone.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert history["filtered_fraction"][0] == pytest.approx(1.0)
    head_moved = not np.allclose(before_head, model.head.kernel.numpy())
    assert head_moved == (filter_mode == "embedding")  # "sample" drops the sample from every loss
    if filter_mode == "sample":
        np.testing.assert_array_equal(model.mean_images.counts.numpy(), 0)
    else:
        assert model.mean_images.counts.numpy().sum() == len(np.unique(labels))


def test_fit_logs_both_losses_saves_and_reloads_the_decoder(tmp_path):
    model = _latse()
    model.teacher_filter = _FixedFilter([1, 1, 0, 1, 1, 1, 1, 0])
    model.compile_losses(keras.optimizers.SGD(0.05), generative_weight=0.5)
    images, labels = _batch()
    history = model.fit(images, labels, batch_size=8, epochs=1, verbose=0).history
    assert {"identity_loss", "image_loss", "image_l1", "image_ssim", "filtered_fraction"} <= set(history)
    assert history["loss"][0] == pytest.approx(history["identity_loss"][0] + 0.5 * history["image_loss"][0], rel=1e-4)
    assert history["filtered_fraction"][0] == pytest.approx(0.25)
    path = tmp_path / "latse.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, LATSERecognizer) and loaded.teacher_filter is None
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
    np.testing.assert_allclose(loaded.decode(images), model.decode(images), atol=1e-6)
    np.testing.assert_array_equal(loaded.mean_images.images.numpy(), model.mean_images.images.numpy())
    # What gets evaluated and exported is the student alone.
    assert [layer.name for layer in model.embedding_model.layers if "decoder" in layer.name] == []


def test_latse_recognizer_shared_checks(tmp_path):
    images, labels = _batch(4)
    targets = {"identity": labels, "image": np.asarray(images, "float32") / 255.0}
    losses = {"identity": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "image": GenerativeLoss()}
    run_all_checks(lambda: _latse(), [images.astype("float32") / 128 - 1, labels], tmp_path,
                   options={"mirrored": {"targets": targets, "loss": losses}})


def test_recognizer_validation():
    from kerasface import heads

    backbone = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)])
    with pytest.raises(ValueError, match="needs `mean_images`"):
        LATSERecognizer(backbone, heads.get("linearface", num_classes=4), decoder=keras.layers.Dense(3))
    with pytest.raises(ValueError, match="`filter_mode` must be one of"):
        LATSERecognizer(backbone, heads.get("linearface", num_classes=4), filter_mode="drop")
    with pytest.raises(ValueError, match="holds 3 identities, the head 4"):
        LATSERecognizer(backbone, heads.get("linearface", num_classes=4), decoder=keras.layers.Dense(3),
                        mean_images=IdentityMeanImages(3))


# ---------------------------------------------------------------- label noise, recipe, grid


@pytest.fixture
def faces(tmp_path):
    from PIL import Image

    root = tmp_path / "faces"
    rng = np.random.default_rng(0)
    for identity in range(5):
        folder = root / f"id{identity}"
        folder.mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    return root


def test_label_noise_moves_the_requested_share_to_other_identities(faces, tmp_path):
    noise = inject_label_noise(faces, tmp_path / "noisy", fraction=0.25, seed=3)
    assert noise.num_images == 20 and len(noise.moved) == 5
    for relative, true_identity in noise.moved.items():
        filed_under, name = relative.split("/")
        assert filed_under != true_identity and name.startswith(f"{true_identity}__")
        assert os.path.realpath(noise.root / relative) == os.path.realpath(faces / true_identity / name.split("__")[1])
        assert noise.is_noisy(noise.root / relative)
    files = sorted(p.relative_to(noise.root).as_posix() for p in noise.root.rglob("*.jpg"))
    assert len(files) == 20 and len(os.listdir(noise.root)) == 5
    for identity in os.listdir(noise.root):  # every identity keeps a correctly labelled image
        assert any("__" not in name for name in os.listdir(noise.root / identity))
    again = inject_label_noise(faces, tmp_path / "again", fraction=0.25, seed=3)
    assert again.moved == noise.moved
    assert NoisyLabels.load(tmp_path / "noisy").moved == noise.moved
    with pytest.raises(ValueError, match="`fraction` must be in \\[0, 1\\), got 1.5"):
        inject_label_noise(faces, tmp_path / "bad", fraction=1.5)
    with pytest.raises(FileExistsError, match="already exists"):
        inject_label_noise(faces, tmp_path / "noisy", fraction=0.25)


def test_recipe_paper_defaults_and_presets():
    from kerasface.recipe import apply_overrides, load_recipe, preset_overrides

    recipe = load_recipe("latse")
    assert recipe.head.name == "linearface" and recipe.head.scale == 64.0
    assert recipe.head.kwargs == {"a": 0.88, "b": 0.88}
    assert recipe.model.embedding_size == 512 and recipe.model.backbone_kwargs["neck"] == "e"
    assert recipe.latse.decoder and recipe.latse.teacher == "train" and recipe.latse.enabled
    small = apply_overrides(recipe, preset_overrides("latse", "small_cpu"))
    assert small.model.backbone == "mobilenet_v1" and small.latse.decoder_kwargs["stage_blocks"] == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="has no preset 'huge'; presets: small_cpu"):
        preset_overrides("latse", "huge")


def test_cli_preset_comes_before_set():
    import argparse

    from kerasface.cli import train_command

    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    recipe = train_command.recipe_from_args(
        parser.parse_args(["recipes/latse.py", "--preset", "small_cpu", "--set", "train.epochs=3"])
    )
    assert recipe.model.backbone == "mobilenet_v1" and recipe.head.kwargs == {"a": 0.7, "b": 0.8}
    assert recipe.train.epochs == 3  # --set wins over the preset's 8
    with pytest.raises(ValueError, match="has no preset 'tiny'"):
        train_command.recipe_from_args(parser.parse_args(["recipes/latse.py", "--preset", "tiny"]))


def test_build_face_recognizer_makes_a_latse_model_from_the_recipe():
    from kerasface.recipe import apply_overrides, load_recipe
    from kerasface.training import build_face_recognizer

    recipe = apply_overrides(load_recipe("latse"), [
        "model.backbone=mobilenet_v1", "model.embedding_size=32", "model.backbone_kwargs={'width_multiplier': 0.25}",
        "latse.decoder_kwargs={'stage_blocks': (1, 1, 1, 1), 'stage_channels': (16, 8, 8, 8)}",
        "latse.target_resolution=28", "latse.target_dtype='float16'",
    ])
    model = build_face_recognizer(recipe, num_classes=6)
    assert isinstance(model, LATSERecognizer)
    assert model.mean_images.images.shape == (6, 28, 28, 3) and model.mean_images.images.dtype == "float16"
    assert model.decoder.output_activation == "sigmoid" and model.decoder.embedding_size == 32
    plain = build_face_recognizer(apply_overrides(recipe, ["latse.decoder=False", "latse.teacher=None"]), 6)
    assert not isinstance(plain, LATSERecognizer)


def test_reconstruction_grid_layout():
    from kerasface.visualization import reconstruction_grid

    inputs = np.zeros((3, 8, 8, 3), "uint8")
    decoded = [np.full((3, 8, 8, 3), 0.5, "float32"), np.ones((3, 8, 8, 3), "float32")]
    grid = reconstruction_grid(inputs, decoded, ["early", "late"])
    assert grid.shape == (5 * 8, 110 + 3 * 8, 3) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[8 * 2:8 * 3, 110:], 128)  # |0.5 * 255 - 0|, rounded
    np.testing.assert_array_equal(grid[8 * 4:, 110:], 255)
    with pytest.raises(ValueError, match="2 decoded stages but 1 names"):
        reconstruction_grid(inputs, decoded, ["early"])


@pytest.mark.slow
def test_recipe_smoke_run_trains_teacher_then_student(tmp_path):
    from kerasface.cli.main import main

    out = tmp_path / "latse"
    assert main(["train", "latse", "--smoke", "--quiet", "--out", str(out),
                 "--set", f"data.synthetic_dir={tmp_path / 'synthetic'}"]) == 0
    assert (out / "teacher" / "model.keras").is_file() and (out / "embedding.keras").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert "classifier head" in summary["latse"]["filter"]
    assert "filtered_fraction" in summary["history"] and "image_ssim" in summary["history"]


def test_seed_summary_statistics():
    from kerasface.benchmark import summarize_seeds

    runs = [{"setup": {"seed": s}, "methods": {"a": {"accuracy": v, "filter": f}}, "command": f"run {s}"}
            for s, v, f in ((0, 0.6, None), (1, 0.7, {"precision": 0.5}), (2, 0.8, None))]
    combined = summarize_seeds(runs, {"accuracy": lambda e: e["accuracy"],
                                      "precision": lambda e: (e["filter"] or {}).get("precision")})
    stats = combined["summary"]["a"]
    assert stats["accuracy"]["mean"] == pytest.approx(0.7) and stats["accuracy"]["std"] == pytest.approx(0.1)
    assert (stats["accuracy"]["min"], stats["accuracy"]["max"], stats["accuracy"]["n"]) == (0.6, 0.8, 3)
    assert stats["precision"] == {"mean": 0.5, "std": None, "min": 0.5, "max": 0.5, "n": 1, "seeds": [1]}
    assert combined["commands"] == ["run 0", "run 1", "run 2"]


def test_a_teacher_with_other_labels_falls_back_to_class_means(faces, tmp_path):
    from kerasface import heads
    from kerasface.data import FolderSource
    from kerasface.models import FaceRecognizer

    source = FolderSource(faces)
    backbone = keras.Sequential([keras.Input((112, 112, 3)), keras.layers.AveragePooling2D(28),
                                 keras.layers.Flatten(), keras.layers.Dense(4, name="embed")], name="teacher")
    teacher = FaceRecognizer(backbone, heads.get("linearface", num_classes=5))
    teacher.build((None, 112, 112, 3))
    run = tmp_path / "teacher_run"
    run.mkdir()
    teacher.save(run / "model.keras")
    (run / "label_map.json").write_text(json.dumps(source.label_map))
    quiet = {"print_fn": lambda *_: None}
    same = TeacherFilter.from_model(run, k=1, num_classes=5, source=source, label_map=source.label_map, **quiet)
    assert "classifier head" in same.description
    shuffled = dict(zip(source.label_map, reversed(list(source.label_map.values()))))
    other = TeacherFilter.from_model(run, k=1, num_classes=5, source=source, label_map=shuffled, **quiet)
    assert "nearest-class scores" in other.description and "not the student's" in other.description
    assert other.class_centres.shape == (5, 4)
    with pytest.raises(FileNotFoundError, match="no model.keras"):
        TeacherFilter.from_model(tmp_path, k=1, num_classes=5, source=source, **quiet)


def test_malformed_smoke_and_preset_lists_name_the_recipe(tmp_path):
    from kerasface.recipe import preset_overrides, smoke_overrides

    recipe = tmp_path / "bad.py"
    recipe.write_text("from kerasface.recipe import Recipe\nRECIPE = Recipe()\nSMOKE = 'train.epochs=1'\n"
                      "PRESETS = {'fast': ['train.epochs=1', 3]}\n")
    with pytest.raises(ValueError, match="bad.py: SMOKE must be a list of 'section.field=value' strings"):
        smoke_overrides(recipe)
    with pytest.raises(ValueError, match="bad.py: PRESETS\\['fast'\\] must be a list"):
        preset_overrides(recipe, "fast")
