"""Check a model's parameters, MACs, FLOPs and size against limits."""

import dataclasses
import math
import os
import re
from pathlib import Path

from kerasface.budget.flop_counter import ModelCost, count_macs, count_params

# Decimal units throughout: "20M" params is 20,000,000 and a "20 MB" model is 20,000,000 bytes.
MB = 1_000_000
_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_QUANTITY = re.compile(r"^\s*((?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]?)\s*$")
BYTES_PER_PARAM = {"fp32": 4, "fp16": 2, "int8": 1}


def parse_quantity(text):
    """``"1G"`` -> 1e9, ``"20M"``, ``"1.5k"``, ``"20"``; suffixes k/M/G/T, any case, decimal.

    Numbers (int/float) pass through. Raises ValueError naming the bad string.
    """
    if isinstance(text, bool):
        raise ValueError(f"expected a quantity such as '20M' or 1.5e9, got {text!r}")
    if isinstance(text, (int, float)):
        value = text
    else:
        match = _QUANTITY.match(str(text))
        if not match or match.group(2).lower() not in _SUFFIXES:
            raise ValueError(
                f"cannot parse quantity {text!r}: expected a number with an optional suffix "
                "k, M, G or T (e.g. '1G', '20M', '1.5k', '20')"
            )
        value = float(match.group(1)) * _SUFFIXES[match.group(2).lower()]
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"quantity must be a finite number >= 0, got {text!r}")
    return int(value) if float(value).is_integer() else float(value)


def format_quantity(value, digits=2):
    """1234567 -> ``"1.23M"``; values below 1000 print without a suffix."""
    for suffix, scale in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}f}{suffix}"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.{digits}f}"


def model_size_bytes(model, precision="fp32"):
    """Estimated weight bytes: ``fp32`` 4/param, ``fp16`` 2/param, ``int8`` ~1/param.

    Every weight counts, non-trainable BatchNorm statistics included. The int8 figure
    ignores quantisation scales and file-format overhead; see :func:`file_size_bytes` for
    a real file.

    Args:
        model: a built Keras model, or a parameter count (int).
        precision: one of ``"fp32"``, ``"fp16"``, ``"int8"``.
    """
    if precision not in BYTES_PER_PARAM:
        raise ValueError(f"`precision` must be one of {sorted(BYTES_PER_PARAM)}, got {precision!r}")
    if isinstance(model, ModelCost):
        params = model.params
    elif isinstance(model, (int,)) and not isinstance(model, bool):
        params = model
    else:
        params = count_params(model)[0]
    return int(params) * BYTES_PER_PARAM[precision]


def file_size_bytes(path):
    """Size on disk of a model file, or the sum of all files under a directory (SavedModel)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(
            os.path.getsize(os.path.join(root, name))
            for root, _, names in os.walk(path)
            for name in names
        )
    raise FileNotFoundError(f"{path}: no such model file or directory")


@dataclasses.dataclass
class BudgetReport:
    """A model's costs next to the limits they were checked against.

    Args:
        cost: the ``ModelCost`` (params, MACs, FLOPs, breakdown).
        size_fp32_bytes: estimated float32 weight bytes.
        size_int8_bytes: estimated int8 weight bytes.
        limits: ``{"macs", "flops", "params", "size_mb"}`` -> limit, or None for no limit.
        violations: human-readable messages, e.g. ``"MACs 1.23G > limit 1.00G"``.
    """

    cost: ModelCost
    size_fp32_bytes: int
    size_int8_bytes: int
    limits: dict
    violations: list

    @property
    def within_budget(self):
        return not self.violations

    @property
    def params(self):
        return self.cost.params

    @property
    def macs(self):
        return self.cost.macs

    @property
    def flops(self):
        return self.cost.flops


def _distinct(value, limit, fmt):
    # "1.00G > limit 1.00G" would be confusing: add digits until the numbers differ.
    for digits in range(2, 10):
        a, b = fmt(value, digits), fmt(limit, digits)
        if a != b:
            return a, b
    return str(value), str(limit)


def check(model, max_macs=None, max_flops=None, max_params=None, max_size_mb=None, input_shape=None):
    """Count a model's costs and compare them with limits.

    Args:
        model: a Keras model (traced with :func:`count_macs`) or an existing ``ModelCost``.
        max_macs, max_flops, max_params: limits as numbers or strings like ``"1G"``,
            ``"20M"``; None means no limit.
        max_size_mb: limit on the estimated float32 weight size, in MB (10**6 bytes).
        input_shape: passed to :func:`count_macs` (shape without the batch dimension).

    Returns:
        A ``BudgetReport``; ``within_budget`` is False when any limit is exceeded.
    """
    limits = {}
    requested = {"macs": max_macs, "flops": max_flops, "params": max_params, "size_mb": max_size_mb}
    for key, raw in requested.items():
        if raw is None:
            limits[key] = None
            continue
        try:
            limits[key] = parse_quantity(raw)
        except ValueError as e:
            raise ValueError(f"`max_{key}`: {e}") from None
    cost = model if isinstance(model, ModelCost) else count_macs(model, input_shape=input_shape)
    size_fp32 = model_size_bytes(cost, "fp32")
    size_int8 = model_size_bytes(cost, "int8")

    def quantity(value, digits):
        return format_quantity(value, digits)

    def megabytes(value, digits):
        return f"{value:.{digits}f} MB"

    violations = []
    for label, key, value, fmt in (
        ("MACs", "macs", cost.macs, quantity),
        ("FLOPs", "flops", cost.flops, quantity),
        ("params", "params", cost.params, quantity),
        ("fp32 size", "size_mb", size_fp32 / MB, megabytes),
    ):
        limit = limits[key]
        if limit is not None and value > limit:
            shown, shown_limit = _distinct(value, limit, fmt)
            violations.append(f"{label} {shown} > limit {shown_limit}")
    return BudgetReport(
        cost=cost,
        size_fp32_bytes=size_fp32,
        size_int8_bytes=size_int8,
        limits=limits,
        violations=violations,
    )
