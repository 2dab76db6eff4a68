"""Training input from a folder of identity sub-folders: ``root/<identity>/<image>``."""

from kerasface.data.face_pipeline import FacePipeline
from kerasface.data.folder_source import _MAX_NAMED, IMAGE_EXTENSIONS, FolderSource

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder", "image_folder"]


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
        shuffle: a new exact random order of all files each pass.
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
        source: the :class:`kerasface.data.FolderSource`; ``pipeline``: the
            :class:`kerasface.data.FacePipeline` built on it (samplers, augmentation, sharding).
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
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.augment = augment
        self.drop_remainder = drop_remainder
        self.repeat = repeat
        self.source = FolderSource(root, label_map=label_map)
        self.root = self.source.root
        if drop_remainder and self.num_images < batch_size:
            raise ValueError(
                f"{self.root}: {self.num_images} images is fewer than batch_size={batch_size}, "
                "so drop_remainder=True leaves no batch; lower batch_size or pass "
                "drop_remainder=False"
            )
        self.pipeline = FacePipeline(
            self.source,
            batch_size=batch_size,
            sampler="shuffle" if shuffle else "sequential",
            augmentation="flip=0.5" if augment else None,
            seed=seed,
            repeat=repeat,
            drop_remainder=drop_remainder,
        )
        self.dataset = self.pipeline.dataset

    # ---- properties ----------------------------------------------------------------------

    @property
    def label_map(self):
        return self.source.label_map

    @property
    def class_names(self):
        return self.source.class_names

    @property
    def file_paths(self):
        return self.source.file_paths

    @property
    def labels(self):
        return self.source.labels

    @property
    def skipped_files(self):
        return self.source.skipped_files

    @property
    def num_classes(self):
        return self.source.num_classes

    @property
    def num_images(self):
        return self.source.num_records

    @property
    def steps_per_epoch(self):
        """Batches in one pass over all files (before unreadable ones are dropped)."""
        return self.pipeline.steps_per_epoch

    # ---- reporting -----------------------------------------------------------------------

    def save_label_map(self, path):
        """Write ``{identity: label}`` as JSON to ``path``; returns ``path``."""
        return self.source.save_label_map(path)

    def bad_records(self):
        """``{path: (times skipped, reason)}`` of the files the pipeline could not read so far."""
        return self.pipeline.bad_records()

    def num_resized(self):
        """How many distinct images so far were not 112x112 and were resized."""
        return self.pipeline.num_resized()

    def report(self, max_listed=_MAX_NAMED, list_path=None):
        """Human summary of everything skipped or resized so far ("" when nothing was)."""
        lines = []
        if self.skipped_files:
            shown = ", ".join(path for path, _ in self.skipped_files[:max_listed])
            more = ", ..." if len(self.skipped_files) > max_listed else ""
            lines.append(
                f"{self.root}: skipped {len(self.skipped_files)} non-image entries: {shown}{more}"
            )
        pipeline = self.pipeline.report(max_listed, list_path)
        if pipeline:
            lines.append(pipeline)
        return "\n".join(lines)

    def __repr__(self):
        return (
            f"ImageFolder({self.root!r}, {self.num_images} images, {self.num_classes} "
            f"identities, batch_size={self.batch_size})"
        )


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
