"""Per-call latency: median of many timed runs after a warm-up."""

import dataclasses
import time

import numpy as np


@dataclasses.dataclass(frozen=True)
class LatencyResult:
    """Latency of one call, in milliseconds.

    Attributes:
        median_ms: median over ``runs`` timed calls (robust to a noisy, shared machine).
        p90_ms: 90th percentile.
        runs: number of timed calls.
        batch_size: images per call, so per-face latency is ``median_ms / batch_size``.
    """

    median_ms: float
    p90_ms: float
    runs: int
    batch_size: int

    @property
    def per_face_ms(self):
        return self.median_ms / self.batch_size


def measure_latency(fn, batch, warmup=5, runs=50, max_seconds=30.0):
    """Time ``fn(batch)``: ``warmup`` untimed calls, then up to ``runs`` timed ones.

    Stops early after ``max_seconds`` of timed calls (at least 3 are always made).
    """
    if runs < 3:
        raise ValueError(f"`runs` must be >= 3, got {runs}")
    for _ in range(warmup):
        fn(batch)
    times = []
    deadline = time.perf_counter() + max_seconds
    while len(times) < runs and (len(times) < 3 or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn(batch)
        times.append((time.perf_counter() - start) * 1000.0)
    return LatencyResult(
        median_ms=float(np.median(times)),
        p90_ms=float(np.percentile(times, 90)),
        runs=len(times),
        batch_size=len(batch),
    )
