"""Face alignment of raw photos: similarity fit, warp, face choice, folder job, MTCNN wrapper, CLI."""

import argparse
import io
import os
import sys

import numpy as np
import pytest
from PIL import Image

from kerasface.data.face_aligner import (
    FaceAligner,
    read_identities,
    read_photo,
    warp_face,
)
from kerasface.data.face_detector import FaceDetection, FaceDetector
from kerasface.data.similarity_transform import (
    ARCFACE_TEMPLATE,
    apply_similarity,
    arcface_template,
    estimate_similarity,
    invert_affine,
)
from kerasface.testing.shared_data import require_shared


def _similarity(angle_degrees, scale, tx, ty):
    angle = np.deg2rad(angle_degrees)
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


def _lstsq_similarity(src, dst):
    """Independent reference: x' = a x - b y + tx, y' = b x + a y + ty by linear least squares."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows.append([x, -y, 1, 0])
        rhs.append(u)
        rows.append([y, x, 0, 1])
        rhs.append(v)
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


# ---- similarity transform ---------------------------------------------------------------


def test_template_values_and_scaling():
    assert ARCFACE_TEMPLATE.shape == (5, 2) and ARCFACE_TEMPLATE.dtype == np.float32
    np.testing.assert_allclose(ARCFACE_TEMPLATE[0], [38.2946, 51.6963], rtol=0, atol=1e-4)
    np.testing.assert_allclose(ARCFACE_TEMPLATE[4], [70.7299, 92.2041], rtol=0, atol=1e-4)
    np.testing.assert_allclose(arcface_template(224), ARCFACE_TEMPLATE * 2, rtol=1e-6)
    with pytest.raises(ValueError, match="image_size"):
        arcface_template(8)


@pytest.mark.parametrize("angle, scale, tx, ty", [(0, 1, 0, 0), (17, 2.7, 130.5, -40.25),
                                                  (-160, 0.31, 5, 900)])
def test_estimate_similarity_recovers_known_transform(angle, scale, tx, ty):
    known = _similarity(angle, scale, tx, ty)
    src = ARCFACE_TEMPLATE.astype(np.float64)
    dst = src @ known[:, :2].T + known[:, 2]
    matrix = estimate_similarity(src, dst)
    assert matrix.shape == (2, 3)
    np.testing.assert_allclose(matrix, known, atol=1e-6 * max(1, abs(tx), abs(ty)))
    np.testing.assert_allclose(apply_similarity(matrix, src), dst, atol=1e-5)
    # The inverse map takes the transformed points back.
    np.testing.assert_allclose(apply_similarity(invert_affine(matrix), dst), src, atol=1e-5)


def test_estimate_similarity_matches_lstsq_reference_on_noisy_points():
    rng = np.random.default_rng(3)
    for _ in range(5):
        src = rng.uniform(0, 300, (5, 2))
        dst = src @ _similarity(rng.uniform(-40, 40), rng.uniform(0.2, 3), 10, -7)[:, :2].T
        dst += rng.normal(0, 4, dst.shape)
        np.testing.assert_allclose(estimate_similarity(src, dst), _lstsq_similarity(src, dst),
                                   atol=1e-7, rtol=1e-7)


def test_estimate_similarity_never_reflects():
    src = ARCFACE_TEMPLATE.astype(np.float64)
    mirrored = src * [-1, 1] + [112, 0]  # a mirror image of the template
    matrix = estimate_similarity(src, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0
    np.testing.assert_allclose(matrix, _lstsq_similarity(src, mirrored), atol=1e-7)


def test_estimate_similarity_rejects_bad_points():
    with pytest.raises(ValueError, match="same number of points"):
        estimate_similarity(np.zeros((5, 2)) + np.arange(5)[:, None], ARCFACE_TEMPLATE[:4])
    with pytest.raises(ValueError, match="all coincide"):
        estimate_similarity(np.ones((5, 2)), ARCFACE_TEMPLATE)
    with pytest.raises(ValueError, match=r"`src` must be \(N, 2\)"):
        estimate_similarity(np.zeros((5, 3)), ARCFACE_TEMPLATE)
    with pytest.raises(ValueError, match="non-finite"):
        estimate_similarity(np.full((5, 2), np.nan), ARCFACE_TEMPLATE)


# ---- warp -------------------------------------------------------------------------------


def test_warp_takes_photo_to_crop_map_and_samples_the_right_pixels():
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    # crop pixel = photo pixel - (10, 20): crop[y, x] must be photo[y + 20, x + 10], exactly.
    matrix = np.array([[1.0, 0.0, -10.0], [0.0, 1.0, -20.0]])
    crop = warp_face(photo, matrix, 112)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop, photo[20:132, 10:122])
    # Outside the photo is black.
    crop = warp_face(photo, np.array([[1.0, 0, 50], [0, 1.0, 0]]), 112)
    assert np.all(crop[:, :50] == 0)
    np.testing.assert_array_equal(crop[:, 50:], photo[:112, :62])


def _photo_with_dots(points, shape, sigma):
    """A dark photo with a bright Gaussian blob centred (sub-pixel) on each point."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    canvas = np.zeros(shape[:2])
    for x, y in points:
        canvas += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2))
    return np.repeat(np.clip(canvas * 230 + 10, 0, 255).round().astype(np.uint8)[..., None], 3, 2)


def _blob_centre(crop, near, radius=6):
    x0, y0 = int(round(near[0])), int(round(near[1]))
    window = crop[y0 - radius:y0 + radius + 1, x0 - radius:x0 + radius + 1, 0].astype(np.float64)
    weights = np.clip(window - 10, 0, None)
    ys, xs = np.mgrid[y0 - radius:y0 + radius + 1, x0 - radius:x0 + radius + 1]
    return np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()


@pytest.mark.parametrize("angle, scale", [(12, 1.3), (-25, 3.1), (170, 0.8)])
def test_alignment_puts_painted_landmarks_on_the_template(angle, scale):
    # Landmarks in the photo = the template moved by a known similarity; scale 3.1 means the
    # crop is 3.1x smaller than the face, which goes through the antialiased shrink path.
    to_photo = _similarity(angle, scale, 0, 0)
    points = apply_similarity(to_photo, ARCFACE_TEMPLATE)
    # Far from the photo's top-left corner, so that the shrink path crops at an offset.
    points += np.array([260.3, 280.7]) - points.min(axis=0)
    shape = (int(points[:, 1].max() + 270), int(points[:, 0].max() + 270), 3)
    photo = _photo_with_dots(points, shape, sigma=1.6 * scale)

    class DotDetector:
        def detect(self, image):
            box = np.array([*points.min(0) - 20, *points.max(0) + 20], np.float32)
            return [FaceDetection(box, 0.99, points.astype(np.float32))]

    crop, face = FaceAligner(DotDetector()).align(photo)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    assert face.score == 0.99
    for template_point in ARCFACE_TEMPLATE:
        centre = _blob_centre(crop, template_point)
        assert np.linalg.norm(centre - template_point) < 1.0, (centre, template_point)


def test_warp_far_below_face_size_is_antialiased():
    # A 1-pixel black/white checkerboard warped 4x smaller: an antialiased shrink averages it to
    # flat grey; plain bilinear sampling would pick up a pattern of whole black or white pixels.
    board = (np.indices((600, 600)).sum(axis=0) % 2 * 255).astype(np.uint8)
    photo = np.repeat(board[..., None], 3, axis=2)
    crop = warp_face(photo, _similarity(10, 0.25, 20, 5), 112).astype(np.float64)
    inside = crop[30:105, 30:105, 0]  # inside the photo's footprint (the rest is black)
    assert abs(inside.mean() - 127.5) < 6 and inside.std() < 6, (inside.mean(), inside.std())


# ---- face selection -----------------------------------------------------------------------


def _face(x1, y1, x2, y2, score=0.99):
    box = np.array([x1, y1, x2, y2], np.float32)
    w, h = x2 - x1, y2 - y1
    landmarks = np.array([[x1 + 0.3 * w, y1 + 0.45 * h], [x1 + 0.7 * w, y1 + 0.45 * h],
                          [x1 + 0.5 * w, y1 + 0.6 * h], [x1 + 0.35 * w, y1 + 0.8 * h],
                          [x1 + 0.65 * w, y1 + 0.8 * h]], np.float32)
    return FaceDetection(box, score, landmarks)


class FakeDetector:
    """Returns preset detections and counts calls."""

    def __init__(self, detections):
        self.detections = detections
        self.calls = 0

    def detect(self, image):
        self.calls += 1
        return list(self.detections)


def test_selection_picks_largest_central_or_mix():
    shape = (400, 600, 3)  # centre (299.5, 199.5)
    big_corner = _face(0, 0, 200, 240)  # largest, at the border
    small_centre = _face(280, 180, 320, 225)  # nearest the centre
    medium_near = _face(220, 100, 360, 270)  # big and near the centre
    detections = [small_centre, big_corner, medium_near]

    def pick(select):
        return FaceAligner(FakeDetector([]), select=select).select_face(detections, shape)

    assert pick("largest") is big_corner
    assert pick("central") is small_centre
    assert pick("largest_central") is medium_near
    assert FaceAligner(FakeDetector([])).select_face([], shape) is None
    with pytest.raises(ValueError, match="`select` must be one of"):
        FaceAligner(FakeDetector([]), select="biggest")


def test_align_returns_none_without_a_face_and_the_selected_face_otherwise():
    photo = np.full((400, 600, 3), 128, np.uint8)
    assert FaceAligner(FakeDetector([])).align(photo) is None
    faces = [_face(0, 0, 50, 60), _face(200, 100, 400, 340)]
    crop, face = FaceAligner(FakeDetector(faces), select="largest").align(photo)
    assert crop.shape == (112, 112, 3) and face is faces[1]
    with pytest.raises(ValueError, match=r"uint8 \(H, W, 3\)"):
        FaceAligner(FakeDetector(faces)).align(photo[..., 0])


# ---- folder job ---------------------------------------------------------------------------


class ColourDetector:
    """No face on dark photos, two faces on bright ones, one otherwise."""

    def __init__(self):
        self.detected = 0

    def detect(self, image):
        self.detected += 1
        level = image[0, 0, 0]
        if level < 60:
            return []
        faces = [_face(20, 20, 120, 140)]
        if level > 200:
            faces.append(_face(150, 30, 190, 80))
        return faces


def _write_photo(path, level, size=(200, 160)):
    Image.new("RGB", size, (int(level), 100, 100)).save(path, quality=95)


def _make_raw_folder(root):
    os.makedirs(root)
    _write_photo(os.path.join(root, "a.jpg"), 128)
    _write_photo(os.path.join(root, "b.jpg"), 128)
    _write_photo(os.path.join(root, "c.png"), 230)  # two faces
    _write_photo(os.path.join(root, "dark.jpg"), 20)  # no face
    with open(os.path.join(root, "a.jpg"), "rb") as f:
        data = f.read()
    with open(os.path.join(root, "broken.jpg"), "wb") as f:
        f.write(data[: len(data) // 2])  # truncated JPEG
    with open(os.path.join(root, "notes.txt"), "w") as f:
        f.write("not a photo")
    with open(os.path.join(root, "fake.jpg"), "w") as f:
        f.write("plain text with a .jpg name")


def _write_identities(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _failed_lines(dst):
    with open(os.path.join(dst, "failed.txt")) as f:
        return dict(line.rstrip("\n").split("\t") for line in f)


def test_align_folder_with_identities_failed_list_and_resume(tmp_path):
    src, dst = str(tmp_path / "raw"), str(tmp_path / "aligned")
    _make_raw_folder(src)
    identities = _write_identities(str(tmp_path / "ids.txt"), [
        "# file identity", "a.jpg alice", "b.jpg bob", "c.png bob", "dark.jpg carol",
        "broken.jpg carol", "fake.jpg dave", "gone.jpg dave",
    ])
    detector = ColourDetector()
    summary = FaceAligner(detector).align_folder(src, dst, identities=identities)

    assert sorted(os.listdir(os.path.join(dst, "bob"))) == ["b.jpg", "c.jpg"]
    assert os.listdir(os.path.join(dst, "alice")) == ["a.jpg"]
    assert not os.path.exists(os.path.join(dst, "carol"))
    crop = np.asarray(Image.open(os.path.join(dst, "alice", "a.jpg")))
    assert crop.shape == (112, 112, 3)
    counts = (summary.photos, summary.aligned, summary.no_face, summary.unreadable,
              summary.skipped_existing, summary.multi_face, summary.errors)
    assert counts == (7, 3, 1, 3, 0, 1, 0)
    assert [os.path.basename(p) for p, _ in summary.not_photos] == ["notes.txt"]
    assert summary.unlisted == []

    failed = _failed_lines(dst)
    assert set(failed) == {"dark.jpg", "broken.jpg", "fake.jpg", "gone.jpg"}
    assert failed["dark.jpg"] == "no face found"
    assert "truncated JPEG" in failed["broken.jpg"]
    assert "not an image" in failed["fake.jpg"]
    assert failed["gone.jpg"] == f"listed in {identities} but not found"
    with open(os.path.join(dst, "multi_face.txt")) as f:
        multi = f.read().splitlines()
    assert len(multi) == 1 and multi[0].startswith("bob/c.jpg\tc.png\t2 faces\tkept box")
    text = str(summary)
    assert "3 aligned" in text and "1 without a face" in text and "3 unreadable" in text
    assert "failed.txt" in text and "notes.txt" in text

    # A job killed mid-way: one crop missing, a half-written temporary file left behind.
    os.remove(os.path.join(dst, "bob", "b.jpg"))
    with open(os.path.join(dst, "bob", "b.jpg.partial"), "wb") as f:
        f.write(b"\xff\xd8\xff half")
    detector.detected = 0
    summary = FaceAligner(detector).align_folder(src, dst, identities=identities)
    assert (summary.aligned, summary.skipped_existing, summary.no_face, summary.unreadable) == (1, 2, 1, 3)
    assert detector.detected == 2  # b.jpg and the face-less dark.jpg, not the finished crops
    assert sorted(os.listdir(os.path.join(dst, "bob"))) == ["b.jpg", "c.jpg"]
    assert set(_failed_lines(dst)) == {"dark.jpg", "broken.jpg", "fake.jpg", "gone.jpg"}
    with open(os.path.join(dst, "multi_face.txt")) as f:
        assert f.read().splitlines() == multi  # kept from the first run


def test_align_folder_flat_and_identity_folders_without_identities_file(tmp_path):
    src, dst = tmp_path / "raw", tmp_path / "out"
    (src / "zoe").mkdir(parents=True)
    _write_photo(src / "zoe" / "1.jpg", 128)
    _write_photo(src / "zoe" / "2.bmp", 128)
    _write_photo(src / "loose.jpg", 128)
    (src / "zoe" / "deeper").mkdir()
    summary = FaceAligner(ColourDetector()).align_folder(src, dst, limit=2)
    # Sorted order: loose.jpg, zoe/1.jpg, zoe/2.bmp; --limit 2 keeps the first two.
    assert summary.photos == 2 and summary.aligned == 2
    assert os.path.isfile(dst / "loose.jpg") and os.path.isfile(dst / "zoe" / "1.jpg")
    assert not os.path.exists(dst / "zoe" / "2.jpg")
    assert [os.path.basename(p) for p, _ in summary.not_photos] == ["deeper"]
    with pytest.raises(ValueError, match="must not be"):
        FaceAligner(ColourDetector()).align_folder(src, src / "inside")


def test_align_folder_names_unlisted_photos_and_output_clashes(tmp_path):
    src = tmp_path / "raw"
    src.mkdir()
    _write_photo(src / "a.jpg", 128)
    _write_photo(src / "a.png", 128)
    ids = _write_identities(str(tmp_path / "ids.txt"), ["a.jpg x"])
    summary = FaceAligner(ColourDetector()).align_folder(src, tmp_path / "out", identities=ids)
    assert summary.unlisted == ["a.png"] and "a.png" in str(summary)
    with pytest.raises(ValueError, match="would both be written to x/a.jpg"):
        ids = _write_identities(str(tmp_path / "ids2.txt"), ["a.jpg x", "a.png x"])
        FaceAligner(ColourDetector()).align_folder(src, tmp_path / "out2", identities=ids)


@pytest.mark.parametrize("lines, message", [
    (["a.jpg x", "b.jpg", "c.jpg z"], r"ids\.txt: line 2: expected 2 fields `file identity`, got 1"),
    (["a.jpg x y"], r"ids\.txt: line 1: expected 2 fields `file identity`, got 3"),
    (["a.jpg x", "", "a.jpg y"], r"ids\.txt: line 3: a\.jpg is already listed on line 1"),
    (["a.jpg ../x"], r"ids\.txt: line 1: identity '\.\./x' must be a plain folder name"),
    (["../a.jpg x"], r"ids\.txt: line 1: file '\.\./a\.jpg' must be relative"),
    (["# only a comment"], r"ids\.txt: no `file identity` lines"),
])
def test_bad_identities_file_names_file_and_line(tmp_path, lines, message):
    path = _write_identities(str(tmp_path / "ids.txt"), lines)
    with pytest.raises(ValueError, match=message):
        read_identities(path)
    with pytest.raises(FileNotFoundError, match="identities file"):
        read_identities(str(tmp_path / "missing.txt"))


def test_read_photo_applies_exif_orientation_and_explains_failures(tmp_path):
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :10] = 255  # a white band on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95, exif=exif)
    path = tmp_path / "rotated.jpg"
    path.write_bytes(buffer.getvalue())
    image, reason = read_photo(path)
    assert reason is None and image.shape == (60, 40, 3)
    assert image[:10].mean() > 200 and image[-10:].mean() < 50  # the band is now on top
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert read_photo(tmp_path / "empty.jpg") == (None, "empty file (0 bytes)")
    image, reason = read_photo(tmp_path / "nope.jpg")
    assert image is None and reason.startswith("cannot be read")


# ---- MTCNN wrapper ------------------------------------------------------------------------


class _DotMTCNN:
    """Stands in for mtcnn.MTCNN: one 'face' per photo whose landmarks all sit on its bright dot."""

    def __init__(self):
        self.batches = []

    def detect_faces(self, images, **kwargs):
        assert kwargs["output_type"] == "numpy" and kwargs["box_format"] == "xyxy"
        assert kwargs["batch_stack_justification"] == "topleft"
        self.batches.append([image.shape for image in images])
        rows = []
        for index, image in enumerate(images):
            grey = image[..., 0].astype(np.float64)
            weights = np.clip(grey - 128, 0, None)
            if weights.sum() == 0:
                continue
            ys, xs = np.mgrid[:grey.shape[0], :grey.shape[1]]
            x, y = (weights * xs).sum() / weights.sum(), (weights * ys).sum() / weights.sum()
            rows.append([index, x - 5, y - 5, x + 5, y + 5, 0.95] + [x] * 5 + [y] * 5)
        return np.array(rows) if rows else np.empty((0, 16))


def test_detector_maps_shrunk_detections_back_and_keeps_photo_order():
    photos, dots = [], [(1500.25, 700.5), (40.0, 30.0), (800.0, 1900.75), None]
    for (height, width), dot in zip([(1200, 2000), (100, 120), (2400, 1000), (90, 90)], dots):
        photo = np.zeros((height, width, 3), np.uint8)
        if dot is not None:
            photo[:] = _photo_with_dots([dot], (height, width), sigma=6.0) if height > 200 else 0
            if height <= 200:
                photo[int(dot[1]), int(dot[0])] = 255
        photos.append(photo)
    detector = FaceDetector(max_side=500, batch_size=2)
    fake = detector._mtcnn = _DotMTCNN()
    results = detector.detect_batch(photos)
    assert [len(r) for r in results] == [1, 1, 1, 0]
    for result, dot in zip(results, dots[:3]):
        assert result[0].landmarks.shape == (5, 2) and result[0].landmarks.dtype == np.float32
        np.testing.assert_allclose(result[0].landmarks[0], dot, atol=0.5)
    # Big photos were shrunk to 500 px (2000x1200 -> 500x300, 1000x2400 -> 208x500), then each
    # photo zero-padded to multiples of 64 and batched only with photos of its padded shape.
    assert sorted(fake.batches) == [[(128, 128, 3), (128, 128, 3)], [(320, 512, 3)], [(512, 256, 3)]]
    detector = FaceDetector(min_confidence=0.9)
    row = [0, 1, 1, 9, 9, 0.95] + [5] * 10
    assert len(detector._to_detections(np.array([row]), (20, 20), 1.0, 1.0)) == 1
    in_padding = [0, 25, 1, 33, 9, 0.95] + [5] * 10  # centre x 29 beyond the 20 px photo
    assert detector._to_detections(np.array([in_padding]), (20, 20), 1.0, 1.0) == []
    assert FaceDetector(min_confidence=0.97)._to_detections(np.array([row]), (20, 20), 1.0, 1.0) == []
    with pytest.raises(ValueError, match="min_confidence"):
        FaceDetector(min_confidence=1.5)


def test_missing_mtcnn_gives_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mtcnn", None)  # makes `import mtcnn` raise ImportError
    with pytest.raises(ImportError, match="pip install mtcnn"):
        FaceDetector().detect(np.zeros((50, 50, 3), np.uint8))
    src = tmp_path / "raw"
    src.mkdir()
    _write_photo(src / "a.jpg", 128)
    # The folder job stops instead of marking every photo as a detector error.
    with pytest.raises(ImportError, match="pip install mtcnn"):
        FaceAligner(FaceDetector()).align_folder(src, tmp_path / "out")


def test_real_mtcnn_finds_both_faces_of_couple_photo():
    pytest.importorskip("mtcnn")
    path = require_shared("data/raw_photos_deepface/couple.jpg")
    image, reason = read_photo(path)
    assert reason is None
    faces = FaceDetector().detect(image)
    assert len(faces) == 2
    for face in faces:
        assert face.score > 0.9
        left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
        assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
        x1, y1, x2, y2 = face.box
        assert np.all((face.landmarks >= [x1, y1]) & (face.landmarks <= [x2, y2]))
    # The two people stand side by side.
    assert abs(faces[0].center[0] - faces[1].center[0]) > 500


# ---- CLI ----------------------------------------------------------------------------------


def test_align_command_runs_and_prints_summary(tmp_path, monkeypatch, capsys):
    from kerasface.cli import align_command
    from kerasface.data import face_detector

    made = {}

    class StubDetector(ColourDetector):
        def __init__(self, **kwargs):
            super().__init__()
            made.update(kwargs)

    monkeypatch.setattr(face_detector, "FaceDetector", StubDetector)
    src = tmp_path / "raw"
    src.mkdir()
    _write_photo(src / "a.jpg", 128)
    _write_photo(src / "b.jpg", 20)
    parser = argparse.ArgumentParser()
    align_command.add_arguments(parser)
    args = parser.parse_args([str(src), str(tmp_path / "out"), "--min-confidence", "0.8",
                              "--select", "largest", "--json", str(tmp_path / "s.json")])
    assert align_command.run(args) == 0
    out = capsys.readouterr().out
    assert "1 aligned" in out and "1 without a face" in out and "failed.txt" in out
    assert made["min_confidence"] == 0.8
    assert os.path.isfile(tmp_path / "out" / "a.jpg") and os.path.isfile(tmp_path / "s.json")
    with pytest.raises(SystemExit):
        parser.parse_args([str(src), "out", "--min-confidence", "2"])
