"""Report images/s during ``fit``."""

import time

import keras


class ThroughputLogger(keras.callbacks.Callback):
    """Prints and logs training throughput (images/s) at the end of every epoch.

    The rate is measured between batch ends, so it is pure step time. The first
    ``skip_batches`` batches of the first epoch are left out: they include graph tracing,
    a one-off cost that is not throughput.

    Args:
        batch_size: global batch size (images per step).
        skip_batches: batches to ignore at the start of the first epoch.
        print_fn: where lines go (default ``print``); None to stay quiet.

    Attributes:
        epoch_rates: images/s of each finished epoch.
    """

    def __init__(self, batch_size, skip_batches=2, print_fn=print):
        super().__init__()
        self.batch_size = int(batch_size)
        self.skip_batches = int(skip_batches)
        self.print_fn = print_fn
        self.epoch_rates = []

    def on_epoch_begin(self, epoch, logs=None):
        self._batch_end_times = []

    def on_train_batch_end(self, batch, logs=None):
        self._batch_end_times.append(time.perf_counter())

    def on_epoch_end(self, epoch, logs=None):
        times = self._batch_end_times[self.skip_batches :] if not self.epoch_rates else self._batch_end_times
        if len(times) < 2:
            return
        steps, elapsed = len(times) - 1, times[-1] - times[0]
        rate = steps * self.batch_size / elapsed
        self.epoch_rates.append(rate)
        if logs is not None:
            logs["images_per_second"] = rate
        if self.print_fn:
            self.print_fn(f"epoch {epoch + 1}: {rate:.1f} images/s ({elapsed / steps * 1000:.0f} ms/step)")
