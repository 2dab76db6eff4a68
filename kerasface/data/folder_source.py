"""A folder of identity sub-folders, ``root/<identity>/<image>``, as a record source."""

import logging
import os

import numpy as np
import tensorflow as tf

from kerasface.data.bad_record_tracker import diagnose_image_file
from kerasface.data.label_map import load_label_map, save_label_map, validate_label_map
from kerasface.data.record_source import RecordSource

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
_MAX_NAMED = 20


class FolderSource(RecordSource):
    """Face images in ``root/<identity>/<image>``, one record per file.

    Labels are the positions of the identity folder names in sorted order, or come from
    ``label_map``. Identity folders without images are left out with a warning that names
    them; entries that are not images by their extension (stray files, nested folders) are
    listed in ``skipped_files`` and logged, never silently ignored.

    Args:
        root: the folder holding one sub-folder per identity.
        label_map: optional ``{identity: index}`` dict, or the path of a JSON one written by
            :meth:`save_label_map`, to keep the labels of an earlier run; every identity
            folder must be in it.
        name: the source name used in messages (default: the folder's base name).

    Attributes:
        file_paths: every image file (absolute paths), in label order.
        label_map: ``{identity: label}``.
        skipped_files: ``[(path, reason)]`` of entries that are not images by their name.
    """

    def __init__(self, root, label_map=None, name=None):
        self.root = os.path.abspath(os.fspath(root))
        identities, self.skipped_files = _index_folder(self.root)
        if label_map is not None:
            if isinstance(label_map, (str, os.PathLike)):
                label_map = load_label_map(label_map)
            label_map = validate_label_map(label_map)
            unknown = sorted(set(identities) - set(label_map))
            if unknown:
                raise ValueError(
                    f"{self.root}: {len(unknown)} identity folder(s) are not in the given "
                    f"label_map: {', '.join(unknown[:_MAX_NAMED])}"
                )
        else:
            label_map = {name: index for index, name in enumerate(sorted(identities))}
        self.label_map = label_map
        class_names = [n for n, _ in sorted(label_map.items(), key=lambda kv: kv[1])]
        file_paths, labels = [], []
        for identity in sorted(identities, key=label_map.__getitem__):
            file_paths.extend(identities[identity])
            labels.extend([label_map[identity]] * len(identities[identity]))
        self.file_paths = file_paths
        super().__init__(
            np.asarray(labels, np.int32),
            num_classes=len(class_names),
            class_names=class_names,
            name=name or os.path.basename(self.root.rstrip(os.sep)),
        )
        logger.info("%s: %d images of %d identities", self.root, len(file_paths), self.num_classes)
        if self.skipped_files:
            shown = ", ".join(f"{p} ({reason})" for p, reason in self.skipped_files[:_MAX_NAMED])
            more = (
                f", ... ({len(self.skipped_files) - _MAX_NAMED} more)"
                if len(self.skipped_files) > _MAX_NAMED
                else ""
            )
            logger.warning(
                "%s: skipped %d entries that are not images: %s%s",
                self.root,
                len(self.skipped_files),
                shown,
                more,
            )
        # Created eagerly, so every tf.data graph captures this one tensor by reference
        # instead of embedding millions of paths in its graph.
        with tf.device("/CPU:0"):
            self._paths = tf.constant(self.file_paths, tf.string)

    def save_label_map(self, path):
        """Write ``{identity: label}`` as JSON to ``path``; returns ``path``."""
        return save_label_map(self.label_map, path)

    def read(self, indices):
        # One file per call (read_chunk = 1): a missing file raises here and only its record
        # is dropped and counted by the pipeline. No tf.map_fn for the common single index:
        # its while-loop costs more than reading a 10 kB face.
        indices = tf.cast(indices, tf.int64)
        if indices.shape.rank == 1 and indices.shape[0] == 1:
            return tf.reshape(tf.io.read_file(tf.gather(self._paths, indices[0])), [1])
        return tf.map_fn(
            lambda i: tf.io.read_file(tf.gather(self._paths, i)),
            indices,
            fn_output_signature=tf.string,
        )

    def describe(self, index):
        return self.file_paths[index]

    def read_bytes(self, index):
        with open(self.file_paths[index], "rb") as f:
            return f.read()

    def diagnose(self, index):
        return diagnose_image_file(self.file_paths[index])


def _index_folder(root):
    """``({identity: [sorted image paths]}, [(path, reason)] skipped)``, warning about empties."""
    if not os.path.exists(root):
        raise FileNotFoundError(f"image folder {root} does not exist")
    if not os.path.isdir(root):
        raise NotADirectoryError(f"image folder {root} is not a directory")
    identities, skipped, empty = {}, [], []
    with os.scandir(root) as entries:
        entries = sorted(entries, key=lambda entry: entry.name)
    for entry in entries:
        if not entry.is_dir():
            skipped.append((entry.path, "file directly in the root, not in an identity folder"))
            continue
        if entry.name.startswith("."):
            skipped.append((entry.path, "hidden folder, not an identity"))
            continue
        images = []
        with os.scandir(entry.path) as files:
            files = sorted(files, key=lambda f: f.name)
        for f in files:
            if f.is_dir():
                skipped.append((f.path, "sub-folder inside an identity folder (not searched)"))
            elif os.path.splitext(f.name)[1].lower() in IMAGE_EXTENSIONS:
                images.append(f.path)
            else:
                skipped.append((f.path, "not an image file extension"))
        if images:
            identities[entry.name] = images
        else:
            empty.append(entry.path)
    if empty:
        shown = ", ".join(empty[:_MAX_NAMED]) + (", ..." if len(empty) > _MAX_NAMED else "")
        logger.warning(
            "%s: %d identity folder(s) contain no %s images and are left out: %s",
            root,
            len(empty),
            "/".join(e.lstrip(".") for e in IMAGE_EXTENSIONS),
            shown,
        )
    if not identities:
        subfolders = sum(1 for entry in entries if entry.is_dir())
        raise ValueError(
            f"{root}: no images found; expected {root}/<identity>/<image> with extensions "
            f"{', '.join(IMAGE_EXTENSIONS)} (found {subfolders} sub-folders and "
            f"{len(entries) - subfolders} other entries)"
        )
    return identities, skipped
