"""Open any supported training-data location as a record source, by what the path holds."""

import glob
import os

from kerasface.data.tfrecord_source import DATASET_FILE

_TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfrec")


def open_source(path, **kwargs):
    """The :class:`RecordSource` for ``path``, chosen by what is there.

    * a folder with ``dataset.json``: a kerasface TFRecord dataset -> ``TFRecordSource``;
    * a ``.rec`` file, or a folder with ``train.rec`` (insightface MXNet RecordIO, with its
      ``.idx`` and ``property`` beside it) -> ``RecordIOSource``;
    * a ``.tfrecord`` file, a glob pattern of them, or a folder holding only TFRecord files
      and no ``dataset.json`` (TFRecords written elsewhere; scanned once) ->
      ``TFRecordSource.from_files``;
    * any other folder: identity sub-folders ``<identity>/<image>`` -> ``FolderSource``.

    Args:
        path: the file, folder or glob pattern.
        **kwargs: passed to the source's constructor (e.g. ``name``, ``label_map`` for a
            folder, ``idx_path`` for RecordIO).

    Returns:
        the source.
    """
    path = os.fspath(path)
    if glob.has_magic(path) and not os.path.exists(path):
        files = sorted(glob.glob(path))
        if not files:
            raise FileNotFoundError(f"no files match {path}")
        if not all(f.endswith(_TFRECORD_SUFFIXES) for f in files):
            raise ValueError(
                f"{path}: a pattern must match only TFRecord files ({', '.join(_TFRECORD_SUFFIXES)}), "
                f"it matches e.g. {next(f for f in files if not f.endswith(_TFRECORD_SUFFIXES))}"
            )
        return _tfrecord_files(files, kwargs)
    if not os.path.exists(path):
        raise FileNotFoundError(f"training data {path} does not exist")
    if os.path.isfile(path):
        if path.endswith(".rec"):
            return _record_io(path, kwargs)
        if path.endswith(_TFRECORD_SUFFIXES):
            return _tfrecord_files([path], kwargs)
        if os.path.basename(path) == DATASET_FILE:
            return _tfrecord_dataset(os.path.dirname(path), kwargs)
        raise ValueError(
            f"{path}: not a training-data file kerasface reads; expected an insightface .rec "
            f"file, a TFRecord file ({', '.join(_TFRECORD_SUFFIXES)}), a TFRecord dataset folder "
            f"(with {DATASET_FILE}) or a folder of identity sub-folders"
        )
    if not os.path.isdir(path):
        raise ValueError(f"{path} is neither a file nor a folder")
    if os.path.isfile(os.path.join(path, DATASET_FILE)):
        return _tfrecord_dataset(path, kwargs)
    if os.path.isfile(os.path.join(path, "train.rec")):
        return _record_io(os.path.join(path, "train.rec"), kwargs)
    with os.scandir(path) as scan:
        entries = [entry for entry in scan if not entry.name.startswith(".")]
    tfrecords = sorted(e.path for e in entries if e.is_file() and e.name.endswith(_TFRECORD_SUFFIXES))
    if tfrecords and not any(e.is_dir() for e in entries):
        return _tfrecord_files(tfrecords, kwargs)
    from kerasface.data.folder_source import FolderSource

    return FolderSource(path, **kwargs)


def _tfrecord_dataset(directory, kwargs):
    from kerasface.data.tfrecord_source import TFRecordSource

    return TFRecordSource(directory, **kwargs)


def _tfrecord_files(files, kwargs):
    from kerasface.data.tfrecord_source import TFRecordSource

    return TFRecordSource.from_files(files, **kwargs)


def _record_io(rec_path, kwargs):
    from kerasface.data.record_io_source import RecordIOSource

    return RecordIOSource(rec_path, **kwargs)
