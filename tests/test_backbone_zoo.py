"""Every registered backbone: shared checks, TFLite/ONNX parity and its budget line.

Walks ``kerasface.backbones.list()``: a new backbone or preset is covered by adding its
tiny configuration to ``kerasface.testing.backbone_cases.SMALL_CONFIGS`` (the walk fails
until it has one). One tiny model per backbone class runs in the default suite; the
other presets of a class (same layers, other arguments) run with ``-m slow``.
"""

import keras
import numpy as np
import pytest

from kerasface import backbones
from kerasface.backbones.functional_backbone import FunctionalBackbone
from kerasface.cli.main import main
from kerasface.testing import check_export_parity, run_all_checks
from kerasface.testing.run_all_checks import CHECK_NAMES
from kerasface.testing.backbone_cases import SMALL_CONFIGS, small_config, unique_small_cases

# The default-suite representative of a class: the preset with the most layer types.
PREFERRED = ("airface", "iresnet50", "mobilenet_v1", "latse_decoder")
# Training-only networks (LATSE's image decoder): never exported, so no TFLite/ONNX parity.
NOT_DEPLOYED = ("latse_decoder",)
# The XLA and MirroredStrategy checks trace a training step, 20-50 s per backbone on 2 cores.
# The default suite runs them on AirFace, whose graph holds every custom backbone layer
# (attention, GNAP neck, synchronized BN, PReLU, residual adds); the other classes are built
# from standard Keras layers already covered there and run them with ``-m slow``.
HEAVY_CHECKS = ("xla", "mirrored")
HEAVY_CHECKS_IN_DEFAULT = ("airface",)
# One SGD step with batch statistics over 2 samples per replica: BN divides by a tiny
# variance, which turns float32 reduction-order noise into ~1e-4 differences; XLA reorders
# the long sums behind BN and attention gradients.
CHECK_OPTIONS = {
    "mixed_precision": {"output_dtype": "float32"},
    "mirrored": {"atol": 1e-4, "rtol": 1e-3},
    "xla": {"gradient_atol": 1e-4, "gradient_rtol": 1e-3},
}


def _cases():
    names = unique_small_cases(backbones.list())
    names.sort(key=lambda n: (n not in PREFERRED, n))
    seen_classes, cases = set(), []
    for name in names:
        cls = backbones.get_class(name)
        marks = [pytest.mark.slow] if cls in seen_classes else []
        seen_classes.add(cls)
        cases.append(pytest.param(name, marks=marks, id=name))
    return cases


def _inputs(model, batch=4):
    shape = tuple(model.input_shape[1:])
    return np.random.default_rng(0).normal(size=(batch, *shape)).astype("float32")


def test_every_registered_backbone_has_a_small_config():
    missing = [name for name in backbones.list() if name not in SMALL_CONFIGS]
    assert not missing, f"add small configs for {missing} to kerasface/testing/backbone_cases.py"


@pytest.mark.parametrize("name", _cases())
def test_shared_checks_and_export_parity(name, tmp_path):
    def factory():
        return backbones.get(name, **small_config(name))

    model = factory()
    inputs = _inputs(model)
    skip = () if name in HEAVY_CHECKS_IN_DEFAULT else HEAVY_CHECKS
    results = run_all_checks(
        factory, inputs, tmp_path, call_kwargs={"training": False}, options=CHECK_OPTIONS, skip=skip
    )
    assert set(results) == set(CHECK_NAMES) - set(skip)
    if name in NOT_DEPLOYED:
        return
    # Tiny random backbones output values of 1e-6..3e-4: an absolute tolerance must scale with them.
    scale = float(np.abs(np.asarray(model(inputs, training=False))).max())
    results = check_export_parity(model, inputs, atol=1e-4 * scale, rtol=1e-3)
    assert set(results) == {"tflite", "onnx"}


def _heavy_check_cases():
    return [
        pytest.param(name, marks=[pytest.mark.slow], id=name)
        for name in unique_small_cases(backbones.list())
        if name not in HEAVY_CHECKS_IN_DEFAULT
    ]


@pytest.mark.parametrize("name", _heavy_check_cases())
def test_xla_and_mirrored_checks(name, tmp_path):
    def factory():
        return backbones.get(name, **small_config(name))

    inputs = _inputs(factory())
    skip = tuple(check for check in CHECK_NAMES if check not in HEAVY_CHECKS)
    results = run_all_checks(
        factory, inputs, tmp_path, call_kwargs={"training": False}, options=CHECK_OPTIONS, skip=skip
    )
    assert set(results) == set(HEAVY_CHECKS)


@pytest.mark.slow
def test_budget_table_covers_the_whole_zoo(capsys):
    # Full-size models at 112x112: every one builds and is counted completely.
    assert main(["budget", "--all"]) == 0
    out, err = capsys.readouterr()
    for name in backbones.list():
        assert any(line.split()[0] == name for line in out.splitlines() if line.strip()), name
    assert "unknown cost" not in err and "error" not in err


def test_budget_input_size_builds_for_another_resolution(capsys):
    assert main(["budget", "--backbone", "mobilenet_v1", "--input-size", "64"]) == 0
    assert main(["budget", "--backbone", "mobilenet_v1"]) == 0
    out = capsys.readouterr().out
    macs = [line.split()[3] for line in out.splitlines() if line.startswith("mobilenet_v1")]
    assert len(macs) == 2 and macs[0] != macs[1], out


def test_config_is_the_constructor_arguments():
    class Forgetful(FunctionalBackbone):
        def __init__(self, width=4, depth=1, **kwargs):
            inputs = keras.Input((3,))
            super().__init__(inputs=inputs, outputs=keras.layers.Dense(width)(inputs), **kwargs)
            self.width = width  # `depth` is not stored

    with pytest.raises(AttributeError, match="depth"):
        Forgetful().get_config()
    for name in backbones.list():
        cls = backbones.get_class(name)
        model = cls(**{**backbones.preset_defaults(name), **small_config(name)})
        rebuilt = cls.from_config(model.get_config())
        assert rebuilt.get_config() == model.get_config(), name
