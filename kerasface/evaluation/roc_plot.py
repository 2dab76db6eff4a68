"""ROC curves of one or several verification results as a PNG, FAR on a log axis."""

import numpy as np

from kerasface.visualization.headless_figure import headless_figure, save_png

MAX_PLOTTED_POINTS = 2000


def plot_roc(results, path, title="Face verification ROC"):
    """Save ROC curves (TAR against log-scale FAR) to a PNG file.

    Uses Matplotlib's Agg canvas directly, so it works headless and leaves pyplot's global
    backend alone.

    Args:
        results: a :class:`VerificationResult`, or a dict name -> ``VerificationResult`` or
            ``(fpr, tpr)`` arrays.
        path: the PNG file to write (parent folders are created).
        title: figure title.

    Returns:
        ``path``.
    """

    from kerasface.evaluation.verification import VerificationResult, thin_roc

    if isinstance(results, VerificationResult):
        results = {results.name or "model": results}
    if not isinstance(results, dict) or not results:
        raise TypeError(
            "`results` must be a VerificationResult or a non-empty dict name -> "
            f"VerificationResult or (fpr, tpr), got {type(results).__name__}"
        )

    figure = headless_figure((6, 5))
    axes = figure.add_subplot()
    smallest_far = 1.0
    for name, result in results.items():
        fpr, tpr, label = _curve(name, result)
        # Millions of points draw no better than a thousand spaced evenly in log-FAR.
        fpr, tpr = thin_roc(fpr, tpr, max_points=MAX_PLOTTED_POINTS)
        # A log axis cannot show FAR = 0; those points carry no information there anyway.
        shown = fpr > 0
        if not shown.any():
            raise ValueError(f"ROC curve {name!r} has no point with FAR > 0 to plot")
        smallest_far = min(smallest_far, fpr[shown].min())
        axes.plot(fpr[shown], tpr[shown], label=label, linewidth=1.5)
    axes.set_xscale("log")
    axes.set_xlim(smallest_far, 1.0)
    axes.set_ylim(0.0, 1.01)
    axes.set_xlabel("False accept rate (FAR)")
    axes.set_ylabel("True accept rate (TAR)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right")
    return save_png(figure, path)


def _curve(name, result):
    from kerasface.evaluation.verification import VerificationResult

    if isinstance(result, VerificationResult):
        if result.fpr is None or result.tpr is None:
            raise ValueError(f"VerificationResult {name!r} has no ROC arrays (fpr/tpr are None)")
        label = f"{name} (AUC {result.auc:.4f}, acc {100 * result.accuracy:.2f}%)"
        return np.asarray(result.fpr, float), np.asarray(result.tpr, float), label
    try:
        fpr, tpr = result
    except (TypeError, ValueError):
        raise TypeError(
            f"ROC entry {name!r} must be a VerificationResult or (fpr, tpr), got "
            f"{type(result).__name__}"
        ) from None
    fpr, tpr = np.asarray(fpr, float), np.asarray(tpr, float)
    if fpr.shape != tpr.shape or fpr.ndim != 1:
        raise ValueError(
            f"ROC entry {name!r}: fpr and tpr must be 1-D of equal length, got {fpr.shape} and "
            f"{tpr.shape}"
        )
    return fpr, tpr, str(name)
