import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasface.cli import plot_command
from kerasface.heads import ArcFaceHead
from kerasface.heads.head_registry import HEADS
from kerasface.visualization import (
    group_identical,
    head_label,
    head_target_curves,
    is_monotone,
    target_logit_table,
    values_at,
)

REPO = Path(__file__).resolve().parents[1]
ANGLES = (0, 30, 60, 90, 120, 150, 180)


def reference_target(name, theta, margin=None, easy_margin=False):
    """Unscaled target logits from the papers' equations, float64."""
    cos = np.cos(theta)
    if name == "normface":
        return cos
    if name == "cosface":  # CosFace eq. 4, m = 0.35
        return cos - (0.35 if margin is None else margin)
    if name == "arcface":  # ArcFace eq. 3, m = 0.5, linear past theta + m > pi
        m = 0.5 if margin is None else margin
        if easy_margin:
            # float32 cos(90 deg) is -4e-8, so the head takes cos there; float64 cos is +6e-17
            return np.where(cos > 1e-6, np.cos(theta + m), cos)
        return np.where(theta + m <= math.pi, np.cos(theta + m), cos - m * math.sin(m))
    raise KeyError(name)


def _parser():
    parser = argparse.ArgumentParser(prog="kerasface plot")
    plot_command.add_arguments(parser)
    return parser


def _table_rows(text):
    """``{name: ([values at ANGLES], monotone)}`` parsed from the Markdown table."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(ANGLES) + 2 and cells[0] not in ("head", "---"):
            rows[cells[0]] = ([float(c) for c in cells[1:-1]], cells[-1])
    return rows


def test_curves_match_numpy_reference():
    curves, skipped = head_target_curves(["arcface", "cosface", "normface"], num_points=181)
    assert skipped == {}
    assert list(curves) == ["arcface", "cosface", "normface"]
    for name, (theta, values) in curves.items():
        assert theta.shape == values.shape == (181,)
        assert theta[0] == 0.0 and theta[-1] == pytest.approx(math.pi)
        assert np.all(np.diff(theta) > 0)
        # heads floor sin(theta) at sqrt(1e-7) ~ 3e-4, which moves ArcFace by ~1.5e-4 at 0 and pi
        np.testing.assert_allclose(values, reference_target(name, theta), atol=5e-4, err_msg=name)
    # ArcFace's fallback really is taken past pi - m (the curve is not cos(theta + m) there)
    theta, values = curves["arcface"]
    past = theta > math.pi - 0.5 + 0.01
    assert np.abs(values[past] - np.cos(theta[past] + 0.5)).min() > 0.05


def test_grid_contains_table_angles_for_any_point_count():
    curves, _ = head_target_curves(["cosface"], num_points=7 + 3)  # 20-degree grid misses 30, 90, 150
    theta, values = curves["cosface"]
    for angle in np.deg2rad(ANGLES):
        assert np.isclose(theta, angle, rtol=0, atol=1e-12).any()
    np.testing.assert_allclose(values_at(theta, values), np.cos(np.deg2rad(ANGLES)) - 0.35, atol=1e-6)


def test_table_values_and_monotone_flag():
    curves, skipped = head_target_curves(
        ["arcface", "cosface"], num_points=91, head_kwargs={"cosface": {"margin": 0.2}}
    )
    easy, _ = head_target_curves(["arcface"], num_points=91, head_kwargs={"arcface": {"easy_margin": True}})
    assert skipped == {}
    rows = _table_rows(target_logit_table({**curves, "arcface easy": easy["arcface"]}))
    theta = np.deg2rad(ANGLES)
    np.testing.assert_allclose(rows["softmax reference cos θ"][0], np.cos(theta), atol=1e-4)
    np.testing.assert_allclose(rows["arcface"][0], reference_target("arcface", theta), atol=5e-4)
    np.testing.assert_allclose(rows["cosface"][0], reference_target("cosface", theta, margin=0.2), atol=1e-4)
    np.testing.assert_allclose(
        rows["arcface easy"][0], reference_target("arcface", theta, easy_margin=True), atol=5e-4
    )
    # easy margin jumps up from cos(90 + m) to cos(90) = 0 at 90 degrees
    assert rows["arcface"][1] == "yes" and rows["cosface"][1] == "yes" and rows["arcface easy"][1] == "no"
    assert "-0.0000" not in target_logit_table(curves)


def test_is_monotone():
    assert is_monotone([3.0, 2.0, 2.0, -1.0])
    assert not is_monotone([3.0, 2.0, 2.1, -1.0])
    assert is_monotone([1.0, 1.0 + 1e-7])  # float32 noise is not a rise


def test_identical_curves_share_a_line_and_labels_show_defaults():
    theta = np.linspace(0.0, math.pi, 5)
    cos = np.cos(theta)
    curves = {"a": (theta, cos), "b": (theta, cos - 0.35), "c": (theta, cos + 1e-7), "d": (theta, cos - 0.35)}
    groups = group_identical(curves)
    assert [names for names, _, _ in groups] == [["a", "c"], ["b", "d"]]
    np.testing.assert_allclose(groups[1][2], cos - 0.35)
    assert head_label("arcface") == "arcface (margin=0.5)"
    assert head_label("arcface", easy_margin=True, margin=0.3) == "arcface (margin=0.3, easy_margin)"
    assert head_label("normface") == "normface"


def test_unknown_names_are_a_clear_error(capsys):
    with pytest.raises(ValueError, match=r"unknown head name\(s\) 'nosuchhead'.*available: .*arcface"):
        head_target_curves(["arcface", "nosuchhead"])
    with pytest.raises(ValueError, match="`num_points` must be an integer >= 2, got 1"):
        head_target_curves(["arcface"], num_points=1)
    args = _parser().parse_args(["heads", "--names", "nosuchhead", "--out", "unused.png"])
    assert plot_command.run(args) == 2
    err = capsys.readouterr().err
    assert "'nosuchhead'" in err and "arcface" in err
    with pytest.raises(SystemExit):
        _parser().parse_args(["heads", "--out", "x.png", "--theta-points", "1"])
    assert "expected an integer >= 2, got 1" in capsys.readouterr().err


class _NotAMarginHead(keras.layers.Layer):
    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes


class _NeedsAWrappedHead(ArcFaceHead):
    def __init__(self, num_classes, head, **kwargs):
        super().__init__(num_classes, **kwargs)


def test_heads_that_cannot_be_drawn_are_skipped_with_a_reason(monkeypatch, tmp_path, capsys):
    def fails(self, theta):
        raise NotImplementedError("needs batch state")

    monkeypatch.setattr(ArcFaceHead, "target_curve", fails)
    monkeypatch.setitem(HEADS._classes, "zz_not_margin", _NotAMarginHead)
    monkeypatch.setitem(HEADS._classes, "zz_wrapper", _NeedsAWrappedHead)
    curves, skipped = head_target_curves(["arcface", "cosface", "zz_not_margin", "zz_wrapper"], num_points=19)
    assert list(curves) == ["cosface"]
    assert "target_curve failed: NotImplementedError: needs batch state" in skipped["arcface"]
    assert "_NotAMarginHead has no target_curve" in skipped["zz_not_margin"]
    assert skipped["zz_wrapper"].startswith("cannot be constructed with num_classes=10: TypeError")

    out = tmp_path / "heads.png"
    assert plot_command.run(_parser().parse_args(["heads", "--out", str(out), "--theta-points", "19"])) == 0
    captured = capsys.readouterr()
    assert "skipped arcface: target_curve failed" in captured.err
    assert "skipped zz_wrapper: cannot be constructed" in captured.err
    assert "| cosface |" in captured.out and "| arcface |" not in captured.out
    assert out.stat().st_size > 0

    # nothing drawable: no PNG, exit 1
    none = tmp_path / "none.png"
    assert plot_command.run(_parser().parse_args(["heads", "--names", "arcface", "--out", str(none)])) == 1
    assert not none.exists()
    assert "no head could be drawn" in capsys.readouterr().err


@pytest.mark.parametrize("unit", ["degrees", "radians"])
def test_cli_writes_png_and_table(tmp_path, capsys, unit):
    import matplotlib.image

    out = tmp_path / "figures" / "heads.png"
    table = tmp_path / "heads.md"
    args = _parser().parse_args(
        ["heads", "--names", "arcface", "cosface", "normface", "--out", str(out), "--theta-points", "91",
         "--x-unit", unit, "--table-out", str(table)]
    )
    assert plot_command.run(args) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(str(out))
    assert image.shape[0] > 300 and image.shape[1] > 400
    assert image[..., :3].std() > 0.05  # not a blank canvas
    printed = capsys.readouterr().out
    rows = _table_rows(printed)
    assert set(rows) == {"softmax reference cos θ", "arcface", "cosface", "normface"}
    np.testing.assert_allclose(rows["normface"][0], np.cos(np.deg2rad(ANGLES)), atol=1e-4)
    assert _table_rows(table.read_text()) == rows


def test_plot_is_wired_into_main(tmp_path):
    from kerasface.cli.main import COMMANDS, main

    if "plot" not in COMMANDS:
        pytest.skip("`plot` is not in kerasface.cli.main.COMMANDS yet")
    out = tmp_path / "heads.png"
    assert main(["plot", "heads", "--names", "cosface", "--out", str(out), "--theta-points", "19"]) == 0
    assert out.stat().st_size > 0


def _bench(*args, tmp_path):
    command = [sys.executable, str(REPO / "bench" / "head_scale.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)


@pytest.mark.slow  # a bench smoke run (subprocess, ~25 s); the heads have their own tests
def test_head_scale_smoke_writes_json(tmp_path):
    out = tmp_path / "scale.json"
    finished = _bench(
        "--names", "arcface", "--classes", "50", "--dim", "16", "--batch", "8", "--runs", "2", "--sgd",
        "--out", str(out), tmp_path=tmp_path,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["config"]["classes"] == 50 and report["config"]["sgd"] is True
    assert report["machine"]["cpu_count"] >= 1
    [result] = report["results"]
    for key in (
        "step_time_median_s", "step_times_s", "step_cpu_median_s", "peak_rss_bytes", "baseline_rss_bytes",
        "step_rss_bytes", "build_peak_rss_bytes", "kernel_shape", "kernel_bytes",
    ):
        assert result[key] is not None, key
    assert result["name"] == "arcface" and result["status"] == "ok"
    assert result["kernel_shape"] == [16, 50] and result["kernel_bytes"] == 16 * 50 * 4
    assert len(result["step_times_s"]) == 2 and result["step_time_median_s"] > 0
    assert result["step_rss_bytes"] == result["peak_rss_bytes"] - result["baseline_rss_bytes"]
    assert result["peak_rss_bytes"] >= result["baseline_rss_bytes"] > 100 * 2**20  # TF runtime alone
    assert math.isfinite(result["final_loss"])
    assert "| arcface |" in finished.stdout and "| head | median step (s) |" in finished.stdout


def test_head_scale_rejects_unknown_names(monkeypatch, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("head_scale", REPO / "bench" / "head_scale.py")
    head_scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(head_scale)
    # the real listing runs in a child process (tested above); no TensorFlow start-up here
    monkeypatch.setattr(head_scale, "registered_heads", lambda: ["arcface", "cosface"])
    with pytest.raises(SystemExit) as exit_info:
        head_scale.main(["--names", "arcface", "nosuchhead", "--classes", "50"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--names: unknown head(s) 'nosuchhead'; available: arcface, cosface" in err
    with pytest.raises(SystemExit):
        head_scale.main(["--head-kwargs", "arcface={bad json", "--classes", "50"])
    assert "arcface: not valid JSON" in capsys.readouterr().err
