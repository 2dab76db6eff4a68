"""Training input from a folder of identity sub-folders: ``root/<identity>/<image>``."""

import logging
import os

import numpy as np
import tensorflow as tf

from kerasface.data.bad_record_tracker import BadRecordTracker, describe_bad_records
from kerasface.data.label_map import load_label_map, save_label_map, validate_label_map
from kerasface.data.preprocessing import IMAGE_SIZE, decode_rgb, normalize_images

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
_MAX_NAMED = 20


class ImageFolder:
    """A labelled face dataset read from ``root/<identity>/<image>`` into a ``tf.data`` pipeline.

    Labels are the positions of the identity folder names in sorted order (folders without
    images are left out, with a warning), or come from ``label_map``. Images are decoded
    in-graph, resized to 112x112 when they are another size, flipped at random when
    ``augment``, normalised with :func:`kerasface.data.preprocessing.normalize_images` and
    batched. Files that cannot be read are skipped, counted and reported (see
    :meth:`bad_records` and :class:`kerasface.data.BadRecordReport`), never a crash.

    Args:
        root: the folder holding one sub-folder per identity.
        batch_size: images per batch.
        shuffle: shuffle all files each pass (buffer = the whole file list).
        seed: seed of the shuffle and of the flips; the same seed gives the same batches in the
            same order. None for non-reproducible (slightly faster) input.
        augment: random horizontal flips.
        drop_remainder: drop the last incomplete batch of each pass.
        repeat: repeat forever (then give ``steps_per_epoch`` to ``fit``).
        label_map: optional ``{identity: index}`` dict or path to a JSON one (from
            :meth:`save_label_map`) to keep the labels of an earlier run; every identity folder
            must be in it.

    Attributes:
        dataset: ``tf.data.Dataset`` of ``(images float32 (B,112,112,3), labels int32 (B,))``.
        class_names: identity names, position = label.
        file_paths: every image file (absolute paths), ``labels``: their labels (int32 array).
        skipped_files: ``[(path, reason)]`` of entries that are not images by their name.
    """

    def __init__(
        self,
        root,
        batch_size=128,
        shuffle=True,
        seed=0,
        augment=True,
        drop_remainder=True,
        repeat=False,
        label_map=None,
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be an int >= 1, got {batch_size!r}")
        self.root = os.path.abspath(os.fspath(root))
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.augment = augment
        self.drop_remainder = drop_remainder
        self.repeat = repeat

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
        self.class_names = [name for name, _ in sorted(label_map.items(), key=lambda kv: kv[1])]

        file_paths, labels = [], []
        for name in sorted(identities, key=label_map.__getitem__):
            file_paths.extend(identities[name])
            labels.extend([label_map[name]] * len(identities[name]))
        self.file_paths = file_paths
        self.labels = np.asarray(labels, np.int32)

        if drop_remainder and self.num_images < batch_size:
            raise ValueError(
                f"{self.root}: {self.num_images} images is fewer than batch_size={batch_size}, "
                "so drop_remainder=True leaves no batch; lower batch_size or pass "
                "drop_remainder=False"
            )
        logger.info(
            "%s: %d images of %d identities", self.root, self.num_images, self.num_classes
        )
        if self.skipped_files:
            shown = ", ".join(
                f"{path} ({reason})" for path, reason in self.skipped_files[:_MAX_NAMED]
            )
            more = f", ... ({len(self.skipped_files) - _MAX_NAMED} more)" if len(
                self.skipped_files
            ) > _MAX_NAMED else ""
            logger.warning(
                "%s: skipped %d entries that are not images: %s%s",
                self.root,
                len(self.skipped_files),
                shown,
                more,
            )
        self._tracker = BadRecordTracker(self.file_paths)
        self.dataset = self._build_dataset()

    # ---- properties ----------------------------------------------------------------------

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def num_images(self):
        return len(self.file_paths)

    @property
    def steps_per_epoch(self):
        """Batches in one pass over all files (before unreadable ones are dropped)."""
        if self.drop_remainder:
            return self.num_images // self.batch_size
        return -(-self.num_images // self.batch_size)

    # ---- reporting -----------------------------------------------------------------------

    def save_label_map(self, path):
        """Write ``{identity: label}`` as JSON to ``path``; returns ``path``."""
        return save_label_map(self.label_map, path)

    def bad_records(self):
        """``{path: (times skipped, reason)}`` of the files the pipeline could not read so far."""
        return self._tracker.bad_records()

    def num_resized(self):
        """How many distinct images so far were not 112x112 and were resized."""
        return self._tracker.num_resized()

    def report(self, max_listed=_MAX_NAMED, list_path=None):
        """Human summary of everything skipped or resized so far ("" when nothing was)."""
        lines = []
        if self.skipped_files:
            shown = ", ".join(path for path, _ in self.skipped_files[:max_listed])
            more = ", ..." if len(self.skipped_files) > max_listed else ""
            lines.append(
                f"{self.root}: skipped {len(self.skipped_files)} non-image entries: {shown}{more}"
            )
        bad = describe_bad_records(self.bad_records(), max_listed, list_path)
        if bad:
            lines.append(f"{self.root}: {bad}")
        resized = self.num_resized()
        if resized:
            lines.append(
                f"{self.root}: {resized} images were not {IMAGE_SIZE}x{IMAGE_SIZE} and were "
                "resized (aspect ratio not kept); align faces first for best accuracy"
            )
        return "\n".join(lines)

    def __repr__(self):
        return (
            f"ImageFolder({self.root!r}, {self.num_images} images, {self.num_classes} "
            f"identities, batch_size={self.batch_size})"
        )

    # ---- pipeline ------------------------------------------------------------------------

    def _build_dataset(self):
        tracker = self._tracker
        paths = tf.constant(self.file_paths, tf.string)
        labels = tf.constant(self.labels, tf.int32)
        augment = self.augment
        deterministic = self.seed is not None or not self.shuffle

        def load(index, flip_seed):
            data = tf.io.read_file(tf.gather(paths, index))
            ok = tracker.check_header(index, data)

            def decode():
                image = decode_rgb(tracker.begin(index, data))
                image = tracker.end(index, image)
                image.set_shape([None, None, 3])
                return _to_image_size(image, index, tracker)

            image = tf.cond(ok, decode, lambda: tf.zeros([IMAGE_SIZE, IMAGE_SIZE, 3], tf.uint8))
            image = tf.ensure_shape(image, [IMAGE_SIZE, IMAGE_SIZE, 3])
            if augment:
                seed = tf.stack([flip_seed, tf.zeros([], tf.int64)])
                image = tf.image.stateless_random_flip_left_right(image, seed)
            return image, tf.gather(labels, index), ok

        indices = tf.data.Dataset.range(self.num_images)
        if self.shuffle:
            indices = indices.shuffle(
                self.num_images, seed=self.seed, reshuffle_each_iteration=True
            )
        flip_seeds = tf.data.Dataset.random(seed=self.seed, rerandomize_each_iteration=True)
        dataset = tf.data.Dataset.zip(indices, flip_seeds)
        if self.repeat:
            dataset = dataset.repeat()
        dataset = dataset.map(
            load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
        )
        # Decode errors can't be caught inside the graph: the element is dropped here and
        # BadRecordTracker still holds its count, so it is reported with its path.
        dataset = dataset.ignore_errors()
        dataset = dataset.filter(lambda image, label, ok: ok)
        dataset = dataset.batch(self.batch_size, drop_remainder=self.drop_remainder)
        # Normalising whole batches moves uint8 through the per-image stages (4x less data).
        dataset = dataset.map(
            lambda images, batch_labels, ok: (normalize_images(images), batch_labels),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )
        return dataset.prefetch(tf.data.AUTOTUNE)


def image_folder(
    root,
    batch_size=128,
    shuffle=True,
    seed=0,
    augment=True,
    drop_remainder=True,
    repeat=False,
    label_map=None,
):
    """Index ``root/<identity>/<image>`` and build its training pipeline.

    See :class:`ImageFolder` for the arguments. Use ``.dataset`` for ``model.fit`` and pass
    ``BadRecordReport(folder)`` as a callback to have unreadable files reported every epoch.

    Returns:
        an :class:`ImageFolder`.
    """
    return ImageFolder(
        root,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        augment=augment,
        drop_remainder=drop_remainder,
        repeat=repeat,
        label_map=label_map,
    )


def _to_image_size(image, index, tracker):
    shape = tf.shape(image)
    right_size = tf.logical_and(tf.equal(shape[0], IMAGE_SIZE), tf.equal(shape[1], IMAGE_SIZE))

    def resize():
        with tf.control_dependencies([tracker.mark_resized(index)]):
            resized = tf.image.resize(image, [IMAGE_SIZE, IMAGE_SIZE], antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

    return tf.cond(right_size, lambda: image, resize)


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
