"""Keras callback that reports, at each epoch end, the training files that could not be read."""

import os
import tempfile

import keras

from kerasface.data.bad_record_tracker import describe_bad_records
from kerasface.data.preprocessing import IMAGE_SIZE


class BadRecordReport(keras.callbacks.Callback):
    """Print the unreadable files an :class:`ImageFolder` skipped, at the end of every epoch.

    Prints nothing for an epoch in which nothing was skipped. Non-image entries found when the
    folder was indexed and images that had to be resized are reported once, at the first
    epoch end.

    Args:
        folder: the :class:`kerasface.data.ImageFolder` or :class:`kerasface.data.FacePipeline`
            whose ``dataset`` is being trained on.
        max_listed: name at most this many files in the printed line.
        list_path: file rewritten at every epoch end with the full list
            (``path<TAB>times skipped<TAB>reason``) when some file was bad; None writes a
            temporary file, and only when more than ``max_listed`` files are bad.
        print_fn: called with each message (default ``print``).

    Attributes:
        messages: every message printed so far.
        history: ``[(epoch, {path: (times skipped, reason)})]``, one entry per epoch end.
    """

    def __init__(self, folder, max_listed=20, list_path=None, print_fn=None):
        super().__init__()
        self.folder = folder
        self.max_listed = max_listed
        self.list_path = list_path
        self.print_fn = print_fn
        self.messages = []
        self.history = []
        self._first_epoch_done = False

    def on_epoch_end(self, epoch, logs=None):
        if not self._first_epoch_done:
            self._first_epoch_done = True
            self._report_once()
        records = self.folder.bad_records()
        self.history.append((epoch, records))
        if not records:
            return
        list_path = self.list_path
        if list_path is None and len(records) > self.max_listed:
            handle, list_path = tempfile.mkstemp(prefix="kerasface_bad_records_", suffix=".txt")
            os.close(handle)
        message = describe_bad_records(records, self.max_listed, list_path)
        self._emit(f"epoch {epoch + 1}: {self.folder.root}: {message}")

    def _report_once(self):
        skipped = self.folder.skipped_files
        if skipped:
            shown = ", ".join(f"{path} ({reason})" for path, reason in skipped[: self.max_listed])
            more = f", ... ({len(skipped) - self.max_listed} more)" if len(
                skipped
            ) > self.max_listed else ""
            self._emit(
                f"{self.folder.root}: ignored {len(skipped)} non-image entries: {shown}{more}"
            )
        resized = self.folder.num_resized()
        if resized:
            self._emit(
                f"{self.folder.root}: {resized} images were not {IMAGE_SIZE}x{IMAGE_SIZE} and "
                "were resized (aspect ratio not kept); align faces first for best accuracy"
            )

    def _emit(self, message):
        self.messages.append(message)
        (self.print_fn or print)(message)
