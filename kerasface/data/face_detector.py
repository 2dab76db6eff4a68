"""Face boxes and five landmarks in raw photos, with MTCNN (the optional `mtcnn` package)."""

from typing import NamedTuple

import numpy as np


_BUCKET = 64


class FaceDetection(NamedTuple):
    """One detected face.

    Attributes:
        box: float32 (4,) ``x1, y1, x2, y2`` in pixels of the photo.
        score: detector confidence in [0, 1].
        landmarks: float32 (5, 2) ``(x, y)`` of image-left eye, image-right eye, nose tip,
            image-left mouth corner, image-right mouth corner: the order of
            :data:`kerasface.data.similarity_transform.ARCFACE_TEMPLATE`.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def area(self):
        """Box area in square pixels."""
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))

    @property
    def center(self):
        """Box centre ``(x, y)``."""
        return ((self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0)


class FaceDetector:
    """MTCNN face detector returning boxes, scores and 5 landmarks in ArcFace template order.

    The `mtcnn` package (MIT; its weights ship inside the wheel, nothing is downloaded) is
    imported on first use, so kerasface works without it until a photo must be detected.

    Args:
        min_confidence: faces scoring below this are dropped (MTCNN's last stage already drops
            those below 0.8).
        min_face_size: smallest face side, in pixels of the photo as given to MTCNN (after the
            ``max_side`` shrink), that is searched for.
        max_side: photos whose longer side exceeds this are shrunk (antialiased) to it before
            detection, and the boxes and landmarks mapped back to the full photo. MTCNN's time
            grows with the pixel count (a 2280x1588 photo takes ~10 s on 2 CPU cores, 1024 px
            ~2 s). None never shrinks.
        batch_size: photos per MTCNN call in :meth:`detect_batch`. Each photo is zero-padded
            (bottom, right) to a multiple of 64 pixels and photos of the same padded shape are
            batched (batches of 16 run ~4x faster per photo than single calls); the padding
            makes a photo's detections independent of the other photos of the call.
        device: TensorFlow device MTCNN runs on.

    Call arguments (``detect``):
        image: uint8 (H, W, 3) RGB array.

    Returns:
        a list of :class:`FaceDetection`, highest score first.
    """

    def __init__(self, min_confidence=0.9, min_face_size=20, max_side=1024, batch_size=16,
                 device="CPU:0"):
        if not 0.0 <= float(min_confidence) <= 1.0:
            raise ValueError(f"`min_confidence` must be in [0, 1], got {min_confidence}")
        if isinstance(min_face_size, bool) or not isinstance(min_face_size, int) or min_face_size < 12:
            raise ValueError(f"`min_face_size` must be an int >= 12, got {min_face_size!r}")
        if max_side is not None and (
            isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 64
        ):
            raise ValueError(f"`max_side` must be None or an int >= 64, got {max_side!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be an int >= 1, got {batch_size!r}")
        self.min_confidence = float(min_confidence)
        self.min_face_size = min_face_size
        self.max_side = max_side
        self.batch_size = batch_size
        self.device = device
        self._mtcnn = None

    def get_config(self):
        return {
            "min_confidence": self.min_confidence,
            "min_face_size": self.min_face_size,
            "max_side": self.max_side,
            "batch_size": self.batch_size,
            "device": self.device,
        }

    def __call__(self, image):
        return self.detect(image)

    def detect(self, image):
        """Faces in one uint8 (H, W, 3) RGB photo, highest score first."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images):
        """Faces in each of a list of uint8 (H, W, 3) RGB photos: a list of lists."""
        images = [_check_image(image, index) for index, image in enumerate(images)]
        results = [[] for _ in images]
        prepared, buckets = {}, {}
        for index, image in enumerate(images):
            small, x_factor, y_factor = self._shrink(image)
            if min(small.shape[:2]) < 12:
                continue  # below MTCNN's 12 px window there is nothing to find: no face
            padded = _pad_to_bucket(small)
            prepared[index] = (padded, small.shape[:2], x_factor, y_factor)
            buckets.setdefault(padded.shape[:2], []).append(index)
        for shape in sorted(buckets):
            members = buckets[shape]
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                rows = self._run([prepared[i][0] for i in chunk])
                if len(chunk) > 1 and len(rows) == 0:
                    # mtcnn answers "no face anywhere" for a whole batch when a stage fails on
                    # it; checking the photos one by one costs little and never loses a face.
                    rows_per = [self._run([prepared[i][0]]) for i in chunk]
                else:
                    rows_per = [rows[rows[:, 0] == position] for position in range(len(chunk))]
                for index, photo_rows in zip(chunk, rows_per):
                    results[index] = self._to_detections(photo_rows, *prepared[index][1:])
        return results

    # ---- internals -----------------------------------------------------------------------

    def _model(self):
        if self._mtcnn is None:
            try:
                from mtcnn import MTCNN
            except ImportError as error:
                raise ImportError(
                    "face detection needs the `mtcnn` package (MIT licence, weights included, no "
                    f"download): pip install mtcnn  (import failed: {error})"
                ) from error
            self._mtcnn = MTCNN(device=self.device)
        return self._mtcnn

    def _shrink(self, image):
        """``(float32 photo for MTCNN, x factor, y factor)``; factors map full -> shrunk pixels."""
        height, width = image.shape[:2]
        if self.max_side is None or max(height, width) <= self.max_side:
            return image.astype(np.float32), 1.0, 1.0
        import tensorflow as tf

        factor = self.max_side / max(height, width)
        new_height = max(1, round(height * factor))
        new_width = max(1, round(width * factor))
        small = tf.image.resize(image, [new_height, new_width], method="bilinear", antialias=True)
        return small.numpy(), new_width / width, new_height / height

    def _run(self, photos):
        rows = self._model().detect_faces(
            list(photos),
            output_type="numpy",
            box_format="xyxy",
            # Photos of a call share one shape (see _pad_to_bucket) so mtcnn pads nothing; if it
            # ever did, top-left placement shifts no coordinates (its per-photo offset fix
            # mis-pairs photos without a face with the offsets of others).
            batch_stack_justification="topleft",
            min_face_size=self.min_face_size,
        )
        rows = np.asarray(rows, np.float64)
        return rows.reshape(-1, 16) if rows.size else np.empty((0, 16))

    def _to_detections(self, rows, size, x_factor, y_factor):
        """FaceDetections of one photo from its mtcnn rows; ``size`` = (h, w) MTCNN saw unpadded."""
        height, width = size
        detections = []
        for row in rows:
            score = float(row[5])
            if score < self.min_confidence:
                continue
            # Columns: image id, x1 y1 x2 y2, score, 5 landmark x, 5 landmark y.
            x1, y1, x2, y2 = row[1:5]
            if not (0 <= (x1 + x2) / 2 < width and 0 <= (y1 + y2) / 2 < height):
                continue  # centred in the black padding: not a face of the photo
            box = np.array([[min(max(x1, 0), width - 1), min(max(y1, 0), height - 1)],
                            [min(max(x2, 0), width - 1), min(max(y2, 0), height - 1)]])
            box = _unshrink(box, x_factor, y_factor).reshape(4)
            landmarks = _unshrink(np.stack([row[6:11], row[11:16]], axis=1), x_factor, y_factor)
            detections.append(
                FaceDetection(box.astype(np.float32), score, landmarks.astype(np.float32))
            )
        detections.sort(key=lambda detection: -detection.score)
        return detections


def _unshrink(points, x_factor, y_factor):
    # Pixel centres sit at integers; tf.image.resize maps full-photo u to (u + 0.5) * f - 0.5.
    points = np.array(points, np.float64)
    if x_factor != 1.0 or y_factor != 1.0:
        points[:, 0] = (points[:, 0] + 0.5) / x_factor - 0.5
        points[:, 1] = (points[:, 1] + 0.5) / y_factor - 0.5
    return points


def _pad_to_bucket(image):
    """Zero-pad (bottom, right) to the next multiple of ``_BUCKET`` on each side.

    MTCNN's results depend on the array it sees (its scale pyramid follows the array size,
    its resizes round per size): padding every photo the same way whatever else is in its
    batch makes a photo's faces independent of its neighbours (batching by exact shape would
    leave mostly batches of one), and photos of similar shape share a batch.
    """
    height, width = image.shape[:2]
    padded_height = -(-height // _BUCKET) * _BUCKET
    padded_width = -(-width // _BUCKET) * _BUCKET
    if (padded_height, padded_width) == (height, width):
        return image
    padded = np.zeros((padded_height, padded_width, 3), np.float32)
    padded[:height, :width] = image
    return padded


def _check_image(image, index):
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(
            f"photo #{index}: expected a uint8 (H, W, 3) RGB array, got {array.dtype} "
            f"{array.shape}"
        )
    return array
