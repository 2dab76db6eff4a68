"""Evaluate an embedding model on a :class:`VerificationSet`, caching the embeddings to ``.npy``."""

import dataclasses
import hashlib

import numpy as np

from kerasface.evaluation.verification import DEFAULT_FARS, VerificationResult, evaluate_scores
from kerasface.evaluation.verification_set import VerificationSet


@dataclasses.dataclass
class SetEvaluation:
    """A model's embeddings, pair scores and metrics on one verification set.

    Args:
        set: the :class:`VerificationSet`.
        embeddings: ``(M, D)`` float32 L2-normalised embedding of each distinct image.
        scores: ``(N,)`` float64 cosine score of each pair.
        result: the :class:`VerificationResult` of those scores.
        cache_path: the ``.npy`` file the embeddings were read from or written to, if any.
        from_cache: True when the embeddings came from ``cache_path`` (no model call).
    """

    set: VerificationSet
    embeddings: np.ndarray
    scores: np.ndarray
    result: VerificationResult
    cache_path: str = None
    from_cache: bool = False

    def false_accepts(self, k=8):
        """Indices of the ``k`` impostor pairs with the highest scores, worst first."""
        impostors = np.flatnonzero(~self.set.issame)
        order = np.argsort(-self.scores[impostors], kind="stable")
        return impostors[order[:k]].tolist()

    def false_rejects(self, k=8):
        """Indices of the ``k`` genuine pairs with the lowest scores, worst first."""
        genuine = np.flatnonzero(self.set.issame)
        order = np.argsort(self.scores[genuine], kind="stable")
        return genuine[order[:k]].tolist()


def evaluate_set(embed_fn, vset, flip=False, batch_size=64, fars=DEFAULT_FARS, cache_dir=None,
                 model_id=None, progress=False):
    """Embed every distinct image of ``vset`` once, score its pairs and compute all metrics.

    Args:
        embed_fn: a ``keras.Model`` or a callable float32 normalised ``(B, 112, 112, 3)`` ->
            ``(B, D)`` (see :func:`embed_images`).
        vset: a :class:`VerificationSet`, or a spec for :meth:`VerificationSet.load`.
        flip: fuse each embedding with that of the mirrored image (flip test).
        batch_size: images per model call.
        fars: FAR targets for TAR@FAR.
        cache_dir: folder of ``.npy`` embedding caches; a cache made by the same model (by
            ``model_id``) with the same flip setting on the same set is used instead of the model.
        model_id: identifies the model in cache names; default for a ``keras.Model``: a hash of
            its weights and config. Required for other callables when ``cache_dir`` is given.
        progress: show a progress bar while embedding.

    Returns:
        a :class:`SetEvaluation`.
    """
    from kerasface.evaluation.embed_images import embed_images
    from kerasface.evaluation.embedding_cache import EmbeddingCache

    if not isinstance(vset, VerificationSet):
        vset = VerificationSet.load(vset)
    cache_path, from_cache = None, False
    if cache_dir is not None:
        cache = EmbeddingCache(cache_dir, model_id or keras_model_id(embed_fn))
        embeddings, cache_path, from_cache = cache.embed(
            embed_fn, vset.images, vset.name, flip=flip, batch_size=batch_size,
            names=vset.image_names(), progress=progress, key=vset.fingerprint,
        )
    else:
        embeddings = embed_images(embed_fn, vset.images, batch_size=batch_size, flip=flip,
                                  names=vset.image_names(), progress=progress)
    scores = vset.pair_scores(embeddings)
    name = f"{vset.name} (flip)" if flip else vset.name
    result = evaluate_scores(scores, vset.issame, vset.folds, fars, name=name)
    return SetEvaluation(vset, embeddings, scores, result, cache_path, from_cache)


def keras_model_id(model):
    """Hash of a ``keras.Model``'s config and weights (changes whenever either does)."""
    import json

    import keras

    if not isinstance(model, keras.Model):
        raise ValueError(
            "an embedding cache needs `model_id` for a model that is not a keras.Model, got "
            f"{type(model).__name__}"
        )
    digest = hashlib.sha1(json.dumps(model.get_config(), sort_keys=True, default=str).encode())
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]
