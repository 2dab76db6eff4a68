"""Measure float32 vs post-training int8 vs quantisation-aware int8 on real faces and pairs."""

import time
from pathlib import Path

import numpy as np

from kerasface.data.preprocessing import normalize_numpy
from kerasface.export.runtimes import row_cosines


def embedding_agreement(reference, embeddings):
    """``{"mean": , "min": }`` cosine between rows of two (N, D) embedding arrays (re-normalised)."""
    cosine = row_cosines(reference, embeddings)
    return {"mean": float(cosine.mean()), "min": float(cosine.min()), "faces": int(len(cosine))}


def describe_variant(name, embed_fn, reference, parity_images, vset=None, path=None, fars=(1e-2, 1e-3)):
    """One row of the comparison: cosine to float32 on ``parity_images``, pair metrics, file size.

    Args:
        name: label of the variant.
        embed_fn: callable on normalised float32 (B, 112, 112, 3) -> (B, D).
        reference: float32 (N, D) embeddings of ``parity_images`` by the float model.
        parity_images: uint8 (N, 112, 112, 3) faces.
        vset: optional ``VerificationSet`` evaluated with ``evaluate_set``.
        path: the file behind ``embed_fn`` (its size is reported).
        fars: FAR targets for TAR@FAR.

    Returns:
        dict with ``cosine_to_fp32``, ``pairs`` (accuracy, std, TAR@FAR, AUC), ``size_bytes``, ``seconds``.
    """
    from kerasface.evaluation import evaluate_set

    start = time.perf_counter()
    row = {"variant": name}
    embeddings = np.asarray(embed_fn(normalize_numpy(parity_images)), dtype=np.float32)
    row["cosine_to_fp32"] = embedding_agreement(reference, embeddings)
    if vset is not None:
        result = evaluate_set(embed_fn, vset, fars=fars).result
        row["pairs"] = {
            "set": vset.name,
            "accuracy": float(result.accuracy),
            "accuracy_std": float(result.accuracy_std),
            "auc": float(result.auc),
            "tar_at_far": {str(far): float(point.tar) for far, point in result.tar_at_far.items()},
        }
    if path is not None:
        row["path"] = str(path)
        row["size_bytes"] = int(Path(path).stat().st_size)
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def keras_embed_function(model, batch_size=64):
    """An embed function (normalised floats -> (B, D) numpy) running ``model`` in inference mode."""
    import keras

    def embed(images, batch_size=batch_size):
        outputs = [
            keras.ops.convert_to_numpy(model(images[s : s + batch_size], training=False))
            for s in range(0, len(images), batch_size)
        ]
        return np.concatenate(outputs).astype(np.float32)

    return embed
