"""LATSE's teacher-student filter: a frozen teacher keeps the samples whose label it ranks top-k."""

import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kerasface.heads.margin_head import l2_normalize
from kerasface.models.face_recognizer import _normalized


class TeacherFilter:
    """Algorithm 1's gradient filter: keep a sample when its label is in the teacher's top-k.

    LATSE (Huang et al., ICML 2020), Sec. 3.3 and Algorithm 1. The teacher scores every
    class as the cosine between its embedding of the image and a class centre; for a
    kerasface teacher trained on the same labels the centres are its head's class
    weights, so the ranking is that of its softmax probabilities (the margin only acts on
    the training target). For any other teacher (a kerasface embedding model trained
    elsewhere, an ONNX or TFLite face model) the centres are the mean teacher embedding of
    each training class: "nearest-class scores". A sample is kept when fewer than ``k``
    classes score strictly above its label.

    Not a layer: the teacher is not part of the student, is not saved with it and gets no
    gradient. A Keras teacher runs inside the training step's graph; a peer model runs
    through ``tf.numpy_function`` (on the host, outside XLA).

    Args:
        embed: a ``keras.Model`` (images normalised ``(x - 127.5) / 128`` -> embeddings), or
            a Python callable on NumPy batches of such images (a :class:`PeerModel`).
        class_centres: (C, D) class centres, in label order (normalised here).
        k: the top-k a label must be in.
        description: how the teacher and its centres were obtained (for logs and summaries).

    Call arguments (:meth:`keep`):
        images: the student's batch, uint8 pixels or normalised float32 (B, H, W, 3).
        labels: int labels (B,).

    Returns:
        bool (B,): True for the samples whose gradient reaches the student.
    """

    def __init__(self, embed, class_centres, k=1, description=""):
        centres = np.asarray(class_centres, dtype="float32")
        if centres.ndim != 2 or centres.shape[0] < 2:
            raise ValueError(f"`class_centres` must be (C >= 2, D), got shape {centres.shape}")
        if int(k) < 1 or int(k) > centres.shape[0]:
            raise ValueError(f"`k` must be in [1, {centres.shape[0]}] (the number of classes), got {k}")
        self.embed = embed
        self.k = int(k)
        self.num_classes = int(centres.shape[0])
        self.embedding_size = int(centres.shape[1])
        self.description = description
        norms = np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
        self.class_centres = keras.Variable(centres / norms, trainable=False, name="teacher_class_centres")

    def embeddings(self, images):
        """The teacher's L2-normalised float32 embeddings (B, D) of a student batch."""
        return teacher_embeddings_in_graph(self.embed, images, self.embedding_size)

    def scores(self, images):
        """Cosine between the teacher's embedding of each image and each class centre, (B, C)."""
        return ops.matmul(self.embeddings(images), ops.transpose(self.class_centres))

    def keep(self, images, labels):
        """True where the label is among the teacher's top-k classes, bool (B,)."""
        return self.ranks(images, labels) < self.k

    def ranks(self, images, labels):
        """How many classes the teacher scores strictly above each label, int32 (B,)."""
        scores = self.scores(images)
        labels = ops.reshape(ops.cast(labels, "int32"), (-1, 1))
        target = ops.take_along_axis(scores, labels, axis=1)
        return ops.cast(ops.sum(ops.cast(scores > target, "int32"), axis=1), "int32")

    @classmethod
    def from_model(cls, model, k=1, num_classes=None, source=None, label_map=None, print_fn=print, **peer_options):
        """The filter of a teacher named by a path (or given as a loaded model).

        Args:
            model: a kerasface run directory or ``.keras`` file, a peer ``.onnx``/``.tflite``
                file, or a loaded ``FaceRecognizer``/embedding ``keras.Model``.
            k: the top-k.
            num_classes: the student's class count C.
            source: the student's training ``FolderSource``: its images give the class
                centres when the teacher's head cannot (another teacher, other labels).
            label_map: the student's ``label_map.json`` (path or loaded); a kerasface
                teacher's head is used only when its run directory's is the same.
            print_fn: where to say which centres were used.
            **peer_options: :class:`PeerModel` options for a peer file.
        """
        from kerasface.models.face_recognizer import FaceRecognizer

        name = str(model) if isinstance(model, (str, Path)) else getattr(model, "name", "teacher")
        embed, recognizer = open_teacher(model, peer_options)
        centres, why = None, ""
        if isinstance(recognizer, FaceRecognizer):
            centres, why = _head_centres(recognizer, model, num_classes, label_map)
        if centres is None:
            if source is None or not hasattr(source, "file_paths"):
                raise ValueError(
                    f"teacher {name}: {why or 'it has no classifier head'}, so its class centres must be "
                    "computed from the training images, which needs a folder dataset (got "
                    f"{type(source).__name__})"
                )
            centres = class_centres_from_images(embed, source.file_paths, source.labels, source.num_classes)
            description = f"{name}: nearest-class scores, centres = mean teacher embedding per class ({why or 'no head'})"
        else:
            description = f"{name}: its classifier head (top-{k} of its softmax)"
        print_fn(f"teacher filter: {description}, k={k}")
        return cls(embed, centres, k=k, description=description)


def teacher_embeddings_in_graph(embed, images, embedding_size=None):
    """A frozen teacher's L2-normalised float32 embeddings (B, D) of a training batch.

    ``images`` are uint8 pixels or normalised floats. A Keras ``embed`` runs in the graph;
    any other callable (a :class:`PeerModel`, a SavedModel runner) runs on the host through
    ``tf.numpy_function`` (outside XLA) and must give ``embedding_size``-d rows.
    """
    normalized = ops.cast(_normalized(images), "float32")
    if isinstance(embed, keras.Model):
        values = embed(normalized, training=False)
    else:
        values = tf.numpy_function(lambda batch: np.asarray(embed(batch), dtype="float32"), [normalized], tf.float32)
        values = tf.ensure_shape(values, (None, embedding_size))
    return ops.stop_gradient(l2_normalize(ops.cast(values, "float32")))


def class_centres_from_images(embed, files, labels, num_classes, batch_size=64):
    """Per-class mean teacher embedding, re-estimated once from the samples it ranks first.

    The first mean includes the mislabelled images; the second keeps only the images whose
    nearest first-pass centre is their own label (when a class has none, its first mean
    stays), which pulls each centre back towards its clean majority.
    """
    from kerasface.evaluation.embed_images import embed_images

    labels = np.asarray(labels, dtype="int64")
    features = embed_images(embed, files if isinstance(files, np.ndarray) else list(files), batch_size=batch_size)
    centres = _class_means(features, labels, num_classes, np.ones(len(labels), bool))
    nearest = np.argmax(features @ centres.T, axis=1)
    refined = _class_means(features, labels, num_classes, nearest == labels)
    empty = ~np.any(np.eye(num_classes, dtype=bool)[labels[nearest == labels]], axis=0)
    refined[empty] = centres[empty]
    return refined


def _class_means(features, labels, num_classes, mask):
    sums = np.zeros((num_classes, features.shape[1]), "float64")
    np.add.at(sums, labels[mask], features[mask])
    norms = np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return (sums / norms).astype("float32")


def open_teacher(model, peer_options):
    """(embed function, the full FaceRecognizer when there is one) of a teacher.

    ``model``: a loaded ``FaceRecognizer`` or embedding ``keras.Model``; a kerasface run
    directory or ``.keras`` file (run in the graph); a peer ``.onnx``/``.tflite`` file
    (:class:`PeerModel`, ``peer_options`` apply); or a SavedModel directory from
    ``kerasface export`` (its ``embed_normalized`` signature). The embed function takes
    normalised float32 images.
    """
    from kerasface.evaluation.peer_model import PEER_SUFFIXES, open_embedder
    from kerasface.models.face_recognizer import FaceRecognizer
    from kerasface.models.loading import resolve_model_file

    if isinstance(model, FaceRecognizer):
        return _frozen(model.embedding_model), model
    if isinstance(model, keras.Model):
        return _frozen(model), None
    path = Path(model)
    if path.suffix.lower() in PEER_SUFFIXES:
        return open_embedder(path, **peer_options), None
    if (path / "saved_model.pb").is_file():
        from kerasface.export.runtimes import SavedModelRunner

        if peer_options:
            raise ValueError(f"teacher {path}: peer options {sorted(peer_options)} apply only to .onnx/.tflite teachers")
        return SavedModelRunner(path), None
    if peer_options:
        raise ValueError(f"teacher {path}: peer options {sorted(peer_options)} apply only to .onnx/.tflite teachers")
    full = path / "model.keras" if path.is_dir() else resolve_model_file(path)
    if not full.is_file():
        raise FileNotFoundError(f"teacher {path}: no model.keras (is the teacher's training finished?)")
    loaded = keras.saving.load_model(full, compile=False)
    if isinstance(loaded, FaceRecognizer):
        return _frozen(loaded.embedding_model), loaded
    return _frozen(loaded), None


def _frozen(model):
    model.trainable = False
    return model


def _head_centres(recognizer, model, num_classes, label_map):
    """(C, D) centres from the head, or (None, why not)."""
    head = recognizer.head
    kernel = getattr(head, "kernel", None)
    if kernel is None or tuple(kernel.shape) != (kernel.shape[0], head.num_classes):
        return None, "its head has no (D, C) class-centre kernel"
    if num_classes is not None and head.num_classes != num_classes:
        return None, f"its head has {head.num_classes} classes, the student {num_classes}"
    if label_map is not None and isinstance(model, (str, Path)):
        path = Path(model)
        teacher_map = (path if path.is_dir() else path.parent) / "label_map.json"
        if not teacher_map.is_file() and path.parent.name == "checkpoints":
            teacher_map = path.parent.parent / "label_map.json"
        if isinstance(label_map, (str, Path)):
            label_map = json.loads(Path(label_map).read_text())
        if not teacher_map.is_file() or json.loads(teacher_map.read_text()) != label_map:
            return None, f"its labels ({teacher_map}) are not the student's"
    return np.asarray(ops.convert_to_numpy(kernel), "float32").T, ""
