"""PeerModel: third-party ONNX/TFLite/OpenCV face models fed exactly what they expect."""

import numpy as np
import pytest

from kerasface.data.preprocessing import normalize_numpy
from kerasface.evaluation.peer_model import PeerModel, model_fingerprint, open_embedder
from kerasface.testing.shared_data import require_shared

SFACE = "models/opencv_zoo/face_recognition_sface_2021dec_int8bq.onnx"


# Probe models: output [1, per-channel means, the top-left 2x3 pixels of every channel]. The
# constant 1 keeps a pure rescaling of the input (0-255 vs 0-1) visible after L2-normalisation;
# the corner pixels expose channel order, layout and any height/width swap.
def _probe_numpy(peer_input, layout):
    """NumPy twin of the probe models, on the array the peer file is fed."""
    if layout == "nchw":
        means = peer_input.mean(axis=(2, 3))
        corner = peer_input[:, :, 0:2, 0:3]
    else:
        means = peer_input.mean(axis=(1, 2))
        corner = peer_input[:, 0:2, 0:3, :]
    batch = len(peer_input)
    output = np.concatenate(
        [np.ones((batch, 1)), means, corner.reshape(batch, -1)], axis=1
    ).astype(np.float64)
    return output / np.linalg.norm(output, axis=1, keepdims=True)


def _probe_function(layout, output_rank=2):
    import tensorflow as tf

    def probe(x):
        if layout == "nchw":
            means = tf.reduce_mean(x, axis=[2, 3])
            corner = x[:, :, 0:2, 0:3]
        else:
            means = tf.reduce_mean(x, axis=[1, 2])
            corner = x[:, 0:2, 0:3, :]
        batch = tf.shape(x)[0]
        output = tf.concat(
            [tf.ones([batch, 1]), means, tf.reshape(corner, [batch, -1])], axis=1
        )
        if output_rank == 3:
            output = tf.expand_dims(output, -1)
        return output

    return probe


def _onnx_probe(path, shape, layout, output_rank=2):
    import tensorflow as tf

    from kerasface.export.onnx_export import function_to_onnx

    spec = tf.TensorSpec(shape, tf.float32, name="image")
    function = tf.function(_probe_function(layout, output_rank), input_signature=[spec])
    path.write_bytes(function_to_onnx(function, spec, "probe", opset=17).SerializeToString())
    return path


def _tflite_probe(path, shape):
    import tensorflow as tf

    spec = tf.TensorSpec(shape, tf.float32, name="image")
    function = tf.function(_probe_function("nhwc"), input_signature=[spec])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], function
    )
    path.write_bytes(converter.convert())
    return path


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    root = tmp_path_factory.mktemp("peers")
    return {
        "nchw": _onnx_probe(root / "nchw.onnx", (None, 3, 112, 112), "nchw"),
        "nchw_batch2": _onnx_probe(root / "nchw_batch2.onnx", (2, 3, 112, 112), "nchw"),
        "nchw_224": _onnx_probe(root / "nchw_224.onnx", (None, 3, 224, 224), "nchw"),
        "nhwc": _onnx_probe(root / "nhwc.onnx", (None, 112, 112, 3), "nhwc"),
        "ambiguous": _onnx_probe(root / "ambiguous.onnx", (None, 3, 112, 3), "nchw"),
        "rank3": _onnx_probe(root / "rank3.onnx", (None, 3, 112, 112), "nchw", output_rank=3),
        "tflite": _tflite_probe(root / "nhwc.tflite", (None, 112, 112, 3)),
    }


@pytest.fixture(scope="module")
def faces():
    """uint8 RGB faces whose channels and corners all differ."""
    return np.random.default_rng(0).integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)


def _peer_input(pixels_rgb, channel_order, pixel_range, layout):
    """The test's own statement of what a peer with these settings must be fed."""
    x = pixels_rgb.astype(np.float64)
    if channel_order == "bgr":
        x = x[..., [2, 1, 0]]
    x = {"0-255": x, "0-1": x / 255.0, "-1-1": (x - 127.5) / 127.5,
         "kerasface": (x - 127.5) / 128.0}[pixel_range]
    return np.transpose(x, (0, 3, 1, 2)) if layout == "nchw" else x


@pytest.mark.parametrize("channel_order", ["rgb", "bgr"])
@pytest.mark.parametrize("pixel_range", ["0-255", "0-1", "-1-1", "kerasface"])
def test_onnx_nchw_preprocessing_matches_numpy(probes, faces, channel_order, pixel_range):
    model = PeerModel(probes["nchw"], channel_order=channel_order, pixel_range=pixel_range)
    assert (model.runtime, model.layout, model.input_size, model.call_batch_size) == (
        "onnxruntime", "nchw", (112, 112), None)
    output = model(normalize_numpy(faces))
    assert output.dtype == np.float32 and output.shape == (5, 22)
    expected = _probe_numpy(_peer_input(faces, channel_order, pixel_range, "nchw"), "nchw")
    np.testing.assert_allclose(output, expected, atol=2e-6)


def test_wrong_preprocessing_is_visible(probes, faces):
    # Guards the probes themselves: each wrong setting must change the output.
    expected = _probe_numpy(_peer_input(faces, "rgb", "0-255", "nchw"), "nchw")
    for options in ({"channel_order": "bgr"}, {"pixel_range": "0-1"}, {"pixel_range": "-1-1"}):
        output = PeerModel(probes["nchw"], **options)(normalize_numpy(faces))
        assert np.abs(output - expected).max() > 1e-3, options


def test_nhwc_onnx_and_tflite_detected(probes, faces):
    expected = _probe_numpy(_peer_input(faces, "bgr", "-1-1", "nhwc"), "nhwc")
    for path, runtime in ((probes["nhwc"], "onnxruntime"), (probes["tflite"], "litert")):
        model = PeerModel(path, channel_order="bgr", pixel_range="-1-1")
        assert (model.runtime, model.layout) == (runtime, "nhwc")
        assert "layout from" in model.describe() and "NHWC" in model.describe()
        np.testing.assert_allclose(model(normalize_numpy(faces)), expected, atol=2e-6)


def test_fixed_batch_is_chunked_and_padded(probes, faces):
    model = PeerModel(probes["nchw_batch2"])
    assert model.call_batch_size == 2 and "fed 2 at a time" in model.describe()
    expected = _probe_numpy(_peer_input(faces, "rgb", "0-255", "nchw"), "nchw")
    # 5 images through a batch-2 file: 2 + 2 + 1 padded.
    np.testing.assert_allclose(model(normalize_numpy(faces)), expected, atol=2e-6)


def test_opencv_runtime_reads_layout_from_the_graph(probes, faces):
    pytest.importorskip("cv2")
    for key, layout in (("nchw", "nchw"), ("nchw_batch2", "nchw"), ("nhwc", "nhwc")):
        model = PeerModel(probes[key], runtime="opencv", channel_order="bgr")
        assert model.layout == layout and "ONNX graph input shape" in model.layout_source
        # A free batch dimension is fed one image at a time (OpenCV 4.x freezes it at 1).
        assert model.call_batch_size == (2 if key == "nchw_batch2" else 1)
        expected = _probe_numpy(_peer_input(faces, "bgr", "0-255", layout), layout)
        np.testing.assert_allclose(model(normalize_numpy(faces)), expected, atol=2e-5)


def test_resize_to_the_model_input_size(probes):
    model = PeerModel(probes["nchw_224"])
    assert model.input_size == (224, 224) and "3x224x224" in model.describe()
    # Constant channels survive any interpolation exactly.
    faces = np.empty((2, 112, 112, 3), np.uint8)
    faces[..., 0], faces[..., 1], faces[..., 2] = 10, 120, 250
    expected = _probe_numpy(_peer_input(faces, "rgb", "0-255", "nchw"), "nchw")
    np.testing.assert_allclose(model(normalize_numpy(faces)), expected, atol=2e-6)
    with pytest.raises(ValueError, match=r"`input_size` \(112, 112\) differs from the model input \(224, 224\)"):
        PeerModel(probes["nchw_224"], input_size=112)


def test_ambiguous_layout_falls_back_to_nchw_with_a_note(probes):
    model = PeerModel(probes["ambiguous"])
    assert model.layout == "nchw" and model.layout_source.startswith("fallback: NCHW assumed")
    assert "does not tell" in model.describe()
    assert PeerModel(probes["ambiguous"], layout="nhwc").layout_source == "given"


def test_config_round_trip(probes):
    model = PeerModel(probes["tflite"], pixel_range="0-1", num_threads=1)
    config = model.get_config()
    assert config["layout"] == "nhwc" and config["runtime"] == "litert"
    assert PeerModel(**config).get_config() == config


def test_errors_name_the_value(probes, tmp_path):
    path = probes["nchw"]
    with pytest.raises(ValueError, match=r"`runtime` must be one of auto, onnxruntime, litert, opencv; got 'tensorrt'"):
        PeerModel(path, runtime="tensorrt")
    with pytest.raises(ValueError, match=r"`channel_order` must be one of rgb, bgr; got 'rbg'"):
        PeerModel(path, channel_order="rbg")
    with pytest.raises(ValueError, match=r"`pixel_range` must be one of 0-255, 0-1, -1-1, kerasface, symmetric \(= -1-1\); got '0-256'"):
        PeerModel(path, pixel_range="0-256")
    with pytest.raises(ValueError, match=r"`layout` must be one of auto, nchw, nhwc; got 'chw'"):
        PeerModel(path, layout="chw")
    with pytest.raises(ValueError, match="`input_size` must be an int or"):
        PeerModel(path, input_size=(112, 112, 3))
    with pytest.raises(FileNotFoundError, match="missing.onnx: no such model file"):
        PeerModel(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="runtime 'litert' cannot read .onnx files; use one of onnxruntime, opencv"):
        PeerModel(path, runtime="litert")
    (tmp_path / "model.pb").write_bytes(b"x")
    with pytest.raises(ValueError, match="must be .onnx or .tflite files, got suffix '.pb'"):
        PeerModel(tmp_path / "model.pb")
    with pytest.raises(ValueError, match=r"output must be \(batch, D\) embeddings, got shape \(1, 22, 1\)"):
        PeerModel(probes["rank3"])
    with pytest.raises(TypeError, match="got dtype uint8"):
        PeerModel(path)(np.zeros((1, 112, 112, 3), np.uint8))


def test_open_embedder_and_fingerprint(probes, tmp_path):
    path = probes["nchw"]
    model = open_embedder(path, runtime=None, channel_order="bgr", layout=None)
    assert isinstance(model, PeerModel) and model.channel_order == "bgr"

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "embedding.keras").write_bytes(b"not really a model")
    with pytest.raises(ValueError, match=r"pixel_range='0-1' only apply to peer .onnx or .tflite"):
        open_embedder(run_dir, pixel_range="0-1")
    with pytest.raises(ValueError, match=r"got suffix '.h5'"):
        (tmp_path / "old.h5").write_bytes(b"x")
        open_embedder(tmp_path / "old.h5")

    base = model_fingerprint(path)
    assert len(base) == 16 and int(base, 16) >= 0
    assert model_fingerprint(path, runtime="auto", layout="auto", num_threads=2) == base
    assert model_fingerprint(path, device="auto") == base
    assert model_fingerprint(path, channel_order="bgr") != base
    assert model_fingerprint(path, pixel_range="symmetric") == model_fingerprint(path, pixel_range="-1-1")
    assert PeerModel(path, pixel_range="Symmetric").pixel_range == "-1-1"
    assert model_fingerprint(path, runtime="opencv") != base
    copy = tmp_path / "renamed.onnx"
    copy.write_bytes(path.read_bytes())
    assert model_fingerprint(copy) == base
    copy.write_bytes(path.read_bytes() + b"\0")
    assert model_fingerprint(copy) != base
    assert model_fingerprint(run_dir) == model_fingerprint(run_dir / "embedding.keras")
    with pytest.raises(ValueError, match="`layout` must be one of"):
        model_fingerprint(path, layout="hwc")


def test_sface_through_opencv_matches_face_recognizer():
    cv2 = pytest.importorskip("cv2")
    sface = str(require_shared(SFACE))
    val = require_shared("data/celeba_dev/val")
    files = sorted(str(p) for p in val.glob("*/*.jpg"))[::200][:5]
    recognizer = cv2.FaceRecognizerSF.create(sface, "")
    bgr = np.stack([cv2.imread(path) for path in files])
    expected = np.concatenate([recognizer.feature(image) for image in bgr])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)

    model = PeerModel(sface, runtime="opencv")
    assert (model.layout, model.call_batch_size, model.embedding_size) == ("nchw", 1, 128)
    np.testing.assert_allclose(model(normalize_numpy(bgr[..., ::-1])), expected, atol=1e-6)
    # Through kerasface's own decoder (TF, accurate IDCT): the same pixels as cv2.imread.
    from kerasface.evaluation.embed_images import embed_images

    np.testing.assert_allclose(embed_images(model, files, batch_size=4), expected, atol=1e-6)



def test_sface_through_onnxruntime_matches_opencv():
    pytest.importorskip("cv2")
    sface = str(require_shared(SFACE))
    val = require_shared("data/celeba_dev/val")
    files = sorted(val.glob("*/*.jpg"))[::250][:4]
    from PIL import Image

    faces = normalize_numpy(np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files]))
    reference = PeerModel(sface, runtime="opencv", channel_order="bgr")(faces)
    # "auto" still picks onnxruntime for .onnx files, which now runs SFace.
    model = PeerModel(sface, runtime="auto", channel_order="bgr")
    assert model.runtime == "onnxruntime" and len(model.repaired_inputs) == 29
    assert "graph repaired in memory (29 unfed weight inputs" in model.describe()
    output = model(faces)
    cosine = np.sum(output.astype(np.float64) * reference, axis=1)
    assert output.shape == (4, 128) and cosine.min() > 0.999, cosine


def _unfed_weight_onnx(path, with_dequantized_copy=True):
    """NCHW image -> channel means (B, 3) @ w (3, 2), where graph input `w` is never fed.

    As in OpenCV zoo's block-quantised files, `w` is only available as `w_reshaped` (of
    `w_dequantized`, made by a DequantizeLinear node from int8 values); without those copies
    the file cannot run.
    """
    import onnx
    from onnx import TensorProto, helper

    weights = np.array([[1, -2], [3, 4], [-5, 6]], np.int8)
    nodes = [
        helper.make_node("ReduceMean", ["data", "axes"], ["means"], keepdims=0),
        helper.make_node("MatMul", ["means", "w"], ["embedding"]),
    ]
    initializers = [helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])]
    if with_dequantized_copy:
        # The quantised values are stored flat and reshaped, as in SFace: `w_reshaped` is the
        # copy to read (the Reshape also keeps onnxruntime from fusing DequantizeLinear+MatMul
        # into an integer MatMul that would quantise the activations too).
        nodes[:0] = [
            helper.make_node("DequantizeLinear", ["w_quantized", "w_scale"], ["w_dequantized"]),
            helper.make_node("Reshape", ["w_dequantized", "w_shape"], ["w_reshaped"]),
        ]
        initializers += [
            helper.make_tensor("w_quantized", TensorProto.INT8, [6], weights.ravel().tolist()),
            helper.make_tensor("w_scale", TensorProto.FLOAT, [], [0.5]),
            helper.make_tensor("w_shape", TensorProto.INT64, [2], [3, 2]),
        ]
    graph = helper.make_graph(
        nodes, "unfed",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [None, 3, 112, 112]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 2])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [None, 2])],
        initializers,
    )
    # Opset 18: ReduceMean takes its axes as an input.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return weights.astype(np.float64) * 0.5


def test_unfed_weight_inputs_are_rewired_for_onnxruntime(tmp_path, faces):
    pytest.importorskip("onnx")
    weights = _unfed_weight_onnx(tmp_path / "unfed.onnx")
    model = PeerModel(tmp_path / "unfed.onnx")
    assert model.repaired_inputs == ("w",) and model.input_name == "data"
    means = faces.astype(np.float64).mean(axis=(1, 2))
    expected = means @ weights
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(model(normalize_numpy(faces)), expected, atol=1e-5)
    # A graph input with no dequantised copy still cannot run: the existing clear error.
    _unfed_weight_onnx(tmp_path / "hopeless.onnx", with_dequantized_copy=False)
    with pytest.raises(RuntimeError, match=r"hopeless.onnx: onnxruntime needs values for 2 graph inputs \(data, w\)"):
        PeerModel(tmp_path / "hopeless.onnx")


def test_corrupt_onnx_is_named(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(RuntimeError, match=r"broken.onnx: onnxruntime cannot load this file: .*not a readable ONNX model"):
        PeerModel(path)


def test_device_gpu_without_cuda_is_an_error(probes):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu with CUDA is present")
    with pytest.raises(RuntimeError, match=r"device='gpu' needs onnxruntime's CUDAExecutionProvider.*install onnxruntime-gpu"):
        PeerModel(probes["nchw"], device="gpu")
    assert PeerModel(probes["nchw"], device="auto").device == "cpu"
    with pytest.raises(ValueError, match="device='gpu' needs runtime 'onnxruntime'; litert"):
        PeerModel(probes["tflite"], device="gpu")
    with pytest.raises(ValueError, match=r"`device` must be one of cpu, gpu, auto; got 'tpu'"):
        PeerModel(probes["nchw"], device="tpu")
