"""Every shared check on one layer/model, failures collected into one report."""

import warnings

from kerasface.testing import _check_utils as utils
from kerasface.testing.mirrored_check import check_mirrored, default_devices
from kerasface.testing.mixed_precision_check import check_mixed_precision
from kerasface.testing.saving_check import check_saving
from kerasface.testing.serialization_check import check_serialization
from kerasface.testing.xla_check import check_xla

CHECK_NAMES = ("serialization", "saving", "mixed_precision", "xla", "mirrored")


def run_all_checks(factory, inputs, tmp_dir, call_kwargs=None, options=None, skip=()):
    """Runs the serialization, saving, mixed-precision, XLA and MirroredStrategy checks.

    Args:
        factory: zero-argument callable returning a fresh layer/model.
        inputs: concrete inputs, e.g. ``[embeddings, labels]`` for a head or an image
            batch for a backbone (its size must split evenly over 2 replicas).
        tmp_dir: folder for the ``.keras`` file.
        call_kwargs: call arguments passed to every check, e.g. ``{"training": True}``.
        options: per-check keyword overrides keyed by check name, e.g.
            ``{"mixed_precision": {"output_dtype": "float32", "atol": 5e-2},
            "xla": {"call_kwargs": {"training": False}}}``.
        skip: names of checks not to run (see ``CHECK_NAMES``).

    Returns:
        dict of check name -> that check's result dict (``{"skipped": reason}`` for the
        MirroredStrategy check when fewer than two logical devices exist).

    Raises:
        AssertionError: listing every failed check's message.
        ValueError: for an unknown check name in ``options`` or ``skip``.
    """
    utils.require_factory(factory, "run_all_checks")
    options = dict(options or {})
    unknown = sorted((set(options) | set(skip)) - set(CHECK_NAMES))
    if unknown:
        raise ValueError(f"unknown check names {unknown}; expected some of {list(CHECK_NAMES)}")

    def kwargs_for(name):
        return {"call_kwargs": call_kwargs, **options.get(name, {})}

    runners = {
        "serialization": lambda: check_serialization(factory(), inputs, **kwargs_for("serialization")),
        "saving": lambda: check_saving(factory, inputs, tmp_dir, **kwargs_for("saving")),
        "mixed_precision": lambda: check_mixed_precision(factory, inputs, **kwargs_for("mixed_precision")),
        "xla": lambda: check_xla(factory, inputs, **kwargs_for("xla")),
        "mirrored": lambda: check_mirrored(factory, inputs, **kwargs_for("mirrored")),
    }
    results, failures = {}, []
    for name in CHECK_NAMES:
        if name in skip:
            continue
        if name == "mirrored" and "devices" not in options.get(name, {}) and len(default_devices()) < 2:
            reason = "fewer than 2 logical CPUs (split the CPU before TensorFlow starts, as tests/conftest.py does)"
            warnings.warn(f"run_all_checks: MirroredStrategy check skipped: {reason}")
            results[name] = {"skipped": reason}
            continue
        try:
            results[name] = runners[name]()
        except AssertionError as error:
            failures.append(str(error))
    if failures:
        raise AssertionError(f"{len(failures)} of the shared checks failed:\n" + "\n".join(failures))
    return results
