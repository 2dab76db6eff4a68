"""Timing and result helpers shared by the CLI and ``bench/`` scripts."""

from kerasface.benchmark.latency import LatencyResult, measure_latency
from kerasface.benchmark.seed_summary import summarize_seeds

__all__ = ["LatencyResult", "measure_latency", "summarize_seeds"]
