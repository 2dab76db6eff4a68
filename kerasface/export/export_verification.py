"""Verification accuracy of an exported file next to its Keras model on real pairs."""

import math

from kerasface.export.runtimes import open_runner, row_cosines

# TAR@FAR operating points reported next to accuracy (verification sets of a few thousand
# pairs cannot measure lower FARs).
VERIFY_FARS = (1e-2, 1e-3)


def verify_export(model, exported, vset, flip=False, batch_size=64, fars=VERIFY_FARS,
                  max_accuracy_drop=None, keras_evaluation=None):
    """Evaluate an exported file and the Keras model it came from on one verification set.

    Both are run through ``kerasface.evaluation.evaluate_set`` on the set's images; the
    exported file's runner is the ``embed_fn`` (normalised float32 faces in). Besides
    the two sets of metrics, the per-image cosine between exported and Keras embeddings
    measures how far quantisation moved each face.

    Args:
        model: the Keras embedding model (reference).
        exported: a runner from ``kerasface.export.runtimes`` or a .tflite/.onnx path or
            SavedModel directory.
        vset: a ``VerificationSet`` or a spec ``[NAME=]FILE[:ROOT]`` for ``VerificationSet.load``.
        flip: flip test for both (fused embedding of each face and its mirror).
        batch_size: images per call.
        fars: FAR targets for TAR@FAR.
        max_accuracy_drop: accuracy points (percent) the export may lose; None only reports.
        keras_evaluation: an earlier ``SetEvaluation`` of ``model`` on ``vset`` with the same
            ``flip`` and ``fars``, to skip recomputing it (several exports, one model).

    Returns:
        JSON-ready dict: ``set``, ``source``, ``root``, ``exported`` (the file), ``num_pairs``,
        ``num_images``, ``flip``, ``keras`` and ``exported_metrics``
        (``VerificationResult.to_dict()`` of each), ``accuracy_drop_points``
        (keras minus exported, in percentage points), ``cosine`` (``mean``/``min`` over the
        set's images), ``max_accuracy_drop`` and ``passed`` (None without a limit).
    """
    from kerasface.evaluation import VerificationSet, evaluate_set

    if not isinstance(vset, VerificationSet):
        vset = VerificationSet.load(vset)
    if max_accuracy_drop is not None and not max_accuracy_drop >= 0:
        raise ValueError(f"`max_accuracy_drop` must be >= 0 points, got {max_accuracy_drop}")
    runner = open_runner(exported)
    reference = keras_evaluation or evaluate_set(
        model, vset, flip=flip, batch_size=batch_size, fars=fars
    )
    candidate = evaluate_set(runner, vset, flip=flip, batch_size=batch_size, fars=fars)
    cosine = row_cosines(reference.embeddings, candidate.embeddings)
    drop = 100.0 * (reference.result.accuracy - candidate.result.accuracy)
    return {
        "set": vset.name,
        "source": vset.source,
        "root": vset.root,
        "exported": str(getattr(runner, "path", exported)),
        "num_pairs": int(len(vset)),
        "num_images": int(len(vset.images)),
        "flip": bool(flip),
        "keras": reference.result.to_dict(),
        "exported_metrics": candidate.result.to_dict(),
        "accuracy_drop_points": float(drop),
        "cosine": {"mean": float(cosine.mean()), "min": float(cosine.min())},
        "max_accuracy_drop": None if max_accuracy_drop is None else float(max_accuracy_drop),
        "passed": None if max_accuracy_drop is None else bool(drop <= max_accuracy_drop),
    }


def format_verification_table(result):
    """The side-by-side text table of one ``verify_export`` result."""
    keras_metrics, exported_metrics = result["keras"], result["exported_metrics"]
    rows = [("accuracy", _accuracy), ("best threshold", lambda m: _number(m["threshold"], "{:.4f}"))]
    for far in keras_metrics["tar_at_far"]:
        rows.append((f"TAR@FAR={float(far):.0e}", lambda m, far=far: _tar(m, far)))
    rows.append(("AUC", lambda m: _number(m["auc"], "{:.4f}")))
    title = (
        f"verification on {result['set']} ({result['num_pairs']} pairs, {result['num_images']} "
        f"images{', flip test' if result['flip'] else ''}):"
    )
    width = max(len(name) for name, _ in rows)
    lines = [title, f"  {'':<{width}}  {'keras':>16}  {'exported':>16}"]
    for name, cell in rows:
        lines.append(f"  {name:<{width}}  {cell(keras_metrics):>16}  {cell(exported_metrics):>16}")
    lines.append(f"  accuracy change: {-result['accuracy_drop_points']:+.2f} points (exported - keras)")
    lines.append(
        f"  cosine exported vs keras over the images: mean {result['cosine']['mean']:.4f}, "
        f"min {result['cosine']['min']:.4f}"
    )
    if result["passed"] is not None:
        verdict = "PASSED" if result["passed"] else "FAILED"
        lines.append(
            f"  accuracy drop {result['accuracy_drop_points']:.2f} points, allowed "
            f"{result['max_accuracy_drop']:.2f}: {verdict}"
        )
    return "\n".join(lines)


def _accuracy(metrics):
    if metrics["accuracy"] is None:
        return "n/a"
    return f"{100 * metrics['accuracy']:.2f}% +- {100 * (metrics['accuracy_std'] or 0):.2f}"


def _tar(metrics, far):
    tar = metrics["tar_at_far"][far]["tar"]
    return "n/a" if tar is None else f"{100 * tar:.2f}%"


def _number(value, pattern):
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)
