"""Figures and tables about kerasface components (margin-head target-logit curves, LATSE reconstructions)."""

from kerasface.visualization.head_curves import (
    TABLE_ANGLES,
    group_identical,
    head_label,
    head_target_curves,
    is_monotone,
    plot_head_curves,
    target_logit_table,
    theta_grid,
    values_at,
)
from kerasface.visualization.reconstruction_grid import reconstruction_grid, save_reconstruction_grid

__all__ = [
    "TABLE_ANGLES",
    "group_identical",
    "head_label",
    "head_target_curves",
    "is_monotone",
    "plot_head_curves",
    "reconstruction_grid",
    "save_reconstruction_grid",
    "target_logit_table",
    "theta_grid",
    "values_at",
]
