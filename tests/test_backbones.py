import keras
import numpy as np
import pytest

from kerasface import backbones
from kerasface.backbones import MobileFaceNet
from kerasface.testing import run_all_checks

# A 32x32 input and narrow channels keep the shared checks fast; the layer graph is the same.
# Three shallow stages (one with a residual add) on 32x32 inputs: the same layer types as the
# paper network at a fraction of the tracing and compile time of the shared checks.
SMALL = {
    "embedding_size": 16,
    "image_shape": (32, 32, 3),
    "width_multiplier": 0.25,
    "stages": ((2, 64, 1, 2), (4, 128, 1, 2), (2, 128, 1, 1)),
}


def test_registry():
    assert "mobilefacenet" in backbones.list()
    model = backbones.get("mobilefacenet", embedding_size=128)
    assert isinstance(model, MobileFaceNet)
    assert model.output_shape == (None, 128)
    with pytest.raises(ValueError, match="Unknown backbone 'resnet9000'"):
        backbones.get("resnet9000")


def test_paper_parameter_count_and_structure():
    model = MobileFaceNet(embedding_size=128)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    # Paper: 0.99M parameters (BN moving statistics are not parameters there).
    assert abs(trainable - 0.99e6) / 0.99e6 < 0.02, trainable
    # 7x7 map before the GDC, as in Table 1.
    assert tuple(model.get_layer("gdc_dw").input.shape[1:3]) == (7, 7)
    assert all(layer.synchronized for layer in model.layers if layer.__class__.__name__ == "BatchNormalization")
    bottlenecks = {layer.name.split("_")[0] for layer in model.layers if layer.name.startswith("block")}
    assert len(bottlenecks) == 15


def test_input_validation():
    with pytest.raises(ValueError, match=r"`image_shape` must be \(H, W, 3\), got \(112, 112\)"):
        MobileFaceNet(image_shape=(112, 112))
    with pytest.raises(ValueError, match="`embedding_size` must be >= 1, got 0"):
        MobileFaceNet(embedding_size=0)


def test_shared_checks(tmp_path):
    keras.utils.set_random_seed(0)  # independent of the tests that ran before
    images = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    run_all_checks(
        lambda: MobileFaceNet(**SMALL),
        images,
        tmp_path,
        call_kwargs={"training": False},
        options={
            "mixed_precision": {"output_dtype": "float32"},
            # One SGD step with batch statistics over 2 samples per replica: BN divides by a
            # tiny variance, which turns float32 reduction-order noise into ~1e-4 differences.
            "mirrored": {"atol": 1e-4, "rtol": 1e-3},
        },
    )
