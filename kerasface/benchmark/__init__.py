"""Timing and result helpers shared by the CLI and ``bench/`` scripts."""

from kerasface.benchmark.latency import LatencyResult, measure_latency
from kerasface.benchmark.seed_summary import format_seed_cell, summarize_seeds

__all__ = ["LatencyResult", "format_seed_cell", "measure_latency", "summarize_seeds"]
