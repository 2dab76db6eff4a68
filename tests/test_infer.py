"""FaceEmbedder over every format, compare/search against NumPy, clear errors, embed/compare CLI."""

import argparse
import shutil

import keras
import numpy as np
import pytest
from PIL import Image

from kerasface.export import export_onnx, export_saved_model, export_tflite
from kerasface.infer import FaceEmbedder, SearchResult, top_k_search
from kerasface.testing.shared_data import require_shared

EMBEDDING_SIZE = 16


def _tiny_model():
    layers = keras.layers
    images = keras.Input((112, 112, 3), name="image")
    x = layers.Conv2D(8, 5, strides=4, padding="same")(images)
    x = layers.PReLU(shared_axes=[1, 2])(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(EMBEDDING_SIZE)(x)
    outputs = layers.UnitNormalization(axis=-1)(x)
    return keras.Model(images, outputs, name="tiny_infer")


def _reference(model, faces):
    """Keras embeddings with the pixel convention written out, L2-normalised in NumPy."""
    x = (faces.astype(np.float32) - 127.5) / 128.0
    y = np.asarray(model(x, training=False), np.float64)
    return y / np.linalg.norm(y, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return _tiny_model()


@pytest.fixture(scope="module")
def faces():
    # Smooth random blobs: distinct faces whose embeddings differ clearly.
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (8, 7, 7, 3)).astype(np.uint8)
    return np.stack([np.asarray(Image.fromarray(f).resize((112, 112), Image.BILINEAR))
                     for f in small])


@pytest.fixture(scope="module")
def files(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    keras_path = root / "tiny.keras"
    model.save(keras_path)
    return {
        "tflite": export_tflite(model, root / "tiny.tflite"),
        "onnx": export_onnx(model, root / "tiny.onnx"),
        "savedmodel": export_saved_model(model, root / "tiny_savedmodel"),
        "keras": keras_path,
    }


@pytest.fixture(scope="module")
def embedders(files):
    return {name: FaceEmbedder(path) for name, path in files.items()}


@pytest.fixture(scope="module")
def face_files(faces, tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    paths = []
    for index, face in enumerate(faces):
        path = root / "person" / f"{index}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(face).save(path)
        paths.append(path)
    return paths


def _cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("name", ["tflite", "onnx", "savedmodel", "keras"])
def test_every_format_matches_keras(embedders, model, faces, name):
    embedder = embedders[name]
    runtime = {"tflite": "litert", "onnx": "onnxruntime"}.get(name, "tensorflow")
    assert (embedder.format, embedder.runtime, embedder.embedding_size, embedder.input_size,
            embedder.device) == (name, runtime, EMBEDDING_SIZE, (112, 112),
                                 "cpu")
    assert (embedder.metadata is None) == (name == "keras")
    output = embedder.embed(faces, batch_size=3)
    assert output.dtype == np.float32 and output.shape == (8, EMBEDDING_SIZE)
    expected = _reference(model, faces)
    assert _cosines(output, expected).min() > 0.9999
    # The faces are distinct: parity is not trivial.
    assert _cosines(expected[:4], expected[4:]).max() < 0.99
    np.testing.assert_allclose(np.linalg.norm(output, axis=1), 1.0, atol=1e-5)
    # Normalised floats through __call__ (the evaluate_set embed function).
    floats = embedder((faces.astype(np.float32) - 127.5) / 128)
    assert _cosines(floats, expected).min() > 0.9999
    assert f"{name}" in embedder.describe() and f"{EMBEDDING_SIZE}-d" in embedder.describe()


def test_inputs_paths_single_and_empty(embedders, faces, face_files):
    embedder = embedders["onnx"]
    batch = embedder.embed(faces)
    np.testing.assert_allclose(embedder.embed(face_files), batch, atol=1e-6)
    np.testing.assert_allclose(embedder.embed(faces[2]), batch[2:3], atol=1e-6)
    assert embedder.embed(np.zeros((0, 112, 112, 3), np.uint8)).shape == (0, EMBEDDING_SIZE)
    assert embedder.embed([]).shape == (0, EMBEDDING_SIZE)


def test_compare_matches_numpy(embedders, model, faces, face_files):
    embedder = embedders["tflite"]
    expected = _reference(model, faces)
    single = embedder.compare(faces[0], faces[1])
    assert isinstance(single, float)
    assert single == pytest.approx(float(expected[0] @ expected[1]), abs=1e-4)
    assert embedder.compare(face_files[0], faces[1]) == pytest.approx(single, abs=1e-5)
    batch = embedder.compare(faces[:4], faces[4:])
    assert batch.dtype == np.float32 and batch.shape == (4,)
    np.testing.assert_allclose(batch, np.sum(expected[:4] * expected[4:], 1), atol=1e-4)
    # Embeddings (unnormalised on purpose), 1-D -> float, one against many broadcasts.
    raw = np.random.default_rng(1).normal(size=(5, EMBEDDING_SIZE))
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    assert embedder.compare(raw[0] * 3, raw[1]) == pytest.approx(unit[0] @ unit[1], abs=1e-6)
    np.testing.assert_allclose(embedder.compare(raw[0], raw), unit @ unit[0], atol=1e-6)
    # An image against an embedding.
    assert embedder.compare(faces[0], expected[1]) == pytest.approx(single, abs=1e-4)
    with pytest.raises(ValueError, match=r"`b` embeddings have 8 values, this model makes 16"):
        embedder.compare(raw[0], np.ones(8))
    with pytest.raises(ValueError, match="equal numbers of faces or one against many, got 3 and 5"):
        embedder.compare(raw[:3], raw)


def test_search_matches_numpy_in_small_chunks():
    rng = np.random.default_rng(2)
    gallery = rng.normal(size=(500, EMBEDDING_SIZE)).astype(np.float32)
    probes = rng.normal(size=(7, EMBEDDING_SIZE))
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    p = probes / np.linalg.norm(probes, axis=1, keepdims=True)
    scores = p @ g.T
    expected = np.argsort(-scores, axis=1)[:, :5]
    # max_scores=64: gallery blocks of 64 rows, one probe at a time; the merge must be exact.
    for max_scores in (64, 1 << 22):
        result = top_k_search(gallery, probes, k=5, max_scores=max_scores)
        assert isinstance(result, SearchResult) and result.indices.shape == (7, 5)
        np.testing.assert_array_equal(result.indices, expected)
        np.testing.assert_allclose(result.scores, np.take_along_axis(scores, expected, 1),
                                   atol=1e-5)
        assert result.scores.dtype == np.float32 and np.all(np.diff(result.scores, axis=1) <= 0)
    # A memory-mapped gallery is searched block by block too.
    one = top_k_search(gallery, probes[3], k=2, max_scores=100)
    np.testing.assert_array_equal(one.indices, expected[3:4, :2])


def test_search_clamps_k_and_takes_images(embedders, faces, model):
    embedder = embedders["onnx"]
    with pytest.warns(UserWarning, match="k=20 clamped to the gallery size 6"):
        result = embedder.search(faces[:6], faces[6:], k=20)
    assert (result.k, result.requested_k) == (6, 20) and "clamped" in result.note
    expected = _reference(model, faces)
    order = np.argsort(-(expected[6:] @ expected[:6].T), axis=1)
    np.testing.assert_array_equal(result.indices, order)
    # A face searched in a gallery that holds it finds itself first.
    assert embedder.search(faces, faces[3], k=1).indices[0, 0] == 3
    with pytest.raises(ValueError, match="`k` must be an int >= 1, got 0"):
        embedder.search(faces, faces[3], k=0)
    with pytest.raises(ValueError, match="embedding sizes differ: gallery rows have 16 values, probes 4"):
        top_k_search(np.ones((3, 16), np.float32), np.ones((1, 4), np.float32))


def test_bad_images_name_expected_and_received(embedders, faces, tmp_path):
    embedder = embedders["tflite"]
    with pytest.raises(TypeError, match="embed\\(\\) takes uint8 RGB pixels 0-255, got float32"):
        embedder.embed(faces.astype(np.float32))
    small = np.zeros((2, 100, 120, 3), np.uint8)
    with pytest.raises(ValueError, match="expected 112x112 aligned faces, got 100x120"):
        embedder.embed(small)
    with pytest.raises(ValueError, match=r"grayscale image of shape \(112, 112\)"):
        embedder.embed(faces[0, ..., 0])
    with pytest.raises(ValueError, match=r"got grayscale \(1 channel\) images"):
        embedder.embed(faces[..., :1])
    rgba = np.concatenate([faces, faces[..., :1]], axis=-1)
    with pytest.raises(ValueError, match=r"got RGBA \(4 channels\) images .* drop the alpha"):
        embedder.embed(rgba)
    with pytest.raises(ValueError, match=r"takes \(N, H, W, 3\) images or one \(H, W, 3\) image, got shape \(1, 2, 112, 112, 3\)"):
        embedder.embed(faces[None, :2])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg: cannot read the image"):
        embedder.embed([broken])
    with pytest.raises(FileNotFoundError, match="nothere.png: no such image file"):
        embedder.embed([tmp_path / "nothere.png"])


def test_bad_model_files_are_named(files, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing.tflite: no such model file or directory \(expected a .tflite"):
        FaceEmbedder(tmp_path / "missing.tflite")
    # Corrupt kerasface exports (sidecar present) and corrupt third-party files (none).
    for name, suffix, expected in (("tflite", ".tflite", "a TFLite flatbuffer for LiteRT"),
                                   ("onnx", ".onnx", "an ONNX model for onnxruntime")):
        corrupt = tmp_path / f"corrupt{suffix}"
        corrupt.write_bytes(files[name].read_bytes()[:300])
        shutil.copy(f"{files[name]}.json", f"{corrupt}.json")
        with pytest.raises(ValueError, match=f"corrupt{suffix}: cannot load {expected}"):
            FaceEmbedder(corrupt)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(RuntimeError, match="garbage.onnx: onnxruntime cannot load this file: .*not a readable ONNX model"):
        FaceEmbedder(garbage)
    garbage_tflite = tmp_path / "garbage.tflite"
    garbage_tflite.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(ValueError, match="garbage.tflite: not a valid TFLite file"):
        FaceEmbedder(garbage_tflite)
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="cannot tell the model format from suffix '.pt'"):
        FaceEmbedder(tmp_path / "model.pt")


def test_third_party_file_and_ignored_options(files, model, faces, tmp_path):
    # Our ONNX without its sidecar is a third-party file: PeerModel options decide.
    peer = tmp_path / "peer.onnx"
    shutil.copy(files["onnx"], peer)
    embedder = FaceEmbedder(peer, pixel_range="kerasface", layout="nhwc", channel_order="rgb")
    assert embedder.metadata is None and not embedder.is_kerasface
    assert _cosines(embedder.embed(faces), _reference(model, faces)).min() > 0.9999
    assert "pixels kerasface" in embedder.describe()
    assumed = FaceEmbedder(peer, layout="nhwc").describe()
    assert "no kerasface metadata" in assumed and "channel_order='rgb' and pixel_range='0-255' assumed" in assumed
    with pytest.warns(UserWarning, match="channel_order='bgr' ignored: a kerasface onnx file"):
        kerasface_file = FaceEmbedder(files["onnx"], channel_order="bgr")
    assert "NOTE: channel_order='bgr' ignored" in kerasface_file.describe()


def test_tflite_metadata_inside_the_file_is_enough(files, faces, tmp_path):
    # Without its sidecar a kerasface .tflite is still recognised by the embedded metadata.
    alone = tmp_path / "alone.tflite"
    shutil.copy(files["tflite"], alone)
    embedder = FaceEmbedder(alone)
    assert embedder.is_kerasface and embedder.metadata["embedding_size"] == EMBEDDING_SIZE
    assert embedder.runtime == "litert" and "no kerasface metadata" not in embedder.describe()
    np.testing.assert_allclose(embedder.embed(faces), FaceEmbedder(files["tflite"]).embed(faces),
                               atol=1e-6)


def test_runtime_choices_are_checked(files):
    with pytest.raises(ValueError, match="a savedmodel model runs in TensorFlow; runtime 'litert' does not apply"):
        FaceEmbedder(files["savedmodel"], runtime="litert")
    with pytest.raises(ValueError, match="runtime 'litert' cannot read .onnx files; use 'onnxruntime' or 'auto'"):
        FaceEmbedder(files["onnx"], runtime="litert")
    with pytest.raises(ValueError, match="`runtime` must be one of auto, onnxruntime, litert, opencv, tensorflow; got 'trt'"):
        FaceEmbedder(files["onnx"], runtime="trt")


def test_device_selection(files):
    import onnxruntime

    shutil.copy(files["onnx"], files["onnx"].with_name("peer_copy.onnx"))
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu with CUDA is present")
    with pytest.raises(RuntimeError, match=r"tiny.onnx: device='gpu' needs ONNX Runtime's CUDAExecutionProvider \(install onnxruntime-gpu\)"):
        FaceEmbedder(files["onnx"], device="gpu")
    # A third-party .onnx goes through PeerModel, with the same check.
    with pytest.raises(RuntimeError, match=r"device='gpu' needs onnxruntime's CUDAExecutionProvider.*install onnxruntime-gpu"):
        FaceEmbedder(files["onnx"].with_name("peer_copy.onnx"), device="gpu")
    assert FaceEmbedder(files["onnx"], device="auto").device == "cpu"
    auto_tflite = FaceEmbedder(files["tflite"], device="auto")
    assert auto_tflite.device == "cpu" and "LiteRT runs on the CPU" in auto_tflite.describe()
    with pytest.raises(ValueError, match="device='gpu' is not available with LiteRT"):
        FaceEmbedder(files["tflite"], device="gpu")
    with pytest.raises(ValueError, match="`device` must be one of cpu, gpu, auto; got 'cuda'"):
        FaceEmbedder(files["onnx"], device="cuda")


def _parse(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def test_embed_cli_round_trip(files, faces, face_files, tmp_path, capsys):
    from kerasface.cli import embed_command

    folder = face_files[0].parent
    (folder / "notes.txt").write_text("not an image")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"broken")
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((100, 120, 3), np.uint8)).save(small)
    out = tmp_path / "out" / "emb.npy"
    code = embed_command.run(_parse(embed_command, [
        str(folder), str(bad), str(small), str(tmp_path / "gone.jpg"),
        "--model", str(files["tflite"]), "--out", str(out), "--threads", "1"]))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    embeddings = np.load(out)
    names = (tmp_path / "out" / "emb.txt").read_text().splitlines()
    assert embeddings.shape == (8, EMBEDDING_SIZE) and len(names) == 8
    assert names == [str(path) for path in face_files]
    reference = FaceEmbedder(files["onnx"]).embed(faces)
    assert _cosines(embeddings, reference).min() > 0.9999
    assert "embedded 8 of 11 images (3 skipped)" in captured.out
    assert "1 files in the folders are not images" in captured.out
    assert "skipped 3 images" in captured.err and "bad.jpg: cannot read the image" in captured.err
    assert "expected 112x112 aligned faces, got 100x120" in captured.err
    assert "gone.jpg: no such file or folder" in captured.err

    code = embed_command.run(_parse(embed_command, [
        str(bad), "--model", str(files["tflite"]), "--out", str(tmp_path / "none.npy")]))
    assert code == 1 and "none of 1 images could be embedded" in capsys.readouterr().err
    assert not (tmp_path / "none.npy").exists()


def test_compare_cli(files, faces, face_files, model, capsys):
    from kerasface.cli import compare_command

    expected = _reference(model, faces)
    cosine = float(expected[0] @ expected[1])
    args = [str(face_files[0]), str(face_files[1]), "--model", str(files["onnx"])]
    assert compare_command.run(_parse(compare_command, args + ["--threshold", "-1"])) == 0
    out = capsys.readouterr().out
    assert f"cosine similarity: {cosine:.4f}" in out and "same person" in out
    assert compare_command.run(_parse(compare_command, args + ["--threshold", "1"])) == 0
    assert "different people" in capsys.readouterr().out
    code = compare_command.run(_parse(compare_command, [
        str(face_files[0]), "missing.png", "--model", str(files["onnx"])]))
    assert code == 1 and "missing.png: no such image file" in capsys.readouterr().err
    code = compare_command.run(_parse(compare_command, [
        str(face_files[0]), str(face_files[1]), "--model", "nothing.onnx"]))
    assert code == 1 and "cannot load model nothing.onnx" in capsys.readouterr().err


@pytest.mark.slow  # tests/test_peer_model.py checks the same on PeerModel in the default run
def test_sface_onnxruntime_agrees_with_opencv():
    pytest.importorskip("cv2")
    sface = require_shared("models/opencv_zoo/face_recognition_sface_2021dec_int8bq.onnx")
    val = require_shared("data/celeba_dev/val")
    paths = sorted(val.glob("*/*.jpg"))[::300][:3]
    ort = FaceEmbedder(sface, runtime="onnxruntime", channel_order="bgr")
    cv = FaceEmbedder(sface, runtime="opencv", channel_order="bgr")
    assert (ort.runtime, cv.runtime, ort.embedding_size) == ("onnxruntime", "opencv", 128)
    assert "graph repaired in memory" in ort.describe()
    assert _cosines(ort.embed(paths), cv.embed(paths)).min() > 0.999


class _StubAligner:
    """Stands in for MTCNN: the centre 112x112 of a photo, or no face for dark photos."""

    def align(self, photo):
        if photo.mean() < 10:
            return None
        top, left = (photo.shape[0] - 112) // 2, (photo.shape[1] - 112) // 2
        return photo[top:top + 112, left:left + 112], None


def test_embed_cli_align_skips_photos_without_a_face(files, faces, tmp_path, monkeypatch, capsys):
    from kerasface.cli import embed_command

    monkeypatch.setattr(embed_command, "make_aligner", _StubAligner)
    photo = np.zeros((160, 200, 3), np.uint8)
    photo[24:136, 44:156] = faces[0]
    photo[:24] = 255
    Image.fromarray(photo).save(tmp_path / "photo.png")
    Image.fromarray(np.zeros((160, 200, 3), np.uint8)).save(tmp_path / "dark.png")
    out = tmp_path / "aligned.npy"
    code = embed_command.run(_parse(embed_command, [
        str(tmp_path / "photo.png"), str(tmp_path / "dark.png"), "--align",
        "--model", str(files["onnx"]), "--out", str(out)]))
    captured = capsys.readouterr()
    assert code == 0 and "embedded 1 of 2 images (1 skipped)" in captured.out
    assert "dark.png: no face found" in captured.err
    expected = FaceEmbedder(files["onnx"]).embed(faces[:1])
    assert _cosines(np.load(out), expected).min() > 0.9999


def test_compare_cli_aligns_real_photos(files, capsys):
    from kerasface.cli import compare_command

    raw = require_shared("data/celeba_dev/raw_val")
    photos = sorted(raw.glob("*.jpg"))[:2]
    code = compare_command.run(_parse(compare_command, [
        str(photos[0]), str(photos[1]), "--align", "--model", str(files["tflite"]),
        "--threshold", "0.3"]))
    out = capsys.readouterr().out
    assert code == 0 and "cosine similarity:" in out and ("same person" in out or "different" in out)
