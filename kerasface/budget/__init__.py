"""Model budgets: parameters, MACs, FLOPs and sizes, checked against limits."""

from kerasface.budget.budget_check import (
    BudgetReport,
    check,
    file_size_bytes,
    format_quantity,
    model_size_bytes,
    parse_quantity,
)
from kerasface.budget.flop_counter import ModelCost, OpCost, count_macs, count_params

__all__ = [
    "BudgetReport",
    "ModelCost",
    "OpCost",
    "check",
    "count_macs",
    "count_params",
    "file_size_bytes",
    "format_quantity",
    "model_size_bytes",
    "parse_quantity",
]
