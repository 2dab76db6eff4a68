"""Matplotlib figures drawn on the Agg canvas: headless, and pyplot's global state left alone."""

import os


def headless_figure(figsize):
    """A ``matplotlib.figure.Figure`` attached to an Agg canvas (no display, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize)
    FigureCanvasAgg(figure)
    return figure


def save_png(figure, path, dpi=120, tight=True):
    """Write ``figure`` to the PNG file ``path`` (parent folders created); returns ``path``."""
    path = os.fspath(path)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    figure.savefig(path, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    return path
