"""A teacher's embeddings of every training record, computed once, cached on disk, resumable."""

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np


@dataclasses.dataclass
class TeacherEmbeddings:
    """What :func:`precompute_teacher_embeddings` produced.

    Attributes:
        embeddings: float32 ``(N, 2, D)`` (each record and its mirror image) or ``(N, D)``,
            L2-normalised; rows of unreadable records are zeros.
        path: the cache file.
        from_cache: True when nothing was computed.
        bad_records: ``{location: reason}`` of records that could not be read.
        description: the teacher, in words.
    """

    embeddings: np.ndarray
    path: Path
    from_cache: bool
    bad_records: dict
    description: str

    @property
    def embedding_size(self):
        return int(self.embeddings.shape[-1])


def precompute_teacher_embeddings(teacher, source, cache_dir, mirror=True, batch_size=64, print_fn=print,
                                  flush_every=20, **peer_options):
    """The teacher's embedding of every record of ``source``, from the cache or computed and cached.

    Third-party teachers are slow (OpenCV's SFace runs about 22 faces/s on two cores, a third
    of a MobileFaceNet student's training speed), so a distillation run embeds the training
    set once instead of on every batch. Records are read in order through a
    :class:`kerasface.data.FacePipeline`; progress is flushed to ``<file>.partial.npy`` (and
    a ``.done.npy`` mask) every ``flush_every`` batches, so an interrupted run resumes where it
    stopped. A record that cannot be read is skipped, counted and reported (its row stays
    zero; the training pipeline never yields it either).

    The cache file is named by the teacher (file bytes and preprocessing options, or a Keras
    model's weights), the records (count, labels and the first and last locations) and
    ``mirror``.

    Args:
        teacher: as :func:`kerasface.training.teacher_filter.open_teacher`: a kerasface run
            directory/``.keras``/model, a peer ``.onnx``/``.tflite`` file, or a kerasface
            SavedModel directory.
        source: the training :class:`kerasface.data.RecordSource`.
        cache_dir: folder of the cache files (created).
        mirror: also embed each face's horizontal mirror: ``(N, 2, D)``, which lets
            :class:`kerasface.models.Distiller` flip faces during training.
        batch_size: faces per teacher call.
        print_fn: progress and bad-record messages.
        flush_every: batches between two flushes of the partial file.
        **peer_options: :class:`kerasface.evaluation.PeerModel` options for a peer file.

    Returns:
        a :class:`TeacherEmbeddings`.
    """
    import tensorflow as tf

    from kerasface.data.face_pipeline import FacePipeline
    from kerasface.training.teacher_filter import open_teacher

    embed, _ = open_teacher(teacher, dict(peer_options))
    description = _describe(teacher, peer_options)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = f"{_teacher_id(teacher, embed, peer_options)}-{source_key(source)}-{'mirror' if mirror else 'plain'}"
    final = cache_dir / f"teacher_{key}.npy"
    meta_path = cache_dir / f"teacher_{key}.json"
    count = source.num_records
    if final.is_file():
        embeddings = np.load(final, mmap_mode="r")
        if embeddings.shape[0] == count and embeddings.ndim == (3 if mirror else 2):
            meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
            print_fn(f"teacher embeddings: {final} ({count} records, from the cache)")
            return TeacherEmbeddings(np.asarray(embeddings), final, True, meta.get("bad_records", {}), description)
        print_fn(f"{final}: holds {embeddings.shape}, expected {count} records; recomputing it")
    partial = cache_dir / f"teacher_{key}.partial.npy"
    done_path = cache_dir / f"teacher_{key}.done.npy"
    done = np.load(done_path) if done_path.is_file() and partial.is_file() else np.zeros(count, bool)
    values = np.load(partial, mmap_mode="r+") if done.any() else None
    if done.any():
        print_fn(f"teacher embeddings: resuming {partial} ({int(done.sum())} of {count} records done)")
    pipeline = FacePipeline(
        source,
        batch_size=batch_size,
        sampler="sequential",
        augmentation=None,
        seed=0,
        drop_remainder=False,
        record_features={"record": np.arange(count, dtype=np.int64)},
    )
    embed_fn = _numpy_embed(embed)
    batches = 0
    for inputs, _ in pipeline.dataset:
        ids = inputs["record"].numpy()
        todo = ~done[ids]
        if not todo.any():
            continue
        images = inputs["images"].numpy()[todo]
        ids = ids[todo]
        views = [embed_fn(images)]
        if mirror:
            views.append(embed_fn(np.ascontiguousarray(images[:, :, ::-1, :])))
        batch = np.stack(views, axis=1) if mirror else views[0]
        if values is None:
            shape = (count, *batch.shape[1:])
            values = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=shape)
        values[ids] = batch
        done[ids] = True
        batches += 1
        if batches % flush_every == 0:
            _flush(values, done, done_path)
            print_fn(f"teacher embeddings: {int(done.sum())}/{count}")
    bad = {path: reason for path, (_, reason) in pipeline.bad_records().items()}
    if values is None:
        raise ValueError(f"{source.name}: no record could be read to compute teacher embeddings ({len(bad)} bad)")
    _flush(values, done, done_path)
    missing = int((~done).sum())
    if missing != len(bad):
        print_fn(f"teacher embeddings: {missing} records without an embedding, {len(bad)} reported unreadable")
    if bad:
        print_fn(f"teacher embeddings: {len(bad)} unreadable record(s) skipped, e.g. {next(iter(bad))}")
    del values
    os.replace(partial, final)
    done_path.unlink(missing_ok=True)
    meta_path.write_text(json.dumps({"teacher": description, "records": count, "bad_records": bad}, indent=2))
    print_fn(f"teacher embeddings: {final} ({count} records)")
    return TeacherEmbeddings(np.load(final), final, False, bad, description)


def source_key(source):
    """16-hex key of a record source: its record count, labels and first and last locations."""
    digest = hashlib.sha1(f"{source.num_records}\0{source.num_classes}".encode())
    digest.update(np.ascontiguousarray(source.labels, dtype=np.int64).tobytes())
    if source.num_records:
        digest.update(f"{source.describe(0)}\0{source.describe(source.num_records - 1)}".encode())
    return digest.hexdigest()[:16]


def _teacher_id(teacher, embed, peer_options):
    import keras

    if isinstance(embed, keras.Model):
        from kerasface.evaluation.set_evaluation import keras_model_id

        return keras_model_id(embed)
    path = Path(teacher)
    if path.is_dir():
        digest = hashlib.sha1()
        for file in sorted(path.rglob("*")):
            if file.is_file():
                digest.update(file.read_bytes())
        return digest.hexdigest()[:16]
    from kerasface.evaluation.peer_model import model_fingerprint

    return model_fingerprint(path, **peer_options)


def _describe(teacher, peer_options):
    name = getattr(teacher, "name", None) if not isinstance(teacher, (str, os.PathLike)) else str(teacher)
    options = ", ".join(f"{k}={v}" for k, v in sorted(peer_options.items()))
    return f"{name}" + (f" ({options})" if options else "")


def _numpy_embed(embed):
    import keras

    if isinstance(embed, keras.Model):
        return lambda images: np.asarray(embed(images, training=False), np.float32)
    return lambda images: np.asarray(embed(images), np.float32)


def _flush(values, done, done_path):
    values.flush()
    partial_done = done_path.with_name(done_path.name + ".tmp.npy")
    np.save(partial_done, done)
    os.replace(partial_done, done_path)
