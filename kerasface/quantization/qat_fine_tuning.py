"""Label-free quantisation-aware fine-tuning: the fake-quantised model learns the float model's embeddings."""

import numpy as np
import tensorflow as tf

import keras

from kerasface.data.preprocessing import normalize_images, normalize_numpy
from kerasface.quantization.cosine_distance import cosine_distance
from kerasface.quantization.fake_quant import FakeQuant


def calibrate_ranges(qat_model, images, batch_size=32):
    """Initialise every ``FakeQuant`` range from faces: batches in training mode update the EMAs.

    The first batch sets each range, later ones move it by the layers' EMA, so the ranges
    follow typical batch extremes rather than the single most extreme face (the plain
    min/max post-training calibration takes, which only widens with more images).

    Args:
        qat_model: a model from ``quantize_model``.
        images: uint8 (N, 112, 112, 3) aligned faces.
        batch_size: faces per batch.

    Returns:
        dict ``{layer name: (min, max)}`` of the calibrated ranges.
    """
    images = _check_images(images, "calibration images")
    for start in range(0, len(images), batch_size):
        qat_model(normalize_numpy(images[start : start + batch_size]), training=True)
    return activation_ranges(qat_model)


def activation_ranges(qat_model):
    """``{layer name: (min, max)}`` of the model's ``FakeQuant`` layers."""
    return {
        layer.name: (float(layer.range_min.numpy()), float(layer.range_max.numpy()))
        for layer in qat_model.layers
        if isinstance(layer, FakeQuant)
    }


def teacher_embeddings(teacher, images, batch_size=64, flip=False):
    """float32 (N, D) embeddings of uint8 faces by the float model (mirrored faces when ``flip``)."""
    images = _check_images(images, "images")
    if flip:
        images = images[:, :, ::-1]
    outputs = [
        keras.ops.convert_to_numpy(teacher(normalize_numpy(images[s : s + batch_size]), training=False))
        for s in range(0, len(images), batch_size)
    ]
    return np.concatenate(outputs).astype(np.float32)


def distillation_dataset(images, targets, flipped_targets=None, batch_size=32, seed=0):
    """tf.data of (normalised faces, teacher embeddings), shuffled, repeated per epoch by ``fit``.

    With ``flipped_targets`` each face is mirrored with probability 0.5 and paired with the
    teacher's embedding of the mirrored face, so augmentation never mismatches the target.
    """
    images = _check_images(images, "images")
    if len(targets) != len(images):
        raise ValueError(f"got {len(images)} images but {len(targets)} teacher embeddings")
    flipped = targets if flipped_targets is None else flipped_targets
    dataset = tf.data.Dataset.from_tensor_slices((images, targets, flipped))
    dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)

    def prepare(image, target, flipped_target):
        if flipped_targets is None:
            return normalize_images(image), target
        mirror = tf.random.uniform(()) < 0.5
        image = tf.cond(mirror, lambda: tf.image.flip_left_right(image), lambda: image)
        return normalize_images(image), tf.where(mirror, flipped_target, target)

    return dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def fine_tune(
    qat_model,
    teacher,
    images,
    epochs=3,
    batch_size=32,
    learning_rate=1e-4,
    flip=True,
    seed=0,
    validation=None,
    verbose=1,
):
    """Quantisation-aware fine-tuning by distillation: minimise ``1 - cos(qat(x), teacher(x))``.

    No labels are needed: the float model's embedding of each face is the target, so any
    folder of aligned faces will do. Adam with a cosine-decayed ``learning_rate``; the
    ``FakeQuant`` ranges keep following the batches (EMA) while the weights adapt to
    int8 rounding. Build and compile happen in the current distribution scope, so
    calling this inside ``strategy.scope()`` with a model built there trains replicated.

    Args:
        qat_model: a calibrated model from ``quantize_model``.
        teacher: the float embedding model.
        images: uint8 (N, 112, 112, 3) aligned training faces.
        epochs: passes over ``images``.
        batch_size: global batch size.
        learning_rate: peak learning rate (small: the weights only need to adapt).
        flip: random horizontal mirroring (with the teacher's mirrored-face targets).
        seed: shuffling seed.
        validation: optional uint8 faces whose teacher cosine is reported each epoch.
        verbose: ``model.fit`` verbosity.

    Returns:
        the ``keras.callbacks.History``.
    """
    images = _check_images(images, "training images")
    targets = teacher_embeddings(teacher, images, batch_size=64)
    flipped = teacher_embeddings(teacher, images, batch_size=64, flip=True) if flip else None
    dataset = distillation_dataset(images, targets, flipped, batch_size=batch_size, seed=seed)
    steps = max(1, int(np.ceil(len(images) / batch_size))) * int(epochs)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    qat_model.compile(optimizer=keras.optimizers.Adam(schedule), loss=cosine_distance)
    validation_data = None
    if validation is not None:
        validation = _check_images(validation, "validation images")
        validation_data = distillation_dataset(
            validation, teacher_embeddings(teacher, validation), batch_size=batch_size
        )
    return qat_model.fit(dataset, epochs=int(epochs), validation_data=validation_data, verbose=verbose)


def _check_images(images, what):
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{what} must be uint8 (N, H, W, 3) faces, got {images.dtype} {images.shape}")
    if len(images) == 0:
        raise ValueError(f"{what}: no images")
    return images
