"""Figures and tables about kerasface components (margin-head target-logit curves)."""

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

__all__ = [
    "TABLE_ANGLES",
    "group_identical",
    "head_label",
    "head_target_curves",
    "is_monotone",
    "plot_head_curves",
    "target_logit_table",
    "theta_grid",
    "values_at",
]
