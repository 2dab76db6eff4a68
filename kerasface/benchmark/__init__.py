"""Timing helpers shared by the CLI and ``bench/`` scripts."""

from kerasface.benchmark.latency import LatencyResult, measure_latency

__all__ = ["LatencyResult", "measure_latency"]
