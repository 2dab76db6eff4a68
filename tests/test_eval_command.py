"""`kerasface eval` end to end: several sets, all pairs, identification, errors, SFace acceptance."""

import argparse
import itertools
import json

import numpy as np
import pytest
from PIL import Image

from kerasface.cli import eval_command
from kerasface.evaluation import tar_at_far, write_pairs
from kerasface.testing.shared_data import require_shared


class ProjectionEmbedder:
    """A fixed random projection of the normalised pixels (deterministic, no TensorFlow model)."""

    def __init__(self, dim=8):
        self.projection = np.random.default_rng(3).normal(size=(112 * 112 * 3, dim)).astype(np.float32)
        self.images = 0

    def __call__(self, batch):
        self.images += len(batch)
        return np.asarray(batch).reshape(len(batch), -1) @ self.projection

    def reference(self, path):
        pixels = np.asarray(Image.open(path), np.float32)
        features = ((pixels - 127.5) / 128).reshape(-1) @ self.projection
        return features / np.linalg.norm(features)


@pytest.fixture
def identity_tree(tmp_path):
    """5 identities x 4 PNG faces (each identity a noisy copy of its own base image)."""
    rng = np.random.default_rng(5)
    root = tmp_path / "ids"
    for identity in range(5):
        base = rng.integers(0, 256, (112, 112, 3))
        (root / f"p{identity}").mkdir(parents=True)
        for k in range(4):
            noisy = np.clip(base + rng.integers(-60, 60, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(root / f"p{identity}" / f"{k}.png")
    return root


def _args(*argv):
    parser = argparse.ArgumentParser()
    eval_command.add_arguments(parser)
    return parser.parse_args(["--model", "unused.keras", "--no-cache", *argv])


def _paths(root):
    return sorted(root.glob("*/*.png"))


def test_two_sets_all_pairs_and_identification_in_one_call(identity_tree, tmp_path, capsys):
    embedder = ProjectionEmbedder()
    paths = _paths(identity_tree)
    relative = [str(path.relative_to(identity_tree)) for path in paths]
    pairs = list(itertools.combinations(range(len(paths)), 2))[:40]
    write_pairs(tmp_path / "a.txt", [relative[i] for i, _ in pairs], [relative[j] for _, j in pairs],
                [relative[i][:2] == relative[j][:2] for i, j in pairs])
    write_pairs(tmp_path / "b.txt", relative[:10], relative[10:20], [False] * 5 + [True] * 5)
    out = tmp_path / "out.json"
    args = _args("--set", f"first={tmp_path / 'a.txt'}:{identity_tree}",
                 "--set", f"{tmp_path / 'b.txt'}:{identity_tree}",
                 "--all-pairs", str(identity_tree), "--identify", str(identity_tree),
                 "--max-rank", "3", "--far", "0.1", "0.001", "--json", str(out),
                 "--roc-png", str(tmp_path / "roc.png"), "--cmc-png", str(tmp_path / "cmc.png"))
    assert eval_command.run_with_model(embedder, args) == 0
    printed = capsys.readouterr().out
    assert "first: 40 pairs" in printed and "b: 10 pairs" in printed
    report = json.loads(out.read_text())
    assert [entry["set"] for entry in report["verification"]] == ["first", "b"]

    # All pairs: 20 images -> 190 pairs, TAR@FAR from an independent brute force.
    embeddings = np.stack([embedder.reference(path) for path in paths])
    labels = [path.parent.name for path in paths]
    scores, same = zip(*[(embeddings[i] @ embeddings[j], labels[i] == labels[j])
                         for i, j in itertools.combinations(range(len(paths)), 2)])
    expected = tar_at_far(np.array(scores), np.array(same), (0.1, 0.001))
    (all_pairs,) = report["all_pairs"]
    assert all_pairs["num_pairs"] == 190 and all_pairs["num_genuine"] == 30
    assert "accuracy" not in all_pairs  # meaningless with 84% impostors
    assert all_pairs["tar_at_far"]["0.1"]["tar"] == pytest.approx(expected[0.1].tar)
    assert all_pairs["tar_at_far"]["0.001"]["reason"] == "needs >= 1000 impostor pairs, have 160"

    # MegaFace protocol without distractors: every (gallery, probe) pair of an identity.
    identification = report["identification"]
    assert identification["protocol"] == "megaface" and identification["num_probes"] == 5 * 4 * 3
    assert identification["cmc"][0] == pytest.approx(1.0)
    for png in ("roc.png", "cmc.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


def test_set_pairs_report_plain_mean_and_each_cluster_threshold(identity_tree, tmp_path, capsys):
    import shutil

    sets = tmp_path / "sets"
    for identity in range(5):
        for half in range(2):
            (sets / f"s{identity}{half}").mkdir(parents=True)
            for k in (2 * half, 2 * half + 1):
                shutil.copy(identity_tree / f"p{identity}" / f"{k}.png", sets / f"s{identity}{half}")
    lines = [f"s{i}0 s{i}1 1" for i in range(5)] + [f"s{i}0 s{(i + 1) % 5}1 0" for i in range(5)]
    (tmp_path / "set_pairs.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "sets.json"
    args = _args("--set-pairs", f"{tmp_path / 'set_pairs.txt'}:{sets}",
                 "--cluster-threshold", "0.2", "0.5", "--json", str(out))
    assert eval_command.run_with_model(ProjectionEmbedder(), args) == 0
    (entry,) = json.loads(out.read_text())["set_verification"]
    assert [row["cluster_threshold"] for row in entry["rows"]] == [None, 0.2, 0.5]
    assert entry["rows"][0]["frames_kept"] == entry["rows"][0]["frames_total"] == 20
    assert entry["rows"][0]["num_pairs"] == 10
    assert "--set-pairs must be FILE:ROOT" in _error_of(["--set-pairs", "nocolon"], capsys)


def _error_of(argv, capsys):
    assert eval_command.run_with_model(ProjectionEmbedder(), _args(*argv)) == 1
    return capsys.readouterr().err


def test_probe_and_distractor_embeddings_are_cached_and_reusable(identity_tree, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    eval_command.add_arguments(parser)
    distractors = tmp_path / "distractors"
    distractors.mkdir()
    for path in _paths(identity_tree)[:6]:
        (distractors / f"{path.parent.name}_{path.name}").write_bytes(path.read_bytes())
    argv = ["--model", "unused.keras", "--cache-dir", str(tmp_path / "cache"), "--json",
            str(tmp_path / "id.json"), "--identify", str(identity_tree), "--all-pairs",
            str(identity_tree)]
    embedder = ProjectionEmbedder()
    args = parser.parse_args([*argv, "--distractors", str(distractors)])
    assert eval_command.run_with_model(embedder, args, model_id="proj") == 0
    assert embedder.images == 20 + 6  # the probes once for --all-pairs and --identify
    first = json.loads((tmp_path / "id.json").read_text())["identification"]
    assert eval_command.run_with_model(embedder, args, model_id="proj") == 0
    assert embedder.images == 26  # nothing embedded again
    # The cached distractor embeddings are a ready-made --distractors .npy.
    (npy,) = (tmp_path / "cache").glob("distractors-distractors-*.npy")
    args = parser.parse_args([*argv, "--distractors", str(npy)])
    assert eval_command.run_with_model(embedder, args, model_id="proj") == 0
    again = json.loads((tmp_path / "id.json").read_text())["identification"]
    assert again["cmc"] == first["cmc"] and again["num_distractors"] == 6


def test_eval_errors_name_what_is_wrong(identity_tree, tmp_path, capsys):
    embedder = ProjectionEmbedder()
    assert eval_command.run_with_model(embedder, _args()) == 1
    assert "nothing to evaluate" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_text("p0/0.png p0/1.png maybe\n")
    assert eval_command.run_with_model(embedder, _args("--set", f"{bad}:{identity_tree}")) == 1
    assert "bad.txt: line 1: `issame` must be one of 0/1/true/false, got 'maybe'" in capsys.readouterr().err
    assert eval_command.run_with_model(embedder, _args("--distractors", str(identity_tree),
                                                       "--all-pairs", str(identity_tree))) == 1
    assert "--distractors and --cmc-png need --identify" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _args("--far", "2")


@pytest.mark.slow
def test_sface_through_opencv_reproduces_its_reference_accuracy(tmp_path, capsys):
    """The issue's acceptance check: OpenCV's SFace on val_pairs.txt at 95.97% +- 0.1."""
    pytest.importorskip("cv2")
    sface = require_shared("models/opencv_zoo/face_recognition_sface_2021dec_int8bq.onnx")
    data = require_shared("data/celeba_dev")
    parser = argparse.ArgumentParser()
    eval_command.add_arguments(parser)
    args = parser.parse_args([
        "--model", str(sface), "--runtime", "opencv", "--no-cache",
        "--set", f"{data / 'val_pairs.txt'}:{data / 'val'}", "--json", str(tmp_path / "sface.json"),
    ])
    assert eval_command.run(args) == 0
    (result,) = json.loads((tmp_path / "sface.json").read_text())["verification"]
    assert abs(100 * result["accuracy"] - 95.97) <= 0.1
