"""Training under mixed precision: loss scaling, float32 logits, no NaN (MobileFaceNet + ArcFace)."""

import keras
import numpy as np
import pytest

from kerasface.recipe import Recipe, apply_overrides

TINY = "{'width_multiplier': 0.25, 'neck_channels': 32, 'stages': ((2, 64, 1, 2), (2, 128, 1, 2))}"


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    from kerasface.data.synthetic_faces import write_synthetic_faces

    root = tmp_path_factory.mktemp("faces")
    write_synthetic_faces(root, num_identities=10, images_per_identity=4, seed=0)
    return root


def _train(faces, out, *overrides):
    from kerasface.training import train

    recipe = apply_overrides(Recipe(), [
        f"data.root={faces}", "data.batch_size=8", "train.epochs=1", "train.steps_per_epoch=6",
        "model.embedding_size=16", f"model.backbone_kwargs={TINY}", *overrides,
    ])
    return train(recipe, out, verbose=0, print_fn=lambda *_: None)


@pytest.mark.parametrize("extra", [[], ["head.sample_rate=0.3"]], ids=["dense", "partial_fc"])
def test_mixed_float16_scales_the_loss_and_stays_finite(faces, tmp_path, extra):
    result = _train(faces, tmp_path / "run", "train.precision=mixed_float16", *extra)
    model = result.model
    # Keras wraps the optimizer: the loss is scaled up before the backward pass and the
    # gradients scaled down (and the step skipped) so float16 gradients neither underflow nor overflow.
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert np.isfinite(result.history["loss"]).all()
    assert all(np.isfinite(w.numpy()).all() for w in model.weights)
    assert model.backbone.dtype_policy.compute_dtype == "float16"
    images = np.zeros((2, 112, 112, 3), np.uint8)
    logits = model([images, np.array([0, 1])])
    assert logits.dtype == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run


# bfloat16 is emulated on this CPU, ~10 s: run with -m slow.
@pytest.mark.slow
def test_mixed_bfloat16_trains_without_loss_scaling(faces, tmp_path):
    result = _train(faces, tmp_path / "run", "train.precision=mixed_bfloat16")
    assert not isinstance(result.model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert np.isfinite(result.history["loss"]).all()


def test_sharded_head_refuses_loss_scaling(faces, tmp_path):
    with pytest.raises(ValueError, match="not with loss scaling"):
        _train(faces, tmp_path / "run", "train.precision=mixed_float16", "head.sharded=True")
