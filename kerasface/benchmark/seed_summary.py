"""Combine one ablation's per-seed result files into per-method statistics over seeds."""

import numpy as np


def summarize_seeds(runs, metrics):
    """Per method: every seed's entry, and each metric's mean, sample std and min/max over seeds.

    Args:
        runs: result dicts of one seed each, ``{"setup": {"seed": s, ...}, "methods":
            {method: entry}, "command": ...}`` (what the ``bench/*_ablation.py`` scripts write).
        metrics: ``{name: getter}``; a getter maps an entry to a number, or None when the
            entry has none (that seed is then left out of that metric).

    Returns:
        ``{"runs": runs, "summary": {method: {name: {"mean", "std", "min", "max", "n",
        "seeds"}}}, "commands": [...]}``; ``std`` is None for a single seed.
    """
    methods = {}
    for run in runs:
        for method, entry in run["methods"].items():
            methods.setdefault(method, []).append({"seed": run["setup"]["seed"], **entry})
    summary = {}
    for method, entries in methods.items():
        stats = {}
        for name, get in metrics.items():
            pairs = [(e["seed"], get(e)) for e in entries if get(e) is not None]
            if not pairs:
                continue
            values = [value for _, value in pairs]
            stats[name] = {
                "mean": float(np.mean(values)),
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                "min": float(min(values)),
                "max": float(max(values)),
                "n": len(values),
                "seeds": [seed for seed, _ in pairs],
            }
        summary[method] = stats
    return {"runs": runs, "summary": summary, "commands": [run.get("command") for run in runs]}


def format_seed_cell(stats):
    """One table cell for a metric's seed statistics (fractions shown as %): "65.27 ± 1.83 (63.1–66.9, n=3)"."""
    if not stats:
        return "—"
    spread = f" ± {100 * stats['std']:.2f}" if stats["std"] is not None else ""
    return f"{100 * stats['mean']:.2f}{spread} ({100 * stats['min']:.1f}–{100 * stats['max']:.1f}, n={stats['n']})"
