"""FaceAugmentation: each operation against a NumPy reference, masks, determinism, config."""

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from kerasface.data.face_augmentation import AUGMENTATION_PRESETS, FaceAugmentation

SIZE = 112
LUMA = np.array([0.2989, 0.5870, 0.1140])
SEED = tf.constant([12, 34], tf.int64)


def noise_images(batch, seed=0, low=0, high=256):
    rng = np.random.default_rng(seed)
    return rng.integers(low, high, (batch, SIZE, SIZE, 3), dtype=np.uint8)


def smooth_images(batch, seed=0):
    """Random low-frequency colour images in roughly [40, 215]."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 215, (batch, 8, 8, 3)).astype(np.float32)
    return np.round(tf.image.resize(coarse, [SIZE, SIZE]).numpy()).astype(np.uint8)


def augment(images, seed=SEED, **kwargs):
    out = FaceAugmentation(**kwargs)(images, seed)
    assert out.dtype == tf.uint8 and out.shape == images.shape
    return out.numpy()


def rounded(x):
    return np.clip(np.floor(np.asarray(x, np.float64) + 0.5), 0, 255)


def changed_samples(before, after):
    return (before != after).reshape(len(before), -1).any(axis=1)


# ---- identity and single operations ----------------------------------------------------------


def test_all_probabilities_zero_return_input():
    images = noise_images(4)
    off = dict(flip=0.0, crop=0.0, color_jitter=0.0, grayscale=0.0, blur=0.0,
               low_resolution=0.0, erasing=0.0)
    np.testing.assert_array_equal(augment(images, **off), images)
    np.testing.assert_array_equal(FaceAugmentation.none()(images, SEED).numpy(), images)
    assert FaceAugmentation.none().enabled_ops == ()


def test_flip_p1_matches_numpy():
    images = noise_images(5)
    np.testing.assert_array_equal(augment(images, flip=1.0), np.flip(images, axis=2))


def test_grayscale_p1_matches_luma_reference():
    images = noise_images(4, seed=1)
    out = augment(images, flip=0.0, grayscale=1.0)
    reference = rounded(images.astype(np.float64) @ LUMA)
    for channel in range(3):
        assert np.abs(out[..., channel] - reference).max() <= 1
    assert np.mean(out[..., 0] == reference) > 0.99
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def rectangle_of(mask):
    rows, cols = np.nonzero(mask)
    return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


@pytest.mark.parametrize("scale", [(0.02, 0.2), (0.3, 0.4)])
def test_erasing_constant_fills_one_rectangle_in_scale(scale):
    images = noise_images(32, seed=2, low=1)  # never 0, so every erased pixel shows
    out = augment(images, flip=0.0, erasing=1.0, erasing_scale=scale, erasing_value=0)
    for before, after in zip(images, out):
        erased = (before != after).any(axis=-1)
        top, bottom, left, right = rectangle_of(erased)
        assert erased[top:bottom, left:right].all()  # a full rectangle ...
        assert erased.sum() == (bottom - top) * (right - left)  # ... and nothing else
        assert (after[erased] == 0).all()
        fraction = erased.sum() / SIZE**2
        assert scale[0] <= fraction <= scale[1]
        ratio = (bottom - top) / (right - left)
        assert 0.3 - 0.1 <= ratio <= 3.3 + 0.6  # rounding to whole pixels


def test_erasing_noise_is_a_rectangle_of_new_values():
    images = np.full((16, SIZE, SIZE, 3), 77, np.uint8)
    out = augment(images, flip=0.0, erasing=1.0)
    for after in out:
        erased = (after != 77).any(axis=-1)
        top, bottom, left, right = rectangle_of(erased)
        assert erased[top:bottom, left:right].mean() > 0.99  # noise rarely hits 77 3 times
        assert 0.02 - 0.005 <= (bottom - top) * (right - left) / SIZE**2 <= 0.2
        assert after[top:bottom, left:right].std() > 50  # uniform noise, std ~74


def test_random_resized_crop_on_coordinate_ramps():
    rows, cols = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    ramp = np.stack([2 * rows, 2 * cols, np.full_like(rows, 100)], axis=-1).astype(np.uint8)
    images = np.repeat(ramp[None], 24, axis=0)
    out = augment(images, flip=0.0, crop=1.0, crop_scale=(0.5, 0.7)).astype(np.float64)
    index = np.arange(SIZE)
    for sample in out:
        assert (sample[..., 2] == 100).all()
        # Axis-aligned: red depends on the row only, green on the column only.
        assert np.ptp(sample[..., 0], axis=1).max() <= 1
        assert np.ptp(sample[..., 1], axis=0).max() <= 1
        slope_y, start_y = np.polyfit(index, sample[:, 0, 0], 1)
        slope_x, start_x = np.polyfit(index, sample[0, :, 1], 1)
        # Samples sit on the crop's first and last pixel centres: span = (side - 1) pixels.
        crop_h = slope_y / 2 * (SIZE - 1) + 1
        crop_w = slope_x / 2 * (SIZE - 1) + 1
        top, left = start_y / 2, start_x / 2
        assert 0.5 - 0.01 <= crop_h * crop_w / SIZE**2 <= 0.7 + 0.01
        assert 3 / 4 - 0.02 <= crop_w / crop_h <= 4 / 3 + 0.02
        assert top >= -0.5 and top + crop_h <= SIZE + 0.5
        assert left >= -0.5 and left + crop_w <= SIZE + 0.5
        assert np.abs(sample[:, 0, 0] - (slope_y * index + start_y)).max() <= 1


def numpy_gaussian_blur(images, sigma):
    radius = math.ceil(3 * sigma)
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= kernel.sum()
    x = images.astype(np.float64)
    for axis in (1, 2):
        pad = [(0, 0)] * 4
        pad[axis] = (radius, radius)
        padded = np.pad(x, pad, mode="reflect")
        x = sum(
            w * np.take(padded, np.arange(k, k + SIZE), axis=axis) for k, w in enumerate(kernel)
        )
    return x


def test_blur_matches_numpy_at_fixed_sigma_and_keeps_constants():
    images = noise_images(3, seed=3)
    out = augment(images, flip=0.0, blur=1.0, blur_sigma=(1.0, 1.0))
    reference = rounded(numpy_gaussian_blur(images, 1.0))
    assert np.abs(out - reference).max() <= 1
    constant = np.full((2, SIZE, SIZE, 3), 93, np.uint8)
    np.testing.assert_array_equal(augment(constant, flip=0.0, blur=1.0), constant)


def high_frequency_energy(images):
    x = images.astype(np.float64)
    return np.square(np.diff(x, axis=1)).mean(axis=(1, 2, 3)) + np.square(
        np.diff(x, axis=2)
    ).mean(axis=(1, 2, 3))


def test_blur_random_sigma_reduces_high_frequencies():
    images = noise_images(8, seed=4)
    out = augment(images, flip=0.0, blur=1.0, blur_sigma=(0.6, 2.0))
    assert (high_frequency_energy(out) < 0.5 * high_frequency_energy(images)).all()


def test_low_resolution_loses_a_checkerboard():
    rows, cols = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    board = (((rows + cols) % 2) * 255).astype(np.uint8)
    images = np.repeat(np.stack([board] * 3, axis=-1)[None], 8, axis=0)
    out = augment(images, flip=0.0, low_resolution=1.0)
    assert (out.reshape(8, -1).std(axis=1) < 0.1 * images.reshape(8, -1).std(axis=1)).all()
    assert np.abs(out.astype(float).mean(axis=(1, 2, 3)) - 127.5).max() < 3


def test_low_resolution_matches_area_down_bilinear_up():
    images = noise_images(2, seed=5)
    out = augment(images, flip=0.0, low_resolution=1.0, low_resolution_size=(28, 28))
    small = images.astype(np.float64).reshape(2, 28, 4, 28, 4, 3).mean(axis=(2, 4))
    reference = rounded(tf.image.resize(small, [SIZE, SIZE], method="bilinear").numpy())
    assert np.abs(out - reference).max() <= 1


# ---- colour jitter -----------------------------------------------------------------------


def fit_line(x, y):
    slope, intercept = np.polyfit(x.ravel(), y.ravel(), 1)
    return slope, intercept


def test_brightness_only_is_a_per_sample_factor_in_range():
    images = noise_images(16, seed=6)
    out = augment(images, flip=0.0, color_jitter=1.0, brightness=0.5, contrast=0.0,
                  saturation=0.0, hue=0.0)
    factors = []
    for before, after in zip(images.astype(np.float64), out.astype(np.float64)):
        unclipped = (after < 250) & (before > 10)
        factor = (before[unclipped] * after[unclipped]).sum() / np.square(before[unclipped]).sum()
        assert 0.5 - 0.01 <= factor <= 1.5 + 0.01
        assert np.abs(after - rounded(before * factor)).max() <= 1
        factors.append(factor)
    assert np.std(factors) > 0.1  # one factor per sample, spread over the range


def test_contrast_only_blends_with_mean_luma():
    images = noise_images(8, seed=7, low=60, high=196)
    out = augment(images, flip=0.0, color_jitter=1.0, brightness=0.0, contrast=0.4,
                  saturation=0.0, hue=0.0)
    for before, after in zip(images.astype(np.float64), out.astype(np.float64)):
        factor, intercept = fit_line(before, after)
        mean_luma = (before @ LUMA).mean()
        assert 0.6 - 0.01 <= factor <= 1.4 + 0.01
        assert abs(intercept - (1 - factor) * mean_luma) < 1.0


def test_contrast_blends_with_the_mean_of_the_brightened_image():
    images = noise_images(16, seed=14, low=70, high=150)
    jitter = dict(flip=0.0, color_jitter=1.0, brightness=0.4, saturation=0.0, hue=0.0)
    # The same seed draws the same per-sample brightness factors with or without contrast.
    brightened = augment(images, contrast=0.0, **jitter).astype(np.float64)
    both = augment(images, contrast=0.5, **jitter).astype(np.float64)
    for before, bright, after in zip(images.astype(np.float64), brightened, both):
        brightness = (before * bright).sum() / np.square(before).sum()
        slope, intercept = fit_line(before, after)
        contrast = slope / brightness
        assert 0.5 - 0.02 <= contrast <= 1.5 + 0.02
        mean_luma = brightness * (before @ LUMA).mean()
        assert abs(intercept - (1 - contrast) * mean_luma) < 1.5


def test_saturation_and_hue_leave_gray_images_and_keep_luma():
    gray = np.repeat(noise_images(6, seed=8)[..., :1], 3, axis=-1)
    out = augment(gray, flip=0.0, color_jitter=1.0, brightness=0.0, contrast=0.0,
                  saturation=0.8, hue=0.5)
    assert np.abs(out.astype(int) - gray).max() <= 1
    colour = smooth_images(6, seed=9) // 4 + 96  # low chroma: no clipping after rotation
    out = augment(colour, flip=0.0, color_jitter=1.0, brightness=0.0, contrast=0.0,
                  saturation=0.0, hue=0.5)
    assert np.abs(out.astype(np.float64) @ LUMA - colour.astype(np.float64) @ LUMA).max() < 1.5
    assert changed_samples(colour, out).sum() >= 5


# ---- masks, determinism, graph ---------------------------------------------------------------


@pytest.mark.parametrize(
    "op, probability", [("flip", 0.5), ("grayscale", 0.25), ("erasing", 0.75)]
)
def test_per_sample_probability_is_binomial(op, probability):
    images = noise_images(512, seed=10, low=1)
    kwargs = {"flip": 0.0, op: probability}
    if op == "erasing":
        kwargs["erasing_value"] = 0
    fraction = changed_samples(images, augment(images, **kwargs)).mean()
    # Within 4.5 standard deviations of the binomial fraction (0.022 at p = 0.5, 512 draws).
    assert abs(fraction - probability) < 4.5 * math.sqrt(probability * (1 - probability) / 512)


COLOUR = dict(color_jitter=0.5, brightness=0.5, contrast=0.0, saturation=0.0, hue=0.0)
BLUR = dict(blur=0.5, blur_sigma=(1.5, 2.0))
LOW_RESOLUTION = dict(low_resolution=0.5)
CROP = dict(crop=0.5, crop_scale=(0.5, 0.7))
ERASING = dict(erasing=0.5, erasing_value=0)


@pytest.mark.parametrize(
    "first, second",
    [(COLOUR, BLUR), (BLUR, LOW_RESOLUTION), (CROP, ERASING)],
    ids=["colour-blur", "blur-low_resolution", "crop-erasing"],
)
def test_unchosen_samples_exact_and_ops_independent(first, second):
    images = noise_images(32, seed=11, low=1)
    first_only = augment(images, flip=0.0, **first)
    second_only = augment(images, flip=0.0, **second)
    both = augment(images, flip=0.0, **first, **second)
    by_first = changed_samples(images, first_only)
    by_second = changed_samples(images, second_only)
    assert 0 < by_first.sum() < 32 and 0 < by_second.sum() < 32
    neither, only_first, only_second = (
        ~by_first & ~by_second, by_first & ~by_second, ~by_first & by_second
    )
    assert neither.any() and only_first.any() and only_second.any()
    np.testing.assert_array_equal(both[neither], images[neither])
    np.testing.assert_array_equal(both[only_first], first_only[only_first])
    np.testing.assert_array_equal(both[only_second], second_only[only_second])


EVERYTHING = dict(flip=0.5, crop=0.5, color_jitter=0.5, grayscale=0.3, blur=0.5,
                  low_resolution=0.5, erasing=0.5)


def test_same_seed_same_output_different_seed_differs():
    images = noise_images(12, seed=12)
    aug = FaceAugmentation(**EVERYTHING)
    first = aug(images, SEED).numpy()
    np.testing.assert_array_equal(first, aug(images, [12, 34]).numpy())
    np.testing.assert_array_equal(first, FaceAugmentation(**EVERYTHING)(images, SEED).numpy())
    other = aug(images, tf.constant([12, 35], tf.int64)).numpy()
    assert changed_samples(first, other).sum() >= 6


def test_tf_function_and_dataset_map_match_eager():
    images = noise_images(12, seed=13)
    aug = FaceAugmentation(**EVERYTHING)
    compiled = tf.function(aug, jit_compile=False)
    np.testing.assert_array_equal(compiled(images, SEED).numpy(), aug(images, SEED).numpy())

    dataset = tf.data.Dataset.from_tensor_slices(images).batch(5).enumerate()
    dataset = dataset.map(
        lambda step, batch: aug(batch, tf.stack([step, tf.constant(7, tf.int64)]))
    )
    batches = list(dataset.as_numpy_iterator())
    assert [len(b) for b in batches] == [5, 5, 2]  # dynamic batch size, last one partial
    for step, batch in enumerate(batches):
        expected = aug(images[5 * step : 5 * step + 5], tf.constant([step, 7], tf.int64))
        np.testing.assert_array_equal(batch, expected.numpy())
        assert batch.dtype == np.uint8


# ---- configuration ---------------------------------------------------------------------------


def test_config_round_trip_repr_and_string():
    aug = FaceAugmentation(flip=0.3, crop=0.2, crop_scale=(0.6, 0.9), blur=0.1,
                           low_resolution_size=(20, 40), erasing=0.2, erasing_value=0)
    config = aug.get_config()
    assert config["crop_scale"] == (0.6, 0.9) and aug.crop_scale == (0.6, 0.9)
    assert FaceAugmentation.from_config(config) == aug
    assert FaceAugmentation.from_config(json.loads(json.dumps(config))) == aug
    assert FaceAugmentation.from_string(aug.to_string()) == aug
    assert repr(aug).startswith("FaceAugmentation(flip=0.3, crop=0.2, crop_scale=(0.6, 0.9)")
    assert "hue" not in repr(aug)  # defaults are left out
    assert eval(repr(aug), {"FaceAugmentation": FaceAugmentation}) == aug
    assert aug.enabled_ops == ("flip", "crop", "blur", "erasing")


def test_from_string_items_pairs_and_presets():
    aug = FaceAugmentation.from_string("flip=0.5, blur=0.2,low_resolution=0.1")
    assert (aug.flip, aug.blur, aug.low_resolution, aug.crop) == (0.5, 0.2, 0.1, 0.0)
    aug = FaceAugmentation.from_string("blur=1,blur_sigma=0.5:1.5,low_resolution_size=(20,30)")
    assert aug.blur_sigma == (0.5, 1.5) and aug.low_resolution_size == (20, 30)
    assert FaceAugmentation.from_string("erasing=0.1,erasing_value=noise").erasing_value is None
    assert FaceAugmentation.from_string("none") == FaceAugmentation.none()
    light = FaceAugmentation.from_string("light,erasing=0.1")
    assert light == FaceAugmentation(**{**AUGMENTATION_PRESETS["light"], "erasing": 0.1})
    assert set(AUGMENTATION_PRESETS) == {"none", "flip", "light", "strong"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(blur=1.5), r"`blur` must be in \[0, 1\], got 1.5"),
        (dict(flip=-0.1), r"`flip` must be in \[0, 1\], got -0.1"),
        (dict(flip=True), r"`flip` must be a number, got True"),
        (dict(crop_scale=(0.9, 0.5)), r"`crop_scale` min must be <= max, got \(0.9, 0.5\)"),
        (dict(crop_scale=(0.5, 1.2)), r"`crop_scale` max must be <= 1.0, got \(0.5, 1.2\)"),
        (dict(crop_ratio=(0.0, 1.0)), r"`crop_ratio` min must be > 0.0"),
        (dict(blur_sigma=0.5), r"`blur_sigma` must be a pair \(min, max\) of numbers, got 0.5"),
        (dict(hue=0.7), r"`hue` must be in \[0, 0.5\], got 0.7"),
        (dict(brightness=-1), r"`brightness` must be >= 0, got -1"),
        (dict(low_resolution_size=(16.5, 56)), r"`low_resolution_size` .* integers, got"),
        (dict(erasing_scale=(0.1, 1.0)), r"`erasing_scale` max must be < 1.0"),
        (dict(erasing_value=300), r"`erasing_value` must be None \(noise\) or in \[0, 255\], "
                                  r"got 300"),
        (dict(color_jitter=0.5, brightness=0, contrast=0, saturation=0, hue=0),
         r"`color_jitter` is 0.5 but .* all 0"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FaceAugmentation(**kwargs)


@pytest.mark.parametrize(
    "text, message",
    [
        ("flip=0.5,blurr=0.2", r"unknown augmentation option 'blurr' in 'flip=0.5,blurr=0.2'"),
        ("blur=lots", r"option `blur` in 'blur=lots': expected a number, got 'lots'"),
        ("blur_sigma=1", r"`blur_sigma` .* expected `min:max` numbers, got '1'"),
        ("heavy", r"unknown augmentation preset 'heavy'"),
        ("flip=0.5,light", r"item 'light' .* is not `name=value`"),
        ("blur=0.1,blur=0.2", r"option 'blur' given twice"),
        ("", r"empty augmentation string"),
        ("crop=2", r"`crop` must be in \[0, 1\], got 2.0"),
    ],
)
def test_from_string_errors(text, message):
    with pytest.raises(ValueError, match=message):
        FaceAugmentation.from_string(text)


def test_bad_config_and_call_inputs():
    with pytest.raises(ValueError, match=r"unknown FaceAugmentation config key\(s\) blurr"):
        FaceAugmentation.from_config({"blurr": 0.1})
    aug = FaceAugmentation(grayscale=1.0)
    with pytest.raises(ValueError, match="images must be uint8, got float32"):
        aug(np.zeros((1, SIZE, SIZE, 3), np.float32), SEED)
    with pytest.raises(ValueError, match=r"`seed` must have shape \(2,\), got \(3,\)"):
        aug(np.zeros((1, SIZE, SIZE, 3), np.uint8), [1, 2, 3])
    with pytest.raises(ValueError, match=r"`low_resolution_size` max 56 must be <= the image"):
        FaceAugmentation(low_resolution=0.5)(np.zeros((1, 32, 32, 3), np.uint8), SEED)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    def unknown_size(images):
        return aug(images, SEED)

    with pytest.raises(ValueError, match="grayscale need images with a static height"):
        unknown_size.get_concrete_function()
