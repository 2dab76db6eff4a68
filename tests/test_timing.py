import itertools

import pytest

from kerasface.benchmark import latency as latency_module
from kerasface.benchmark import measure_latency
from kerasface.training import throughput_logger
from kerasface.training.throughput_logger import ThroughputLogger


def _fake_clock(monkeypatch, module, times):
    ticks = iter(times)
    monkeypatch.setattr(module.time, "perf_counter", lambda: next(ticks))


def test_throughput_skips_tracing_batches_only_in_the_first_epoch(monkeypatch):
    lines = []
    logger = ThroughputLogger(batch_size=10, skip_batches=2, print_fn=lines.append)
    # Epoch 1: batch ends at 100 (trace), 101 (warm), then 102, 102.5, 103 -> 2 steps in 1 s.
    _fake_clock(monkeypatch, throughput_logger, [100.0, 101.0, 102.0, 102.5, 103.0])
    logger.on_epoch_begin(0)
    for batch in range(5):
        logger.on_train_batch_end(batch)
    logs = {}
    logger.on_epoch_end(0, logs)
    assert logs["images_per_second"] == pytest.approx(20.0)
    # Epoch 2: nothing skipped; 3 steps in 1.5 s.
    _fake_clock(monkeypatch, throughput_logger, [200.0, 200.5, 201.0, 201.5])
    logger.on_epoch_begin(1)
    for batch in range(4):
        logger.on_train_batch_end(batch)
    logger.on_epoch_end(1, {})
    assert logger.epoch_rates == pytest.approx([20.0, 20.0])
    assert lines[0].startswith("epoch 1: 20.0 images/s")


def test_throughput_needs_two_counted_batches():
    logger = ThroughputLogger(batch_size=4, skip_batches=2, print_fn=None)
    logger.on_epoch_begin(0)
    for batch in range(3):
        logger.on_train_batch_end(batch)
    logger.on_epoch_end(0, {})
    assert logger.epoch_rates == []


def test_measure_latency_median_warmup_and_batch(monkeypatch):
    calls = []
    # Clock reads: the deadline, then start/end of each timed call (durations 1, 9, 2, 4, 3 ms ->
    # median 3 ms, mean 3.8); once 3 calls are in, the loop also reads the clock to check the deadline.
    reads = [10.0, 0.0, 0.001, 1.0, 1.009, 2.0, 2.002, 5.0, 3.0, 3.004, 5.0, 4.0, 4.003]
    clock = itertools.chain(reads, itertools.repeat(100.0))
    monkeypatch.setattr(latency_module.time, "perf_counter", lambda: next(clock))
    result = measure_latency(calls.append, [0, 0, 0, 0], warmup=2, runs=5, max_seconds=1e9)
    assert len(calls) == 7 and result.runs == 5
    assert result.median_ms == pytest.approx(3.0)
    assert result.per_face_ms == pytest.approx(0.75)
    with pytest.raises(ValueError, match="`runs` must be >= 3, got 2"):
        measure_latency(calls.append, [0], runs=2)
