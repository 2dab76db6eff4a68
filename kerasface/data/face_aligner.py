"""Detect, pick and warp faces of raw photos to 112x112 ArcFace crops; align whole folders, resumably."""

import io
import logging
import math
import os
import time

import numpy as np

from kerasface.data.image_folder import IMAGE_EXTENSIONS
from kerasface.data.similarity_transform import (
    apply_similarity,
    arcface_template,
    estimate_similarity,
    invert_affine,
)

logger = logging.getLogger(__name__)

SELECT_MODES = ("largest", "central", "largest_central")
FAILED_FILE = "failed.txt"
MULTI_FACE_FILE = "multi_face.txt"
_PARTIAL_SUFFIX = ".partial"
_MAX_NAMED = 10
# Below this photo-to-crop scale the bilinear warp would skip photo pixels (aliasing): the
# face region is first shrunk with an antialiased resize to twice the crop's scale.
_MIN_WARP_SCALE = 0.5


class FaceAligner:
    """Turns a raw RGB photo into a 112x112 face crop aligned to the ArcFace 5-point template.

    Args:
        detector: anything with ``detect(image) -> [FaceDetection]`` (and optionally
            ``detect_batch(images)``); default a :class:`kerasface.data.face_detector.FaceDetector`
            (MTCNN).
        image_size: side of the square crop; the template is scaled by ``image_size / 112``.
        select: which face to keep when a photo holds several: ``"largest"`` box (default),
            ``"central"`` (box centre nearest the photo centre) or ``"largest_central"``
            (largest ``area - 2 * squared distance to the centre``: the big face near the middle,
            not a big face at the border). On the celeba_dev raw photos "largest" kept the
            reference face far more often than the centre-weighted rules: portraits sit high in
            the frame, and MTCNN's false detections (hands, clothes) are often central.

    Call arguments (``align``):
        image: uint8 (H, W, 3) RGB photo.

    Returns:
        ``(crop uint8 (image_size, image_size, 3), FaceDetection)`` of the kept face, or None
        when no face is found.
    """

    def __init__(self, detector=None, image_size=112, select="largest"):
        if select not in SELECT_MODES:
            raise ValueError(f"`select` must be one of {', '.join(SELECT_MODES)}, got {select!r}")
        self.template = arcface_template(image_size)
        if detector is None:
            from kerasface.data.face_detector import FaceDetector

            detector = FaceDetector()
        self.detector = detector
        self.image_size = image_size
        self.select = select

    def get_config(self):
        detector_config = self.detector.get_config() if hasattr(self.detector, "get_config") else None
        return {"detector": detector_config, "image_size": self.image_size, "select": self.select}

    def __call__(self, image):
        return self.align(image)

    def align(self, image):
        """``(crop, FaceDetection)`` of the kept face of ``image``, or None without a face."""
        image = _check_photo(image)
        return self.align_detected(image, self.detector.detect(image))

    def align_detected(self, image, detections):
        """Like :meth:`align` with the detections already made."""
        face = self.select_face(detections, image.shape)
        if face is None:
            return None
        matrix = estimate_similarity(face.landmarks, self.template)
        return warp_face(image, matrix, self.image_size), face

    def select_face(self, detections, image_shape):
        """The detection kept under ``self.select`` for a photo of ``image_shape``; None if empty."""
        if not detections:
            return None
        center_x, center_y = (image_shape[1] - 1) / 2.0, (image_shape[0] - 1) / 2.0

        def squared_offset(detection):
            x, y = detection.center
            return (x - center_x) ** 2 + (y - center_y) ** 2

        if self.select == "largest":
            return max(detections, key=lambda d: d.area)
        if self.select == "central":
            return min(detections, key=squared_offset)
        return max(detections, key=lambda d: d.area - 2.0 * squared_offset(d))

    def align_folder(self, src, dst, identities=None, limit=None, progress=None, log_every=100):
        """Align every photo under ``src`` into ``dst``; resumable, nothing dropped unreported.

        Photos are ``src/*`` (flat) and ``src/<identity>/*``. Outputs are JPEG (quality 95)
        ``dst/<identity>/<name>.jpg`` (``dst/<name>.jpg`` for flat photos without ``identities``).
        Outputs already there are skipped, so a killed job run again continues where it
        stopped (each output is written under a temporary name and renamed, so none is ever
        half-written). ``dst/failed.txt`` gets one ``photo<TAB>reason`` line per photo without a
        face or that cannot be read, ``dst/multi_face.txt`` one line per photo with several
        faces (which face was kept); paths relative to ``src``.

        Args:
            src: folder of photos.
            dst: output folder (created; must not be inside ``src``).
            identities: optional path of a ``file identity`` text file (``file`` relative to
                ``src``): only those photos are aligned, into ``dst/<identity>/``; photos in
                ``src`` it does not list are counted and named in the summary.
            limit: align at most this many photos (the first in sorted / file order).
            progress: optional callable receiving a progress line every ``log_every`` photos.
            log_every: photos between progress lines.

        Returns:
            an :class:`AlignSummary`.
        """
        started = time.time()
        src = os.path.abspath(os.fspath(src))
        dst = os.path.abspath(os.fspath(dst))
        if not os.path.isdir(src):
            raise FileNotFoundError(f"photo folder {src} does not exist or is not a folder")
        if dst == src or dst.startswith(src + os.sep):
            raise ValueError(f"output folder {dst} must not be {src} or inside it")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"`limit` must be None or an int >= 1, got {limit!r}")
        identity_map = read_identities(identities) if identities is not None else None
        jobs, not_photos, unlisted = _list_photos(src, identity_map, identities)
        if limit is not None:
            jobs = jobs[:limit]
        os.makedirs(dst, exist_ok=True)

        summary = AlignSummary(src=src, dst=dst, select=self.select, photos=len(jobs),
                               not_photos=not_photos, unlisted=unlisted)
        multi_face_path = os.path.join(dst, MULTI_FACE_FILE)
        # A resumed job keeps earlier multi-face lines of outputs that still exist; failed photos
        # have no output, are tried again, and so are listed again.
        kept_multi = _read_kept_multi_face(multi_face_path, dst)
        pending = []
        for job in jobs:
            if os.path.exists(os.path.join(dst, job.output)):
                summary.skipped_existing += 1
            else:
                pending.append(job)
        batch_size = getattr(self.detector, "batch_size", 16)
        with open(os.path.join(dst, FAILED_FILE), "w", encoding="utf-8") as failed_file, \
                open(multi_face_path, "w", encoding="utf-8") as multi_file:
            multi_file.writelines(kept_multi)
            multi_file.flush()
            report = _Reporter(summary, failed_file, multi_file)
            done = 0
            for start in range(0, len(pending), batch_size):
                chunk = pending[start:start + batch_size]
                self._align_chunk(chunk, dst, report)
                previous = done
                done += len(chunk)
                if progress is not None and (done // log_every > previous // log_every
                                             or done == len(pending)):
                    elapsed = time.time() - started
                    progress(
                        f"{done}/{len(pending)} photos ({done / max(elapsed, 1e-9):.1f}/s): "
                        f"{summary.aligned} aligned, {summary.no_face} without a face, "
                        f"{summary.unreadable} unreadable, {summary.errors} errors"
                    )
        summary.seconds = time.time() - started
        logger.info("%s", summary)
        return summary

    def _align_chunk(self, chunk, dst, report):
        images, ready = [], []
        for job in chunk:
            if job.missing:
                report.failed(job, "unreadable", f"listed in {job.missing} but not found")
                continue
            image, reason = read_photo(job.path)
            if image is None:
                report.failed(job, "unreadable", reason)
            else:
                images.append(image)
                ready.append(job)
        if not ready:
            return
        try:
            all_detections = _detect_many(self.detector, images)
        except ImportError:
            raise  # no detector at all (mtcnn missing): stop, don't fail every photo
        except Exception:  # noqa: BLE001 - one odd photo must not stop the job: retry one by one
            all_detections = []
            for image in images:
                try:
                    all_detections.append(self.detector.detect(image))
                except ImportError:
                    raise
                except Exception as error:  # noqa: BLE001
                    all_detections.append(error)
        for image, job, detections in zip(images, ready, all_detections):
            if isinstance(detections, Exception):
                report.failed(job, "errors",
                              f"face detector failed: {type(detections).__name__}: {detections}")
                continue
            result = self.align_detected(image, detections)
            if result is None:
                report.failed(job, "no_face", "no face found")
                continue
            crop, face = result
            _write_jpeg(crop, os.path.join(dst, job.output))
            report.aligned(job, detections, face)


class AlignSummary:
    """Counts of an :meth:`FaceAligner.align_folder` run; ``str()`` gives the human report.

    Attributes:
        photos: photos considered (after ``limit``); ``aligned + skipped_existing + no_face +
            unreadable + errors == photos``.
        aligned: crops written by this run.
        skipped_existing: photos whose output already existed (a resumed job).
        no_face: photos where no face passed the detector's threshold.
        unreadable: missing, empty, truncated or non-image photo files.
        errors: photos on which the face detector raised.
        multi_face: aligned photos (this run) holding more than one face.
        not_photos: ``[(path, reason)]`` of entries under ``src`` that are not photos.
        unlisted: photos under ``src`` that the identities file does not name (not aligned).
        failed_path, multi_face_path: the lists written into ``dst``.
        seconds: wall time of the run.
    """

    def __init__(self, src, dst, select, photos, not_photos=(), unlisted=()):
        self.src = src
        self.dst = dst
        self.select = select
        self.photos = photos
        self.aligned = 0
        self.skipped_existing = 0
        self.no_face = 0
        self.unreadable = 0
        self.errors = 0
        self.multi_face = 0
        self.not_photos = list(not_photos)
        self.unlisted = list(unlisted)
        self.failed_path = os.path.join(dst, FAILED_FILE)
        self.multi_face_path = os.path.join(dst, MULTI_FACE_FILE)
        self.seconds = 0.0

    @property
    def failed(self):
        """Photos without a crop after this run."""
        return self.no_face + self.unreadable + self.errors

    def to_dict(self):
        return {
            "src": self.src, "dst": self.dst, "select": self.select, "photos": self.photos,
            "aligned": self.aligned, "skipped_existing": self.skipped_existing,
            "no_face": self.no_face, "unreadable": self.unreadable, "errors": self.errors,
            "multi_face": self.multi_face, "not_photos": len(self.not_photos),
            "unlisted": len(self.unlisted), "seconds": round(self.seconds, 1),
        }

    def __str__(self):
        lines = [
            f"{self.src} -> {self.dst}: {self.photos} photos: {self.aligned} aligned, "
            f"{self.skipped_existing} already aligned (skipped), {self.no_face} without a face, "
            f"{self.unreadable} unreadable, {self.errors} detector errors "
            f"({self.seconds:.0f} s)"
        ]
        if self.failed:
            lines.append(f"{self.failed} photos without a crop are listed in {self.failed_path}")
        if self.multi_face:
            lines.append(
                f"{self.multi_face} photos held several faces; kept the {self.select} one "
                f"(listed in {self.multi_face_path})"
            )
        if self.not_photos:
            shown = ", ".join(os.path.relpath(p, self.src) for p, _ in self.not_photos[:_MAX_NAMED])
            more = ", ..." if len(self.not_photos) > _MAX_NAMED else ""
            lines.append(f"{len(self.not_photos)} entries are not photos and were left alone: "
                         f"{shown}{more}")
        if self.unlisted:
            shown = ", ".join(self.unlisted[:_MAX_NAMED])
            more = ", ..." if len(self.unlisted) > _MAX_NAMED else ""
            lines.append(f"{len(self.unlisted)} photos are not in the identities file and were "
                         f"not aligned: {shown}{more}")
        return "\n".join(lines)

    def __repr__(self):
        return f"AlignSummary({self.to_dict()})"


def warp_face(image, matrix, image_size=112):
    """Warp ``image`` by the affine ``matrix`` (photo pixel -> crop pixel) into a square crop.

    Bilinear, black outside the photo, pixel centres at integer coordinates (as the landmarks
    and the template). When the crop is more than 2x smaller than the face, the face region is
    first shrunk with an antialiased resize so that the warp does not alias.

    Args:
        image: uint8 (H, W, 3) RGB photo.
        matrix: (2, 3) affine map from photo to crop coordinates (from
            :func:`kerasface.data.similarity_transform.estimate_similarity`).
        image_size: side of the output.

    Returns:
        uint8 (image_size, image_size, 3).
    """
    import tensorflow as tf

    image = _check_photo(image)
    matrix = np.asarray(matrix, np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"`matrix` must be (2, 3), got shape {matrix.shape}")
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    if scale < _MIN_WARP_SCALE:
        image, matrix = _shrink_face_region(image, matrix, image_size, scale)
    # The projective op maps each *output* pixel to the input point it samples, so it takes the
    # inverse map. keras.ops.image.affine_transform would do the same but only returns an image
    # of the input's size; this op samples the 112x112 crop directly.
    inverse = invert_affine(matrix)
    transform = np.concatenate([inverse.reshape(6), [0.0, 0.0]]).astype(np.float32)[None]
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.constant(image[None], tf.float32),
        transforms=tf.constant(transform),
        output_shape=tf.constant([image_size, image_size], tf.int32),
        fill_value=tf.constant(0.0, tf.float32),
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    return np.clip(np.round(warped[0].numpy()), 0, 255).astype(np.uint8)


def read_photo(path):
    """``(uint8 RGB array, None)`` for a readable photo, else ``(None, reason)``.

    Decodes with :func:`kerasface.data.preprocessing.decode_rgb` (accurate IDCT, as the
    training pipeline) and applies the EXIF orientation of camera photos.
    """
    import tensorflow as tf

    from kerasface.data.bad_record_tracker import diagnose_image_bytes
    from kerasface.data.preprocessing import decode_rgb

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        return None, f"cannot be read: {error.strerror or error}"
    try:
        image = decode_rgb(tf.constant(data)).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
        # Decoding first and diagnosing only failures keeps good photos to one decode.
        reason = diagnose_image_bytes(data, what="file")
        return None, reason or f"cannot be decoded: {_one_line(error)}"
    return _apply_exif_orientation(image, data), None


def read_identities(path):
    """``{file: identity}`` from a text file of ``file identity`` lines.

    Blank lines and lines starting with ``#`` are ignored. A malformed line, a file listed
    twice or an identity that is not a plain folder name raises ValueError naming the file
    and line.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"identities file {path} does not exist")
    mapping, first_line = {}, {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            fields = text.split()
            if len(fields) != 2:
                raise ValueError(
                    f"{path}: line {number}: expected 2 fields `file identity`, got "
                    f"{len(fields)}: {text!r}"
                )
            name, identity = fields
            if identity in (".", "..") or "/" in identity or "\\" in identity:
                raise ValueError(
                    f"{path}: line {number}: identity {identity!r} must be a plain folder name"
                )
            if os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
                raise ValueError(
                    f"{path}: line {number}: file {name!r} must be relative to the photo folder"
                )
            if name in mapping:
                raise ValueError(
                    f"{path}: line {number}: {name} is already listed on line {first_line[name]}"
                )
            mapping[name] = identity
            first_line[name] = number
    if not mapping:
        raise ValueError(f"{path}: no `file identity` lines")
    return mapping


# ---- internals ---------------------------------------------------------------------------


class _Job:
    __slots__ = ("source", "path", "output", "missing")

    def __init__(self, source, path, output, missing=None):
        self.source = source  # relative to src, as written in the lists
        self.path = path
        self.output = output  # relative to dst
        self.missing = missing  # identities file that lists a photo that does not exist


class _Reporter:
    def __init__(self, summary, failed_file, multi_file):
        self.summary = summary
        self.failed_file = failed_file
        self.multi_file = multi_file

    def failed(self, job, counter, reason):
        setattr(self.summary, counter, getattr(self.summary, counter) + 1)
        self.failed_file.write(f"{job.source}\t{_one_line(reason)}\n")
        self.failed_file.flush()

    def aligned(self, job, detections, face):
        self.summary.aligned += 1
        if len(detections) > 1:
            self.summary.multi_face += 1
            box = ",".join(f"{v:.0f}" for v in face.box)
            self.multi_file.write(
                f"{job.output}\t{job.source}\t{len(detections)} faces\tkept box {box} "
                f"score {face.score:.3f}\n"
            )
            self.multi_file.flush()


def _one_line(text):
    return " ".join(str(text).split())


def _detect_many(detector, images):
    if hasattr(detector, "detect_batch"):
        return detector.detect_batch(images)
    return [detector.detect(image) for image in images]


def _is_photo_name(name):
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _output_name(name):
    return os.path.splitext(name)[0] + ".jpg"


def _scan(src):
    """``([relative photo paths], [(path, reason)] not photos)`` of ``src/*`` and ``src/*/*``."""
    photos, not_photos = [], []
    with os.scandir(src) as entries:
        entries = sorted(entries, key=lambda entry: entry.name)
    for entry in entries:
        if entry.is_dir():
            with os.scandir(entry.path) as inner:
                inner = sorted(inner, key=lambda e: e.name)
            for item in inner:
                if item.is_dir():
                    not_photos.append((item.path, "sub-folder inside an identity folder"))
                elif _is_photo_name(item.name):
                    photos.append(f"{entry.name}/{item.name}")
                else:
                    not_photos.append((item.path, "not an image file extension"))
        elif _is_photo_name(entry.name):
            photos.append(entry.name)
        else:
            not_photos.append((entry.path, "not an image file extension"))
    return photos, not_photos


def _list_photos(src, identity_map, identities_path):
    found, not_photos = _scan(src)
    jobs, outputs = [], {}
    if identity_map is None:
        for source in found:
            jobs.append(_Job(source, os.path.join(src, source), _output_name(source)))
        unlisted = []
    else:
        for source, identity in identity_map.items():
            path = os.path.join(src, source)
            missing = None if os.path.isfile(path) else os.fspath(identities_path)
            output = f"{identity}/{_output_name(os.path.basename(source))}"
            jobs.append(_Job(source, path, output, missing))
        unlisted = [source for source in found if source not in identity_map]
    for job in jobs:
        if job.output in outputs:
            raise ValueError(
                f"{src}: {outputs[job.output]} and {job.source} would both be written to "
                f"{job.output}; rename one of them"
            )
        outputs[job.output] = job.source
    return jobs, not_photos, unlisted


def _read_kept_multi_face(path, dst):
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        lines = [line if line.endswith("\n") else line + "\n" for line in f if line.strip()]
    return [line for line in lines if os.path.exists(os.path.join(dst, line.split("\t")[0]))]


def _write_jpeg(crop, path):
    import tensorflow as tf

    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = tf.io.encode_jpeg(tf.constant(crop), quality=95).numpy()
    partial = path + _PARTIAL_SUFFIX
    with open(partial, "wb") as f:
        f.write(data)
    # The rename is atomic: a killed job leaves a complete crop or none, never half of one
    # that the resume would then skip.
    os.replace(partial, path)


def _check_photo(image):
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB photo, got {array.dtype} {array.shape}")
    return array


def _shrink_face_region(image, matrix, image_size, scale):
    """Crop the photo around the crop's footprint and shrink it (antialiased) to 2x the crop scale.

    Returns the smaller image and the matrix re-expressed for it.
    """
    import tensorflow as tf

    corners = np.array([[0, 0], [image_size - 1, 0], [0, image_size - 1],
                        [image_size - 1, image_size - 1]], np.float64)
    footprint = apply_similarity(invert_affine(matrix), corners)
    margin = 4.0 / scale  # a few crop pixels, so the bilinear taps at the border stay inside
    height, width = image.shape[:2]
    x0 = max(int(math.floor(footprint[:, 0].min() - margin)), 0)
    y0 = max(int(math.floor(footprint[:, 1].min() - margin)), 0)
    x1 = min(int(math.ceil(footprint[:, 0].max() + margin)) + 1, width)
    y1 = min(int(math.ceil(footprint[:, 1].max() + margin)) + 1, height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return image, matrix  # the crop lies outside the photo: nothing to shrink
    region = image[y0:y1, x0:x1]
    factor = scale / _MIN_WARP_SCALE
    new_height = max(1, round((y1 - y0) * factor))
    new_width = max(1, round((x1 - x0) * factor))
    small = tf.image.resize(region, [new_height, new_width], method="bilinear", antialias=True)
    small = np.clip(np.round(small.numpy()), 0, 255).astype(np.uint8)
    fx, fy = new_width / (x1 - x0), new_height / (y1 - y0)
    # small pixel r <- photo pixel u: r = (u - x0 + 0.5) * f - 0.5, so u = r / f + (0.5 / f - 0.5 + x0)
    to_photo = np.array([[1 / fx, 0.0, 0.5 / fx - 0.5 + x0], [0.0, 1 / fy, 0.5 / fy - 0.5 + y0]])
    linear = matrix[:, :2] @ to_photo[:, :2]
    offset = matrix[:, :2] @ to_photo[:, 2] + matrix[:, 2]
    return small, np.concatenate([linear, offset[:, None]], axis=1)


def _apply_exif_orientation(image, data):
    if not data.startswith(b"\xff\xd8\xff"):
        return image
    try:
        from PIL import Image

        orientation = Image.open(io.BytesIO(data)).getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block just means "as stored"
        return image
    methods = {
        2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
        6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90",
    }
    if orientation not in methods:
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).transpose(getattr(Image.Transpose, methods[orientation])))
