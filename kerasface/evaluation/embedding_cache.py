"""Embeddings of a list of images kept as ``.npy`` per (model, images, flip): re-scoring is instant."""

import hashlib
import os
import warnings

import numpy as np


class EmbeddingCache:
    """A folder of ``.npy`` embedding files, one per model, image list and flip setting.

    The key of an image list hashes the paths with their sizes and modification times (encoded
    images: their bytes), so a replaced image never comes back from a stale file. Files are
    written under a temporary name and renamed; an unreadable or mis-shaped file is reported
    with a warning and recomputed.

    Args:
        folder: where the ``.npy`` files live (created on the first write).
        model_id: identifies the model (e.g. :func:`model_fingerprint` or
            :func:`keras_model_id`); part of every file name.
    """

    def __init__(self, folder, model_id):
        if not model_id:
            raise ValueError(f"an embedding cache needs a non-empty `model_id`, got {model_id!r}")
        self.folder = os.fspath(folder)
        self.model_id = str(model_id)

    def path(self, label, key, flip):
        """The cache file of an image list with content key ``key``."""
        return os.path.join(
            self.folder, f"{_safe(label)}-{key}-{_safe(self.model_id)[:16]}-flip{int(bool(flip))}.npy"
        )

    def load(self, path, num_images):
        """The cached ``(num_images, D)`` float32 embeddings at ``path``, or None."""
        if not os.path.isfile(path):
            return None
        try:
            embeddings = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            warnings.warn(f"{path}: unreadable embedding cache ({error}); recomputing it")
            return None
        if embeddings.ndim != 2 or len(embeddings) != num_images or embeddings.dtype != np.float32:
            warnings.warn(
                f"{path}: embedding cache holds {embeddings.dtype} {embeddings.shape}, expected "
                f"float32 ({num_images}, D); recomputing it"
            )
            return None
        return embeddings

    def save(self, path, embeddings):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        partial = f"{path}.partial-{os.getpid()}.npy"
        np.save(partial, np.asarray(embeddings, np.float32))
        os.replace(partial, path)
        return path

    def embed(self, embed_fn, images, label, flip=False, batch_size=64, names=None, progress=False,
              key=None):
        """Embeddings of ``images`` (paths or encoded bytes) from the cache, or computed and kept.

        Returns:
            ``(embeddings, path, from_cache)``.
        """
        from kerasface.evaluation.embed_images import embed_images

        path = self.path(label, key or images_key(images), flip)
        embeddings = self.load(path, len(images))
        if embeddings is not None:
            return embeddings, path, True
        embeddings = embed_images(embed_fn, images, batch_size=batch_size, flip=flip, names=names,
                                  progress=progress)
        self.save(path, embeddings)
        return embeddings, path, False


def images_key(images):
    """16-hex content key of an image list: paths with size and mtime, or the bytes themselves."""
    digest = hashlib.sha1(str(len(images)).encode())
    for image in images:
        if isinstance(image, (bytes, bytearray)):
            digest.update(hashlib.sha1(image).digest())
        else:
            stat = os.stat(image)
            digest.update(f"{os.fspath(image)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _safe(text):
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in str(text))
