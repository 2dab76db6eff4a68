"""Embed face images (files, encoded bytes or pixel arrays) with an embedding model."""

import os

import numpy as np

from kerasface.data.preprocessing import IMAGE_SIZE, decode_rgb, normalize_images, normalize_numpy


def embed_images(embed_fn, images, batch_size=64, flip=False, names=None, progress=False):
    """L2-normalised embeddings of face images, each distinct image file embedded once.

    Args:
        embed_fn: a ``keras.Model`` or a callable mapping a float32 normalised batch
            ``(B, 112, 112, 3)`` (``(x - 127.5) / 128``) to ``(B, D)`` embeddings.
        images: image file paths, encoded JPEG/PNG ``bytes``, or a ``(N, 112, 112, 3)`` array of RGB
            pixels in [0, 255]. Files and bytes are decoded with tf.data and resized to 112x112 if
            needed; an image that cannot be read or decoded is an error naming it.
        batch_size: images per call of ``embed_fn``.
        flip: flip test: embed each image and its horizontal mirror and L2-normalise their sum.
        names: optional label per image for error messages (defaults to the path or the index).
        progress: show a Keras progress bar (images embedded so far, rate, time left).

    Returns:
        float32 ``(N, D)`` L2-normalised embeddings, in the order of ``images``.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}")
    embed_fn = _as_embed_fn(embed_fn)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        _check_pixels(images)
        batches = (
            normalize_numpy(images[i:i + batch_size]) for i in range(0, len(images), batch_size)
        )
        return _l2_normalize(_embed_batches(embed_fn, batches, len(images), flip, progress))

    sources, kind = _as_sources(images)
    inverse = None
    if kind == "path":
        # Pairs lists reuse images many times: embed each file once and fan out afterwards.
        names = _names(sources, kind, names)
        first = {}
        for index, source in enumerate(sources):
            first.setdefault(source, index)
        position = {source: rank for rank, source in enumerate(first)}
        inverse = np.array([position[source] for source in sources], dtype=np.int64)
        names = [names[index] for index in first.values()]
        sources = list(first)
    names = _names(sources, kind, names)
    batches = (
        normalize_images(batch).numpy()
        for batch in _decoded_batches(sources, kind, names, batch_size)
    )
    embeddings = _l2_normalize(_embed_batches(embed_fn, batches, len(sources), flip, progress))
    return embeddings if inverse is None else embeddings[inverse]


def decode_images(images, names=None, batch_size=256):
    """Decode image files or encoded bytes to a uint8 ``(N, 112, 112, 3)`` RGB array.

    Args:
        images: image file paths or encoded JPEG/PNG ``bytes``.
        names: optional label per image for error messages.
        batch_size: images decoded per tf.data batch.
    """
    sources, kind = _as_sources(images)
    names = _names(sources, kind, names)
    decoded = np.empty((len(sources), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    start = 0
    for batch in _decoded_batches(sources, kind, names, batch_size):
        pixels = np.clip(np.rint(batch.numpy()), 0, 255).astype(np.uint8)
        decoded[start:start + len(pixels)] = pixels
        start += len(pixels)
    return decoded


def _as_embed_fn(embed_fn):
    import keras

    if isinstance(embed_fn, keras.Model):
        return embed_fn.predict_on_batch
    if not callable(embed_fn):
        raise TypeError(
            f"`embed_fn` must be a keras.Model or a callable, got {type(embed_fn).__name__}"
        )
    return embed_fn


def _check_pixels(images):
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(
            f"pixel images must have shape (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3), got {images.shape}"
        )


def _as_sources(images):
    if isinstance(images, (str, bytes, os.PathLike)):
        raise TypeError("`images` must be a list of paths or encoded images, not a single item")
    sources = list(images)
    if not sources:
        raise ValueError("`images` is empty")
    if all(isinstance(source, (bytes, bytearray)) for source in sources):
        return [bytes(source) for source in sources], "bytes"
    if all(isinstance(source, (str, os.PathLike)) for source in sources):
        return [os.fspath(source) for source in sources], "path"
    kinds = sorted({type(source).__name__ for source in sources})
    raise TypeError(f"`images` must be all paths or all encoded bytes, got items of types {kinds}")


def _names(sources, kind, names):
    if names is None:
        return sources if kind == "path" else [f"image #{index}" for index in range(len(sources))]
    if len(names) != len(sources):
        raise ValueError(f"`names` has {len(names)} entries for {len(sources)} images")
    return list(names)


def _decode_one(source, from_file):
    """One image -> float32 (112, 112, 3) RGB pixels in [0, 255]."""
    import tensorflow as tf

    data = tf.io.read_file(source) if from_file else source
    image = tf.cast(decode_rgb(data), tf.float32)
    image = tf.cond(
        tf.reduce_all(tf.shape(image)[:2] == IMAGE_SIZE),
        lambda: image,
        lambda: tf.image.resize(image, (IMAGE_SIZE, IMAGE_SIZE), antialias=True),
    )
    return tf.ensure_shape(image, (IMAGE_SIZE, IMAGE_SIZE, 3))


def _decoded_batches(sources, kind, names, batch_size):
    """Yield float32 pixel batches; a failing image raises ValueError naming it."""
    import tensorflow as tf

    from_file = kind == "path"
    dataset = (
        tf.data.Dataset.from_tensor_slices(tf.constant(sources, tf.string))
        .map(lambda source: _decode_one(source, from_file),
             num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    iterator = iter(dataset)
    start = 0
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except tf.errors.OpError as error:
            _raise_for_bad_image(sources[start:start + batch_size], names[start:start + batch_size],
                                 from_file, error)
        yield batch
        start += len(batch)


def _raise_for_bad_image(sources, names, from_file, batch_error):
    # tf.data reports which op failed, not which element: re-decode the batch one image at a time.
    import tensorflow as tf

    for source, name in zip(sources, names):
        if from_file and not os.path.isfile(source):
            raise FileNotFoundError(f"{name}: image file does not exist")
        try:
            _decode_one(tf.constant(source, tf.string), from_file)
        except tf.errors.OpError as error:
            raise ValueError(f"{name}: cannot decode image: {error.message}") from None
    raise ValueError(f"decoding images {names[0]} .. {names[-1]} failed: {batch_error.message}")


def _embed_batches(embed_fn, batches, total, flip, progress=False):
    embeddings = None
    start = 0
    progress_bar = None
    if progress:
        import keras

        progress_bar = keras.utils.Progbar(total, unit_name="image")
    for batch in batches:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        output = _call(embed_fn, batch, start)
        if flip:
            output = output + _call(embed_fn, np.ascontiguousarray(batch[:, :, ::-1, :]), start)
        if embeddings is None:
            embeddings = np.empty((total, output.shape[1]), np.float32)
        elif output.shape[1] != embeddings.shape[1]:
            raise ValueError(
                f"`embed_fn` returned {output.shape[1]}-d embeddings for images from {start}, "
                f"{embeddings.shape[1]}-d before"
            )
        embeddings[start:start + len(batch)] = output
        start += len(batch)
        if progress_bar is not None:
            progress_bar.update(start)
    if start != total:
        raise ValueError(f"embedded {start} images, expected {total}")
    return embeddings


def _call(embed_fn, batch, start):
    import keras

    output = embed_fn(batch)
    try:
        output = np.asarray(keras.ops.convert_to_numpy(output), dtype=np.float32)
    except Exception as error:
        raise ValueError(
            f"`embed_fn` must return one (B, D) array, got {type(output).__name__}: {error}"
        ) from error
    if output.ndim != 2 or output.shape[0] != len(batch):
        raise ValueError(
            f"`embed_fn` must map a batch of {len(batch)} images to ({len(batch)}, D), got "
            f"shape {output.shape}"
        )
    if not np.isfinite(output).all():
        raise ValueError(
            f"`embed_fn` returned non-finite embeddings for images "
            f"{start}..{start + len(batch) - 1}"
        )
    return output


def _l2_normalize(embeddings):
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return (embeddings / np.maximum(norms, 1e-12)).astype(np.float32)
