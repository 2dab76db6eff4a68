"""Target-logit curves of the margin heads against theta_y, as a table and a PNG."""

import math

import numpy as np

from kerasface.visualization.headless_figure import headless_figure, save_png

# Angles (degrees) of the summary table; the curve grid always contains them exactly.
TABLE_ANGLES = (0, 30, 60, 90, 120, 150, 180)

# A curve counts as monotone when it never rises by more than this between grid points
# (float32 logits, and heads floor sin(theta) near 0 and pi).
MONOTONE_TOLERANCE = 1e-5

# Small sizes suffice: only heads whose curve reads built state need a kernel at all.
_NUM_CLASSES = 10
_EMBEDDING_SIZE = 8


def head_target_curves(names=None, num_points=361, head_kwargs=None):
    """Unscaled target logit against theta_y in [0, pi] for each head at its defaults.

    Each head is built with ``kerasface.heads.get(name, num_classes=10, **head_kwargs[name])``
    on 8-d embeddings and evaluated with ``head.target_curve(theta)``. A head that cannot be
    drawn this way (it fails to construct or build, has no ``target_curve``, raises, or gives
    a wrong shape or non-finite values) is returned in ``skipped`` with the reason, never
    dropped silently.

    Args:
        names: head names, or one name (default: every registered head, ``kerasface.heads.list()``).
        num_points: grid points over [0, pi], >= 2; the grid also holds ``TABLE_ANGLES``.
        head_kwargs: optional dict name -> extra constructor keyword arguments.

    Returns:
        ``(curves, skipped)``: ``curves`` is a dict name -> ``(theta, values)``, two float64
        arrays of equal length (theta in radians, ascending); ``skipped`` is a dict
        name -> reason (str). Both keep the order of ``names``.

    Raises:
        ValueError: an unknown head name (naming it and the registered ones), or a bad
            ``num_points``.
    """
    from kerasface import heads

    available = heads.list()
    if names is None:
        names = available
    elif isinstance(names, str):
        names = [names]
    names = [str(name) for name in dict.fromkeys(names)]
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ValueError(
            f"unknown head name(s) {', '.join(repr(n) for n in unknown)}; available: {', '.join(available)}"
        )
    if int(num_points) != num_points or num_points < 2:
        raise ValueError(f"`num_points` must be an integer >= 2, got {num_points}")
    theta = theta_grid(int(num_points))
    head_kwargs = head_kwargs or {}
    curves, skipped = {}, {}
    for name in names:
        try:
            curves[name] = (theta, _evaluate(heads, name, theta, head_kwargs.get(name, {})))
        except _Skip as reason:
            skipped[name] = str(reason)
    return curves, skipped


def theta_grid(num_points):
    """``num_points`` angles evenly spaced over [0, pi], plus ``TABLE_ANGLES`` exactly (radians)."""
    grid = np.linspace(0.0, math.pi, int(num_points))
    return np.unique(np.concatenate([grid, np.deg2rad(np.asarray(TABLE_ANGLES, dtype=np.float64))]))


class _Skip(Exception):
    pass


def _evaluate(heads, name, theta, kwargs):
    import keras

    try:
        head = heads.get(name, num_classes=_NUM_CLASSES, **kwargs)
    except Exception as e:
        raise _Skip(f"cannot be constructed with num_classes={_NUM_CLASSES}: {type(e).__name__}: {e}") from None
    if not callable(getattr(head, "target_curve", None)):
        raise _Skip(f"{type(head).__name__} has no target_curve (not a MarginHead)")
    # Heads whose curve reads state (adaptive scale, running means) need their weights.
    build_error = None
    try:
        head.build([(None, _EMBEDDING_SIZE), (None,)])
    except Exception as e:
        build_error = f"{type(e).__name__}: {e}"
    try:
        values = keras.ops.convert_to_numpy(head.target_curve(theta.astype(np.float32)))
    except Exception as e:
        reason = f"target_curve failed: {type(e).__name__}: {e}"
        if build_error:
            reason += f" (and build failed: {build_error})"
        raise _Skip(reason) from None
    values = np.asarray(values, dtype=np.float64)
    if values.shape != theta.shape:
        raise _Skip(f"target_curve returned shape {values.shape} for {theta.shape[0]} angles")
    bad = ~np.isfinite(values)
    if bad.any():
        first = math.degrees(theta[np.argmax(bad)])
        raise _Skip(f"target_curve is not finite at {bad.sum()} angle(s), first at {first:.1f} deg")
    return values


def head_label(name, max_params=3, **kwargs):
    """``"arcface (margin=0.5)"``: the name and up to ``max_params`` of the head's own defaults.

    Shows the scalar constructor arguments that ``MarginHead`` does not have (so no scale,
    initializers or dtype), in ``get_config`` order; False/None ones are left out and True
    ones show as their bare name. Falls back to the bare name when the head cannot be
    constructed.
    """
    from kerasface import heads
    from kerasface.heads import MarginHead

    try:
        config = heads.get(name, num_classes=_NUM_CLASSES, **kwargs).get_config()
        base = set(MarginHead(num_classes=_NUM_CLASSES).get_config())
    except Exception:
        return str(name)
    parts = []
    for key, value in config.items():
        if key in base or value is None or value is False:
            continue
        if isinstance(value, bool):
            parts.append(key)
        elif isinstance(value, (int, float)):
            parts.append(f"{key}={value:g}")
        elif isinstance(value, str) and len(value) <= 20:
            parts.append(f"{key}={value}")
    if len(parts) > max_params:
        parts = parts[:max_params] + ["..."]
    return f"{name} ({', '.join(parts)})" if parts else str(name)


def group_identical(curves, tolerance=1e-5):
    """Heads with the same curve, in first-seen order: a list of ``(names, theta, values)``.

    Many heads share a target curve (every ArcFace variant whose change is in the
    negatives), and drawn separately they hide each other.
    """
    groups = []
    for name, (theta, values) in curves.items():
        theta, values = np.asarray(theta, dtype=np.float64), np.asarray(values, dtype=np.float64)
        for names, other_theta, other_values in groups:
            if (
                other_theta.shape == theta.shape
                and np.allclose(other_theta, theta, rtol=0.0, atol=1e-12)
                and np.allclose(other_values, values, rtol=0.0, atol=tolerance)
            ):
                names.append(name)
                break
        else:
            groups.append(([name], theta, values))
    return groups


def _join_names(first_label, names, width=48):
    """``"arcface (m=0.5) = arcnegface = ..."`` wrapped onto lines of about ``width`` characters."""
    lines = [first_label]
    for name in names:
        if len(lines[-1]) + len(name) + 3 > width:
            lines.append(f"= {name}")
        else:
            lines[-1] += f" = {name}"
    return "\n".join(lines)


def is_monotone(values, tolerance=MONOTONE_TOLERANCE):
    """True when ``values`` never increases by more than ``tolerance`` from one point to the next."""
    return bool(np.all(np.diff(np.asarray(values, dtype=np.float64)) <= tolerance))


def values_at(theta, values, angles_deg=TABLE_ANGLES):
    """``values`` at the given angles (degrees): exact grid points, else linear interpolation."""
    theta = np.asarray(theta, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    out = []
    for angle in np.deg2rad(np.asarray(angles_deg, dtype=np.float64)):
        hit = np.flatnonzero(np.isclose(theta, angle, rtol=0.0, atol=1e-12))
        out.append(values[hit[0]] if hit.size else float(np.interp(angle, theta, values)))
    return np.asarray(out)


def target_logit_table(curves, angles_deg=TABLE_ANGLES, reference=True, digits=4):
    """A Markdown table: one row per head, the unscaled target logit at ``angles_deg``, monotone yes/no.

    Args:
        curves: dict name -> ``(theta, values)`` as returned by :func:`head_target_curves`.
        angles_deg: columns, in degrees.
        reference: add a first row for the plain softmax target, cos(theta).
        digits: decimals shown.

    Returns:
        The table as a string (no trailing newline).
    """
    def cell(value):
        # round first so that -4e-8 prints as 0.0000, not -0.0000
        return f"{round(float(value), digits) + 0.0:.{digits}f}"

    header = ["head"] + [f"{a:g}°" for a in angles_deg] + ["monotone"]
    rows = []
    if reference:
        cosine = np.cos(np.deg2rad(np.asarray(angles_deg, dtype=np.float64)))
        rows.append(["softmax reference cos θ"] + [cell(v) for v in cosine] + ["yes"])
    for name, (theta, values) in curves.items():
        shown = values_at(theta, values, angles_deg)
        rows.append([str(name)] + [cell(v) for v in shown] + ["yes" if is_monotone(values) else "no"])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def plot_head_curves(curves, path, labels=None, x_unit="degrees", title=None, reference=True):
    """Save the target-logit curves (AirFace Fig. 2 / LATSE Fig. 3 style) to a PNG file.

    Heads with identical curves (within 1e-5) share one line, labelled ``a = b = c``; heads
    equal to cos(theta) join the softmax reference line. Uses Matplotlib's Agg canvas
    directly, so it works headless and leaves pyplot's global backend alone.

    Args:
        curves: non-empty dict name -> ``(theta, values)``, theta in radians.
        path: the PNG file to write (parent folders are created).
        labels: optional dict name -> legend label (default: the name).
        x_unit: ``"degrees"`` or ``"radians"`` for the x axis.
        title: figure title (a default one says the logits are unscaled).
        reference: also draw the plain softmax target cos(theta), dashed black.

    Returns:
        ``path``.
    """

    if not isinstance(curves, dict) or not curves:
        raise ValueError(
            f"`curves` must be a non-empty dict name -> (theta, values), got {type(curves).__name__} "
            f"of length {len(curves) if hasattr(curves, '__len__') else '?'}"
        )
    if x_unit not in ("degrees", "radians"):
        raise ValueError(f"`x_unit` must be 'degrees' or 'radians', got {x_unit!r}")
    for name, (theta, values) in curves.items():
        theta, values = np.asarray(theta), np.asarray(values)
        if theta.shape != values.shape or theta.ndim != 1:
            raise ValueError(
                f"curve {name!r}: theta and values must be 1-D of equal length, got {theta.shape} and {values.shape}"
            )
    labels = labels or {}

    def x_of(theta):
        return np.degrees(theta) if x_unit == "degrees" else np.asarray(theta)

    groups = group_identical(curves)
    like_cosine = []
    if reference:
        like_cosine = [g for g in groups if np.allclose(g[2], np.cos(g[1]), rtol=0.0, atol=1e-5)]
        groups = [g for g in groups if not any(g is c for c in like_cosine)]

    figure = headless_figure((10.5, 6))
    axes = figure.add_subplot()
    if reference:
        theta = np.linspace(0.0, math.pi, 361)
        label = _join_names("softmax reference cos θ", [n for names, _, _ in like_cosine for n in names])
        # on top (zorder), so it stays visible dashed over any head drawn under it
        axes.plot(x_of(theta), np.cos(theta), "k--", linewidth=1.5, label=label, zorder=3)
    colors = [f"C{i}" for i in range(10)]
    styles = ["-", "-.", ":"]
    for i, (names, theta, values) in enumerate(groups):
        label = _join_names(labels.get(names[0], str(names[0])), names[1:])
        axes.plot(
            x_of(theta), values, color=colors[i % 10], linestyle=styles[(i // 10) % 3], linewidth=1.6, label=label
        )
    if x_unit == "degrees":
        axes.set_xlim(0.0, 180.0)
        axes.set_xticks(np.arange(0, 181, 30))
        axes.set_xlabel("θ between feature and target class centre (degrees)")
    else:
        axes.set_xlim(0.0, math.pi)
        axes.set_xticks([0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4, math.pi])
        axes.set_xticklabels(["0", "π/4", "π/2", "3π/4", "π"])
        axes.set_xlabel("θ between feature and target class centre (radians)")
    axes.set_ylabel("target logit, unscaled (s = 1)")
    axes.set_title(title or "Target logit of each margin head at its defaults")
    axes.axhline(0.0, color="0.6", linewidth=0.8)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    return save_png(figure, path)
