"""CMC curves (identification rate against rank) of one or several models as a PNG."""

import numpy as np

from kerasface.visualization.headless_figure import headless_figure, save_png


def plot_cmc(results, path, title="Face identification CMC"):
    """Save CMC curves (identification rate against rank) to a PNG file.

    Uses Matplotlib's Agg canvas directly, so it works headless and leaves pyplot's global
    backend alone.

    Args:
        results: an :class:`IdentificationResult`, or a dict name -> ``IdentificationResult``
            or CMC array (``cmc[k-1]`` = rate within rank k).
        path: the PNG file to write (parent folders are created).
        title: figure title.

    Returns:
        ``path``.
    """

    from kerasface.evaluation.identification import IdentificationResult

    if isinstance(results, IdentificationResult):
        results = {results.name or results.protocol: results}
    if not isinstance(results, dict) or not results:
        raise TypeError(
            "`results` must be an IdentificationResult or a non-empty dict name -> "
            f"IdentificationResult or CMC array, got {type(results).__name__}"
        )

    figure = headless_figure((6, 5))
    axes = figure.add_subplot()
    longest, lowest = 1, 100.0
    for name, result in results.items():
        cmc, label = _curve(name, result)
        ranks = np.arange(1, len(cmc) + 1)
        longest, lowest = max(longest, len(cmc)), min(lowest, 100 * cmc.min())
        axes.plot(ranks, 100 * cmc, marker="o" if len(cmc) <= 30 else None, markersize=3,
                  linewidth=1.5, label=label)
    if longest > 30:
        # Long CMCs (rank 1..1000) are read at rank 1, 10, 100: a log axis keeps those apart.
        axes.set_xscale("log")
    axes.set_xlim(1, longest)
    axes.set_ylim(max(0.0, lowest - 5.0), 100.5)
    axes.set_xlabel("Rank")
    axes.set_ylabel("Identification rate (%)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="best")
    return save_png(figure, path)


def _curve(name, result):
    from kerasface.evaluation.identification import IdentificationResult

    if isinstance(result, IdentificationResult):
        cmc = np.asarray(result.cmc, float)
        label = f"{name} (rank-1 {100 * result.rank1:.2f}%, {result.num_distractors} distractors)"
    else:
        try:
            cmc = np.asarray(result, float)
        except (TypeError, ValueError):
            raise TypeError(
                f"CMC entry {name!r} must be an IdentificationResult or an array of rates, got "
                f"{type(result).__name__}"
            ) from None
        label = str(name)
    if cmc.ndim != 1 or cmc.size == 0:
        raise ValueError(f"CMC entry {name!r} must be a non-empty 1-D array, got shape {cmc.shape}")
    if not np.all(np.isfinite(cmc)) or cmc.min() < 0 or cmc.max() > 1:
        raise ValueError(f"CMC entry {name!r} must hold rates in [0, 1], got {cmc.tolist()[:5]}...")
    return cmc, label
