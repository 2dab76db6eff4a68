"""``kerasface bench --model FILE``: per-face latency table and JSON, argument errors, worker processes."""

import argparse
import json

import numpy as np
import pytest

from kerasface.benchmark import bench_worker, model_benchmark
from kerasface.benchmark.latency import LatencyResult
from kerasface.cli import bench_command

TINY_MOBILEFACENET = {"width_multiplier": 0.25, "stages": [[2, 64, 1, 2]], "embedding_size": 64}
RECORD_KEYS = {"threads", "batch_size", "runs", "median_ms", "p90_ms", "per_face_median_ms", "per_face_p90_ms",
               "faces_per_second"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny MobileFaceNet, its .tflite and .onnx files, and a few uint8 faces."""
    from kerasface import backbones
    from kerasface.export import export_onnx, export_tflite

    folder = tmp_path_factory.mktemp("bench_model")
    model = backbones.get("mobilefacenet", **TINY_MOBILEFACENET)
    tflite = export_tflite(model, folder / "tiny.tflite")
    onnx = export_onnx(model, folder / "tiny.onnx")
    faces = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    return {"model": model, "tflite": tflite, "onnx": onnx, "faces": faces, "folder": folder}


def _parse(argv):
    parser = argparse.ArgumentParser(prog="kerasface bench")
    bench_command.add_arguments(parser)
    return parser.parse_args(argv)


def _keras_reference(model, faces):
    normalised = (faces.astype(np.float32) - 127.5) / 128.0
    embeddings = np.asarray(model(normalised, training=False))
    return embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)


def test_cli_tflite_prints_table_and_writes_json(tiny, tmp_path, capsys):
    out = tmp_path / "reports" / "bench.json"
    args = _parse(["--model", str(tiny["tflite"]), "--batch-sizes", "1,3", "--runs", "3", "--warmup", "1",
                   "--max-seconds", "1", "--json", str(out)])
    assert args.bench_target is None
    assert bench_command.run(args) == 0
    printed = capsys.readouterr()
    report = json.loads(out.read_text())
    assert report["model"] == str(tiny["tflite"])
    assert (report["format"], report["runtime"], report["embedding_size"]) == ("tflite", "litert", 64)
    assert report["engine"] == "embedder" and "preprocessing included" in report["timed"]
    assert report["inputs"] == {"source": "synthetic faces", "count": 3}
    assert report["settings"] == {"threads": [1], "batch_sizes": [1, 3], "runs": 3, "warmup": 1,
                                  "max_seconds": 1.0, "isolate": True, "peer_options": {}}
    assert report["command"].startswith(f"kerasface bench --model {tiny['tflite']} --threads 1 --batch-sizes 1,3")
    assert [(r["threads"], r["batch_size"]) for r in report["results"]] == [(1, 1), (1, 3)]
    for record in report["results"]:
        assert set(record) == RECORD_KEYS
        assert record["runs"] >= 3
        assert 0 < record["median_ms"] <= record["p90_ms"]
        batch = record["batch_size"]
        assert record["per_face_median_ms"] == pytest.approx(record["median_ms"] / batch)
        assert record["per_face_p90_ms"] == pytest.approx(record["p90_ms"] / batch)
        assert record["faces_per_second"] == pytest.approx(1000.0 * batch / record["median_ms"])
    lines = printed.out.splitlines()
    assert lines[0] == f"model: {tiny['tflite']} (tflite, runtime litert, 64-d embeddings)"
    assert "preprocessing included" in lines[1]
    header = lines.index("| threads | batch | ms/face median | ms/face p90 | faces/s | timed runs |")
    rows = lines[header + 2:]
    first = report["results"][0]
    assert rows[0] == (f"| 1 | 1 | {first['per_face_median_ms']:.2f} | {first['per_face_p90_ms']:.2f} | "
                       f"{first['faces_per_second']:.1f} | {first['runs']} |")
    assert rows[1].startswith("| 1 | 3 | ") and len(rows) == 2
    assert f"wrote {out}" in printed.err


def test_cli_onnx_in_process_with_two_thread_counts(tiny, tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = _parse(["--model", str(tiny["onnx"]), "--threads", "1,2", "--batch-sizes", "2", "--runs", "3",
                   "--warmup", "0", "--max-seconds", "1", "--in-process", "--json", str(out)])
    assert bench_command.run(args) == 0
    printed = capsys.readouterr().out
    assert "(onnx, runtime onnxruntime, 64-d embeddings)" in printed
    assert [line[:10] for line in printed.splitlines()[-2:]] == ["| 1 | 2 | ", "| 2 | 2 | "]
    report = json.loads(out.read_text())
    assert report["settings"]["isolate"] is False and report["command"].endswith(f"--in-process --json {out}")
    assert [(r["threads"], r["batch_size"]) for r in report["results"]] == [(1, 2), (2, 2)]
    assert all(set(record) == RECORD_KEYS for record in report["results"])


def test_timed_function_embeds_like_keras(tiny):
    # What the worker times must be the real embedding, not a no-op: compare with Keras.
    reference = _keras_reference(tiny["model"], tiny["faces"])
    for path, engine in ((tiny["tflite"], "embedder"), (tiny["onnx"], "embedder"),
                         (tiny["tflite"], "litert_no_xnnpack")):
        embed, info = bench_worker.open_timed_function(path, threads=1, engine=engine)
        embeddings = np.asarray(embed(tiny["faces"]))
        assert embeddings.shape == (3, 64) and info["embedding_size"] == 64
        cosine = np.sum(embeddings * reference, axis=1)
        assert cosine.min() > 0.999, (path, engine, cosine)


def test_keras_engines_embed_like_keras(tiny):
    path = tiny["folder"] / "tiny.keras"
    tiny["model"].save(path)
    reference = _keras_reference(tiny["model"], tiny["faces"])
    for engine in ("keras_call", "keras_predict_on_batch"):
        embed, info = bench_worker.open_timed_function(path, threads=1, engine=engine)
        np.testing.assert_allclose(embed(tiny["faces"]), reference, atol=1e-5)
        assert info["format"] == "keras" and info["embedding_size"] == 64
    with pytest.raises(ValueError, match=r"engine 'keras_call' times a kerasface model, which takes no peer "
                                         r"options \(got \['channel_order'\]\)"):
        bench_worker.open_timed_function(path, threads=1, engine="keras_call", peer_options={"channel_order": "bgr"})


def test_latency_record_per_face_numbers():
    record = bench_worker.latency_record(LatencyResult(median_ms=40.0, p90_ms=60.0, runs=7, batch_size=16), threads=2)
    assert record == {"threads": 2, "batch_size": 16, "runs": 7, "median_ms": 40.0, "p90_ms": 60.0,
                      "per_face_median_ms": 2.5, "per_face_p90_ms": 3.75, "faces_per_second": 400.0}


def test_table_from_a_canned_report():
    report = {
        "model": "m.onnx", "format": "onnx", "runtime": "opencv", "embedding_size": 128,
        "timed": bench_worker.ENGINE_DESCRIPTIONS["embedder"], "inputs": {"source": "synthetic faces", "count": 16},
        "settings": {"runs": 10, "warmup": 2, "max_seconds": 5.0},
        "machine": {"cpu_model": "Test CPU", "usable_cpus": 2, "cpu_count": 4},
        "results": [bench_worker.latency_record(LatencyResult(10.0, 12.5, 10, 1), 1),
                    bench_worker.latency_record(LatencyResult(64.0, 80.0, 9, 16), 2)],
    }
    lines = model_benchmark.format_table(report).splitlines()
    assert lines[0] == "model: m.onnx (onnx, runtime opencv, 128-d embeddings)"
    assert "up to 10 timed calls after 2 warm-up calls (at most 5 s each)" in lines[2]
    assert lines[3] == "machine: Test CPU, 2 of 4 logical cores usable"
    assert lines[-2:] == ["| 1 | 1 | 10.00 | 12.50 | 100.0 | 10 |", "| 2 | 16 | 4.00 | 5.00 | 250.0 | 9 |"]


@pytest.mark.parametrize("argv, message", [
    (["--threads", "0"], "expected comma-separated integers >= 1 such as 1,2, got '0'"),
    (["--threads", "a"], "expected comma-separated integers >= 1 such as 1,2, got 'a'"),
    (["--threads", "1,,2"], "got '1,,2'"),
    (["--batch-sizes", "16,-1"], "got '16,-1' (expected an integer >= 1, got -1)"),
    (["--runs", "2"], "expected an integer >= 3, got 2"),
    (["--max-seconds", "0"], "expected a number > 0, got 0.0"),
    (["--pixel-range", "0-9"], "invalid choice: '0-9'"),
])
def test_bad_options_are_rejected(argv, message, capsys):
    with pytest.raises(SystemExit):
        _parse(["--model", "m.tflite", *argv])
    assert message in capsys.readouterr().err


def test_option_parsing_and_zoo_still_parses(capsys):
    args = _parse(["--model", "m.onnx", "--threads", "1,2,2", "--batch-sizes", "16,1", "--runtime", "opencv",
                   "--channel-order", "bgr", "--pixel-range=-1-1"])
    assert (args.bench_threads, args.bench_batch_sizes, args.bench_runs, args.bench_warmup) == ([1, 2], [16, 1], 50, 5)
    assert bench_command.model_command_line(args) == (
        "kerasface bench --model m.onnx --threads 1,2 --batch-sizes 16,1 --runs 50 --warmup 5 --max-seconds 30 "
        "--runtime=opencv --channel-order=bgr --pixel-range=-1-1"
    )
    zoo = _parse(["zoo", "--threads", "2"])
    assert (zoo.bench_target, zoo.model, zoo.threads) == ("zoo", None, 2)
    with pytest.raises(SystemExit):
        _parse([])
    assert "the following arguments are required: BENCHMARK" in capsys.readouterr().err
    # --model and a sub-benchmark together: refused before anything runs.
    assert bench_command.run(_parse(["--model", "m.onnx", "zoo"])) == 2
    assert "--model times one file and cannot be combined with the 'zoo' benchmark" in capsys.readouterr().err


def test_missing_model_file(tmp_path, capsys):
    missing = tmp_path / "nowhere.tflite"
    assert bench_command.run(_parse(["--model", str(missing)])) == 2
    err = capsys.readouterr().err
    assert f"kerasface bench: error: {missing}: no such model file or directory" in err
    with pytest.raises(ValueError, match=r"`threads` must be integers >= 1, got 0"):
        model_benchmark.benchmark_model(tmp_path, threads=[1, 0])
    with pytest.raises(ValueError, match=r"`runs` must be an integer >= 3, got 1"):
        model_benchmark.benchmark_model(tmp_path, runs=1)


@pytest.mark.parametrize("isolate", [pytest.param(True, marks=pytest.mark.slow), False])
def test_unreadable_model_is_reported(isolate, tmp_path, capsys):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an onnx file")
    argv = ["--model", str(broken), "--runs", "3"] + ([] if isolate else ["--in-process"])
    assert bench_command.run(_parse(argv)) == 1
    err = capsys.readouterr().err
    assert f"kerasface bench: error: {broken}: cannot load the model:" in err


def _bench_files():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "export" / "bench_files.py"
    spec = importlib.util.spec_from_file_location("bench_files", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_self_contained_bench_files_script(tiny, tmp_path, capsys):
    bench_files = _bench_files()
    out = tmp_path / "files.json"
    argv = [str(tiny["tflite"]), str(tiny["onnx"]), "--threads", "1,2", "--rounds", "2", "--runs", "2",
            "--warmup", "1", "--batch", "2", "--json", str(out)]
    assert bench_files.main(argv) == 0
    report = json.loads(out.read_text())
    rows = [(r["file"], r["threads"], r["batch"]) for r in report["results"]]
    assert rows == [(str(tiny["tflite"]), 1, 2), (str(tiny["onnx"]), 1, 2),
                    (str(tiny["tflite"]), 2, 2), (str(tiny["onnx"]), 2, 2)]
    for row in report["results"]:
        assert len(row["rounds_ms"]) == 2 and row["ms_per_face"] > 0
    assert report["results"][0]["ratio_to_first"] == 1.0
    assert "tiny.onnx" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench_files.main([str(tiny["tflite"]), "--threads", "0"])
    assert "--threads takes positive ints" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_files.main([str(tmp_path / "missing.tflite")])
    assert "no such file" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"not a flatbuffer")
    with pytest.raises(SystemExit, match="not a TFLite file LiteRT can load"):
        bench_files.main([str(corrupt)])
