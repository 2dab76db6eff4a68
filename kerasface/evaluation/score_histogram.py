"""Genuine vs impostor score histograms of one or several models on a set, as a PNG."""

import math

import numpy as np

from kerasface.visualization.headless_figure import headless_figure, save_png


def plot_score_histograms(evaluations, path, title=None, bins=60):
    """Save genuine and impostor cosine-score histograms, one panel per model, to a PNG file.

    Every panel uses the same bins (spanning all models' scores) and shows each class as the
    fraction of its own pairs per bin, so a set with far more impostors than genuine pairs
    still shows both shapes; the k-fold threshold is drawn as a vertical line. Uses
    Matplotlib's Agg canvas directly: works headless and leaves pyplot's backend alone.

    Args:
        evaluations: a :class:`~kerasface.evaluation.set_evaluation.SetEvaluation`, or a dict
            model name -> ``SetEvaluation`` (anything with ``scores``, ``set.issame`` and
            ``result.threshold``) or ``(scores, issame, threshold)``.
        path: the PNG file to write (parent folders are created).
        title: figure title (default: the set's name).
        bins: number of bins shared by all panels.

    Returns:
        ``path``.
    """

    if not isinstance(evaluations, dict):
        evaluations = {_default_name(evaluations): evaluations}
    if not evaluations:
        raise ValueError("`evaluations` is empty: nothing to plot")
    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f"`bins` must be a positive int, got {bins!r}")
    panels = [(str(name), *_unpack(name, item)) for name, item in evaluations.items()]
    low = min(scores.min() for _, scores, _, _ in panels)
    high = max(scores.max() for _, scores, _, _ in panels)
    if high <= low:
        high = low + 1e-6
    edges = np.linspace(low, high, bins + 1)

    columns = 2 if len(panels) == 4 else min(len(panels), 3)
    rows = math.ceil(len(panels) / columns)
    figure = headless_figure((4.6 * columns, 3.4 * rows + 0.3))
    axes_grid = figure.subplots(rows, columns, squeeze=False)
    for index, (name, scores, issame, threshold) in enumerate(panels):
        axes = axes_grid[index // columns][index % columns]
        genuine, impostor = scores[issame], scores[~issame]
        for values, label, color in ((impostor, "impostor", "tab:red"),
                                     (genuine, "genuine", "tab:green")):
            # Weights 1/n: each class sums to 1, whatever its number of pairs.
            # One filled outline per class rather than a patch per bar: far cheaper to draw.
            axes.hist(values, bins=edges, weights=np.full(len(values), 1.0 / len(values)),
                      histtype="stepfilled", color=color, alpha=0.5,
                      label=f"{label} ({len(values)})")
        if threshold is not None and math.isfinite(threshold):
            axes.axvline(threshold, color="black", linestyle="--", linewidth=1.2,
                         label=f"threshold {threshold:.3f}")
        axes.set_xlim(edges[0], edges[-1])
        axes.set_title(name, fontsize=10)
        axes.set_xlabel("cosine score")
        axes.set_ylabel("fraction of pairs")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8, loc="upper left")
    for index in range(len(panels), rows * columns):
        axes_grid[index // columns][index % columns].set_visible(False)
    first = next(iter(evaluations.values()))
    figure.suptitle(title if title is not None else _set_name(first) or "Score distributions")
    # Fixed margins: tight_layout would cost a whole extra draw of every panel.
    figure.subplots_adjust(left=0.08 if columns > 1 else 0.15, right=0.98, wspace=0.28,
                           bottom=0.5 / figure.get_figheight(),
                           top=1 - 0.7 / figure.get_figheight(), hspace=0.45)
    return save_png(figure, path, dpi=110, tight=False)


def _unpack(name, item):
    if isinstance(item, tuple):
        if len(item) != 3:
            raise TypeError(
                f"histogram entry {name!r}: expected (scores, issame, threshold), got a tuple of "
                f"{len(item)}"
            )
        scores, issame, threshold = item
    else:
        try:
            scores, issame, threshold = item.scores, item.set.issame, item.result.threshold
        except AttributeError:
            raise TypeError(
                f"histogram entry {name!r} must be a SetEvaluation or (scores, issame, "
                f"threshold), got {type(item).__name__}"
            ) from None
    scores = np.asarray(scores, np.float64)
    issame = np.asarray(issame, bool)
    if scores.ndim != 1 or scores.shape != issame.shape:
        raise ValueError(
            f"histogram entry {name!r}: scores and issame must be 1-D of equal length, got "
            f"{scores.shape} and {issame.shape}"
        )
    if not np.isfinite(scores).all():
        raise ValueError(f"histogram entry {name!r}: scores contain NaN or infinity")
    if issame.all() or not issame.any():
        raise ValueError(
            f"histogram entry {name!r}: needs both genuine and impostor pairs, got "
            f"{int(issame.sum())} genuine of {len(issame)}"
        )
    return scores, issame, None if threshold is None else float(threshold)


def _set_name(item):
    vset = getattr(item, "set", None)
    return getattr(vset, "name", None)


def _default_name(item):
    result = getattr(item, "result", None)
    return getattr(result, "name", None) or _set_name(item) or "model"
