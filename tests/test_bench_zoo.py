"""``kerasface bench zoo``: per-backbone measurements, resumable JSON, Markdown table, CLI."""

import argparse
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from kerasface.benchmark import zoo_benchmark as zoo
from kerasface.budget.budget_check import format_quantity
from kerasface.cli import bench_command

# A MobileFaceNet small enough to convert in seconds, still with every layer type.
TINY_MOBILEFACENET = {"width_multiplier": 0.25, "stages": [[2, 64, 1, 2]], "embedding_size": 64}
FAST = {"runs": 3, "warmup": 1, "max_seconds": 1.0, "calibration_images": 8}


def decoder():
    """(B, 16) embeddings -> (B, 8, 8, 3) images, standing in for the LATSE decoder."""
    embeddings = keras.Input((16,), name="embedding")
    x = keras.layers.Reshape((4, 4, 1))(keras.layers.Dense(16)(embeddings))
    x = keras.layers.Conv2DTranspose(3, 3, strides=2, padding="same", activation="tanh")(x)
    return keras.Model(embeddings, x, name="tiny_decoder")


class Factory:
    """Counts its calls, so a test can tell a skipped backbone from a measured one."""

    def __init__(self, build):
        self.build = build
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.build()


def broken():
    raise RuntimeError("this backbone cannot be built (injected)")


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "zoo.json"
    factories = {"broken": Factory(broken), "tiny_decoder": Factory(decoder)}
    report = zoo.run_zoo(
        names=["broken", "mobilefacenet", "tiny_decoder"],
        out=out,
        settings=FAST,
        backbone_kwargs={"mobilefacenet": TINY_MOBILEFACENET},
        isolate=False,
        factories=factories,
        command="pytest zoo",
    )
    return out, report, factories


def test_embedding_backbone_fields(zoo_run):
    out, report, _ = zoo_run
    result = report["results"]["mobilefacenet"]
    assert result["status"] == "ok", result["error"]
    assert result["errors"] == {} and result["error"] is None
    assert result["kind"] == "embedding"
    assert result["embedding_size"] == 64 and result["input_shape"] == [112, 112, 3]
    assert result["backbone_kwargs"] == TINY_MOBILEFACENET
    # Independent count: the same seeded model built here (BN statistics are parameters too).
    from kerasface import backbones

    model = backbones.get("mobilefacenet", **TINY_MOBILEFACENET)
    assert result["params"] == model.count_params()
    assert result["trainable_params"] == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    for field in zoo.MEASUREMENT_FIELDS:
        assert isinstance(result[field], (int, float)) and result[field] > 0, field
    assert isinstance(result["macs"], int) and result["flops"] > 2 * result["macs"]
    # fp32 stores 4 bytes per (BN-folded) weight, int8 about 1.
    assert 3.5 * result["trainable_params"] < result["tflite_fp32_bytes"] < 4.5 * result["params"] + 100_000
    assert result["tflite_int8_bytes"] < result["tflite_fp32_bytes"] / 2.5
    assert "QUANTIZE" in result["tflite_int8_ops"] and "L2_NORMALIZATION" in result["tflite_fp32_ops"]
    assert not [op for op in result["tflite_fp32_ops"] + result["tflite_int8_ops"] if op.startswith("custom:")]
    for label in ("tflite_fp32", "tflite_int8", "onnx_fp32"):
        latency = result["latency"][label]
        assert latency["batch_size"] == 1 and latency["runs"] >= 3
        assert result[f"{label}_ms"] == latency["median_ms"] <= latency["p90_ms"]
    assert result["calibration"] == {"source": "synthetic faces", "count": 8}
    assert result["settings"] == zoo.zoo_settings(**FAST)
    assert result["machine"]["cpu_count"] == os.cpu_count() and result["machine"]["cpu_model"]
    # The file on disk holds exactly what was returned.
    stored = json.loads(out.read_text())
    assert stored["results"]["mobilefacenet"] == json.loads(json.dumps(result))
    assert stored["command"] == "pytest zoo" and stored["settings"] == zoo.zoo_settings(**FAST)


def test_generic_model_is_measured_through_the_generic_converter(zoo_run):
    _, report, _ = zoo_run
    result = report["results"]["tiny_decoder"]
    assert result["status"] == "ok", result["error"]
    assert result["kind"] == "generic"
    assert result["embedding_size"] == 16
    assert result["input_shape"] == [16] and result["output_shape"] == [8, 8, 3]
    assert result["calibration"] == {"source": "random normal", "count": 8}
    assert result["params"] == decoder().count_params()
    assert "TRANSPOSE_CONV" in result["tflite_fp32_ops"] and "L2_NORMALIZATION" not in result["tflite_fp32_ops"]
    assert all(result[field] is not None for field in zoo.MEASUREMENT_FIELDS)


def test_failing_backbone_is_recorded_and_the_rest_continue(zoo_run):
    out, report, _ = zoo_run
    failed = report["results"]["broken"]
    assert failed["status"] == "failed"
    assert failed["error"] == "RuntimeError: this backbone cannot be built (injected)"
    assert all(failed[field] is None for field in zoo.MEASUREMENT_FIELDS)
    # Measured first, yet the two after it were measured too.
    assert list(report["this_run"]) == ["broken", "mobilefacenet", "tiny_decoder"]
    assert set(report["this_run"].values()) == {"measured"}
    assert json.loads(out.read_text())["results"]["broken"]["status"] == "failed"


def test_second_run_skips_what_was_measured(zoo_run):
    out, report, factories = zoo_run
    before = json.loads(out.read_text())
    calls = {name: factory.calls for name, factory in factories.items()}
    again = zoo.run_zoo(
        names=["broken", "mobilefacenet", "tiny_decoder"],
        out=out,
        settings=FAST,
        backbone_kwargs={"mobilefacenet": TINY_MOBILEFACENET},
        isolate=False,
        factories=factories,
        command="pytest zoo again",
    )
    # ok results are reused; the failed one is tried again.
    assert again["this_run"] == {"broken": "measured", "mobilefacenet": "skipped", "tiny_decoder": "skipped"}
    assert factories["tiny_decoder"].calls == calls["tiny_decoder"]
    assert factories["broken"].calls == calls["broken"] + 1
    after = json.loads(out.read_text())
    for name in ("mobilefacenet", "tiny_decoder"):
        assert after["results"][name] == before["results"][name]


def test_reuse_needs_same_settings_kwargs_and_cpu(zoo_run):
    _, report, _ = zoo_run
    result = report["results"]["mobilefacenet"]
    settings = zoo.zoo_settings(**FAST)
    machine = zoo.machine_info()
    assert zoo.already_measured(result, settings, TINY_MOBILEFACENET, machine)
    assert not zoo.already_measured(result, zoo.zoo_settings(**{**FAST, "runs": 4}), TINY_MOBILEFACENET, machine)
    assert not zoo.already_measured(result, settings, {**TINY_MOBILEFACENET, "embedding_size": 32}, machine)
    assert not zoo.already_measured(result, settings, TINY_MOBILEFACENET, {**machine, "cpu_model": "other"})
    assert not zoo.already_measured(report["results"]["broken"], settings, {}, machine)


def test_markdown_table(zoo_run):
    _, report, _ = zoo_run
    table = zoo.markdown_table(report)
    lines = table.splitlines()
    assert lines[0] == (
        "| backbone | embedding D | params | MACs | FLOPs | TFLite fp32 MB | TFLite int8 MB | "
        "TFLite fp32 ms/face | TFLite int8 ms/face | ONNX fp32 ms/face | notes |"
    )
    assert lines[1].count("|") == 12
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines[2:5]}
    assert set(rows) == {"broken", "mobilefacenet", "tiny_decoder"}
    result = report["results"]["mobilefacenet"]
    cells = [cell.strip() for cell in rows["mobilefacenet"].strip("|").split("|")]
    assert cells == [
        "mobilefacenet",
        "64",
        format_quantity(result["params"]),
        format_quantity(result["macs"]),
        format_quantity(result["flops"]),
        f"{result['tflite_fp32_bytes'] / 1e6:.2f}",
        f"{result['tflite_int8_bytes'] / 1e6:.2f}",
        f"{result['tflite_fp32_ms']:.2f}",
        f"{result['tflite_int8_ms']:.2f}",
        f"{result['onnx_fp32_ms']:.2f}",
        "",
    ]
    assert "generic conversion, not a 112x112 embedding model: (16) -> (8x8x3)" in rows["tiny_decoder"]
    assert rows["broken"].count(" - ") >= 9 and "failed: RuntimeError: this backbone cannot be built" in rows["broken"]
    cpu_model = zoo.machine_info()["cpu_model"]
    assert f"Machine: {cpu_model}, " in table and f"of {os.cpu_count()} logical cores" in table
    assert "batch 1, 1 thread(s), median of up to 3 timed runs" in table
    assert "Command: `pytest zoo`" in table
    # A chosen subset, in the chosen order.
    subset = zoo.markdown_table(report, ["tiny_decoder", "mobilefacenet"]).splitlines()
    assert subset[2].startswith("| tiny_decoder |") and subset[3].startswith("| mobilefacenet |")
    assert subset[4] == ""


def test_settings_and_report_errors(tmp_path):
    with pytest.raises(ValueError, match=r"`runs` must be an integer >= 3, got 2"):
        zoo.zoo_settings(runs=2)
    with pytest.raises(ValueError, match=r"unknown zoo settings \['thread'\]"):
        zoo.zoo_settings(thread=1)
    with pytest.raises(FileNotFoundError, match="nowhere: calibration is not a directory"):
        zoo.zoo_settings(calibration=str(tmp_path / "nowhere"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad.json: not a valid zoo JSON file"):
        zoo.load_results(bad)
    with pytest.raises(ValueError, match="`factories` needs isolate=False"):
        zoo.run_zoo(out=tmp_path / "z.json", factories={"x": decoder})
    with pytest.raises(ValueError, match=r"unknown backbone\(s\) no_such_net; available: .*mobilefacenet"):
        zoo.run_zoo(names=["no_such_net"], out=tmp_path / "z.json", isolate=False)
    with pytest.raises(ValueError, match=r"keyword arguments given for backbone\(s\) \['iresnet'\]"):
        zoo.run_zoo(names=["x"], out=tmp_path / "z.json", isolate=False, factories={"x": decoder},
                    backbone_kwargs={"iresnet": {}})
    assert not (tmp_path / "z.json").exists()


def test_child_process_failure_is_a_result(tmp_path):
    settings = zoo.zoo_settings(**FAST)
    result = zoo.measure_in_subprocess("mobilefacenet", settings, {"width_multiplier": -1.0}, timeout=300)
    assert result["status"] == "failed"
    assert "width_multiplier" in result["error"] and "-1.0" in result["error"]
    assert result["backbone_kwargs"] == {"width_multiplier": -1.0} and result["settings"] == settings


def _parse(argv):
    parser = argparse.ArgumentParser(prog="kerasface bench")
    bench_command.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_parses_and_rejects_bad_options(capsys):
    args = _parse(["zoo"])
    assert (args.bench_target, args.out, args.threads, args.runs, args.max_seconds, args.calibration_images) == (
        "zoo", "docs/zoo.json", 1, 30, 20.0, 100
    )
    assert zoo.command_line(args) == (
        "kerasface bench zoo --out docs/zoo.json --calibration-images 100 --threads 1 --runs 30 --warmup 5 "
        "--max-seconds 20"
    )
    args = _parse(["zoo", "--names", "a", "b", "--kwargs", 'a={"embedding_size": 128}', "--no-onnx", "--force"])
    assert args.names == ["a", "b"] and args.kwargs == [("a", {"embedding_size": 128})]
    assert "--kwargs 'a={\"embedding_size\":128}'" in zoo.command_line(args)
    for argv, message in [
        (["zoo", "--runs", "2"], "expected an integer >= 3, got 2"),
        (["zoo", "--threads", "0"], "expected an integer >= 1, got 0"),
        (["zoo", "--max-seconds", "-1"], "expected a number > 0, got -1.0"),
        (["zoo", "--kwargs", "a=[1]"], "a: expected a JSON object"),
        (["zoo", "--kwargs", "nonsense"], "expected NAME=JSON"),
        ([], "the following arguments are required: BENCHMARK"),
    ]:
        with pytest.raises(SystemExit):
            _parse(argv)
        assert message in capsys.readouterr().err


def test_cli_run_writes_json_and_markdown(tmp_path, monkeypatch, capsys):
    # The child processes are replaced by canned results: what is tested is the wiring.
    measured = []

    def fake_measure(name, settings, backbone_kwargs=None, timeout=None):
        measured.append(name)
        if name == "bad":
            return zoo._failed(name, settings, backbone_kwargs, "child process killed by signal 9 (out of memory?)")
        return {**zoo._failed(name, settings, backbone_kwargs, None), "status": "ok", "kind": "embedding",
                "embedding_size": 512, "params": 1_234_567, "macs": 2_000_000, "tflite_fp32_bytes": 4_000_000}

    monkeypatch.setattr(zoo, "registered_backbones", lambda: ["bad", "good"])
    monkeypatch.setattr(zoo, "measure_in_subprocess", fake_measure)
    out, markdown = tmp_path / "zoo.json", tmp_path / "docs" / "zoo.md-table"
    args = _parse(["zoo", "--out", str(out), "--markdown", str(markdown), "--runs", "5"])
    assert bench_command.run(args) == 1  # one backbone failed
    printed = capsys.readouterr()
    assert measured == ["bad", "good"]
    assert "| good | 512 | 1.23M | 2.00M | - | 4.00 |" in printed.out
    assert "failed: child process killed by signal 9" in printed.out
    assert "1 of 2 backbone(s) not fully measured: bad" in printed.err
    assert markdown.read_text() == printed.out
    stored = json.loads(out.read_text())
    assert stored["command"].startswith(f"kerasface bench zoo --out {out} --markdown {markdown}")
    assert stored["results"]["good"]["settings"]["runs"] == 5
    # Resumed: only the failed one runs again.
    measured.clear()
    bench_command.run(args)
    assert measured == ["bad"]
    args = _parse(["zoo", "--out", str(out), "--names", "good", "nope"])
    assert bench_command.run(args) == 2
    assert "unknown backbone(s) nope; available: bad, good" in capsys.readouterr().err


@pytest.mark.slow
def test_module_command_end_to_end(tmp_path):
    out = tmp_path / "zoo.json"
    command = [
        sys.executable, "-m", "kerasface.benchmark.zoo_benchmark", "--names", "mobilefacenet", "--out", str(out),
        "--kwargs", "mobilefacenet=" + json.dumps(TINY_MOBILEFACENET), "--runs", "3", "--warmup", "1",
        "--max-seconds", "1", "--calibration-images", "8",
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads(out.read_text())["results"]["mobilefacenet"]
    assert result["status"] == "ok" and result["embedding_size"] == 64
    assert "| mobilefacenet | 64 |" in finished.stdout
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert "already measured with these settings, skipped" in again.stderr
