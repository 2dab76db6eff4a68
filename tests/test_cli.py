import subprocess
import sys

import pytest

from kerasface.cli.main import COMMANDS, build_parser, main


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: kerasface " + name in capsys.readouterr().out


def test_bad_override_is_a_clear_error(capsys):
    assert main(["train", "--set", "optimizer.lrr=1"]) == 2
    assert "OptimizerConfig has no field 'lrr'" in capsys.readouterr().err


def test_budget_command_reports_mobilefacenet(capsys):
    assert main(["budget", "--backbone", "mobilefacenet", "--embedding-size", "128"]) == 0
    out = capsys.readouterr().out
    assert "mobilefacenet" in out and "MACs" in out and "FLOPs" in out
    assert main(["budget", "--backbone", "mobilefacenet", "--max-params", "0.5M"]) == 1


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path):
    command = [
        sys.executable, "-m", "kerasface.cli.main", "quickstart", "--out", str(tmp_path / "qs"), "--epochs", "1",
        "--set", "data.synthetic_identities=8", "--set", "data.synthetic_images_per_identity=4",
        "--set", f"data.synthetic_dir={tmp_path / 'synthetic'}", "--set", "data.batch_size=8",
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    assert finished.returncode == 0, finished.stderr[-3000:]
    summary = (tmp_path / "qs" / "quickstart.md").read_text()
    for name in ("Keras", "SavedModel", "TFLite fp32", "TFLite int8", "ONNX"):
        assert f"| {name} |" in summary
