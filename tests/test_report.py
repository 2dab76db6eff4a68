import argparse
import base64
import io
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import types
from html.parser import HTMLParser

import keras
import numpy as np
import pytest
from PIL import Image

from kerasface.cli import report_command
from kerasface.data.preprocessing import normalize_numpy
from kerasface.evaluation.html_report import write_markdown_report, write_report
from kerasface.evaluation.pairs_file import write_pairs
from kerasface.evaluation.score_histogram import plot_score_histograms
from kerasface.evaluation.set_evaluation import evaluate_set
from kerasface.evaluation.verification import evaluate_scores
from kerasface.evaluation.verification_set import VerificationSet

FARS = (1e-1, 1e-2, 1e-3)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- fixtures


def _write_faces(root, identities=6, per_identity=4, seed=0):
    """Identity = a 4x4 colour pattern; each photo shifts the blocks and adds pixel noise, so
    the fake models misjudge some pairs (there are false accepts and false rejects to show)."""
    rng = np.random.default_rng(seed)
    names = {}
    for identity in range(identities):
        base = rng.integers(40, 216, (4, 4, 3)).repeat(28, 0).repeat(28, 1)
        folder = root / f"id{identity}"
        folder.mkdir(parents=True)
        for photo in range(per_identity):
            shift = rng.normal(0, 45, (4, 4, 3)).repeat(28, 0).repeat(28, 1)
            noise = shift + rng.normal(0, 30, (112, 112, 3))
            pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{photo}.png")
            names.setdefault(identity, []).append(f"id{identity}/{photo}.png")
    return names


def _write_set(tmp_path, seed=0):
    """40 pairs in 10 folds (2 genuine + 2 impostor each) over 24 synthetic faces."""
    root = tmp_path / "faces"
    names = _write_faces(root, seed=seed)
    rng = np.random.default_rng(seed + 1)
    paths_a, paths_b, issame = [], [], []
    for _ in range(10):
        for same in (True, False, True, False):
            first = int(rng.integers(6))
            second = first if same else int((first + rng.integers(1, 6)) % 6)
            a, b = rng.choice(4, 2, replace=False)
            paths_a.append(names[first][a])
            paths_b.append(names[second][b])
            issame.append(same)
    pairs = write_pairs(tmp_path / "pairs.txt", paths_a, paths_b, issame)
    return f"{pairs}:{root}"


def _kernel(seed):
    return np.random.default_rng(seed).normal(size=(48, 16)).astype(np.float32)


def _pooled(images):
    x = np.asarray(images, np.float64)
    return x.reshape(len(x), 4, 28, 4, 28, 3).mean(axis=(2, 4)).reshape(len(x), 48)


def _fake_model(seed):
    """A deterministic embed function: 4x4 average pooling then a fixed linear map."""
    kernel = _kernel(seed)

    def embed(images):
        return (_pooled(images) @ kernel).astype(np.float32)

    return embed


def _numpy_embeddings(paths, seed):
    """Embeddings recomputed from image files, independently of kerasface's embedder."""
    pixels = np.stack([np.asarray(Image.open(path).convert("RGB")) for path in paths])
    raw = _pooled(normalize_numpy(pixels)) @ _kernel(seed).astype(np.float64)
    return raw / np.linalg.norm(raw, axis=1, keepdims=True)


def _numpy_scores(vset, seed):
    embeddings = _numpy_embeddings(vset.images, seed)
    return np.sum(embeddings[vset.pairs[:, 0]] * embeddings[vset.pairs[:, 1]], axis=1)


@pytest.fixture(scope="module")
def evaluations(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("report_set")
    vset = VerificationSet.load(_write_set(tmp_path))
    return {
        name: [evaluate_set(_fake_model(seed), vset, batch_size=16, fars=FARS)]
        for name, seed in (("model A", 0), ("model B", 1))
    }


class _Page(HTMLParser):
    """Every start tag with its attributes, and the text inside each tag carrying data-*."""

    def __init__(self, text):
        super().__init__()
        self.tags = []
        self._open = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        element = {"tag": tag, "attrs": dict(attrs), "text": ""}
        self.tags.append(element)
        if tag not in ("img", "br", "meta", "input", "link"):
            self._open.append(element)

    def handle_endtag(self, tag):
        while self._open:
            if self._open.pop()["tag"] == tag:
                break

    def handle_data(self, data):
        for element in self._open:
            element["text"] += data

    def find(self, tag=None, **attrs):
        return [
            element for element in self.tags
            if (tag is None or element["tag"] == tag)
            and all(element["attrs"].get(key.replace("_", "-")) == value
                    for key, value in attrs.items())
        ]


def _decode_data_uri(uri):
    header, _, payload = uri.partition(",")
    assert header.endswith(";base64"), header
    return header[len("data:"):-len(";base64")], base64.b64decode(payload, validate=True)


@pytest.fixture(scope="module")
def report(evaluations, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "sub" / "report.html"
    info = {"model A": {"description": "fake A", "fingerprint": "abc123"}, "model B": "fake B"}
    assert write_report(path, evaluations, models_info=info, top_k=5,
                        command_line="kerasface report --model a") == str(path)
    text = path.read_text(encoding="utf-8")
    return text, _Page(text)


# ----------------------------------------------------------------------------- HTML report


def test_report_is_self_contained_with_valid_images(report):
    text, page = report
    assert not re.search(r"https?://", text)
    assert not page.find("script") and not page.find("link") and not page.find("iframe")
    for element in page.tags:
        for key in ("src", "href"):
            value = element["attrs"].get(key)
            if value is not None:
                assert value.startswith(("data:", "#")), (key, value[:80])
    images = page.find("img")
    figures = [img for img in images if img["attrs"].get("class") == "figure"]
    faces = [img for img in images if img["attrs"].get("class") != "figure"]
    assert len(figures) == 2  # ROC + histograms of the one set
    # 2 models x (5 false accepts + 5 false rejects) x 2 faces.
    assert len(faces) == 40
    for img in images:
        mime, content = _decode_data_uri(img["attrs"]["src"])
        assert mime == "image/png"
        assert content.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(content)) as decoded:
            decoded.load()
            width, height = decoded.size
        if img in figures:
            assert len(content) > 10_000 and width > 400 and height > 300
        else:
            assert (width, height) == (112, 112)
    for expected in ("kerasface report --model a", "fake A", "abc123", "fake B"):
        assert expected in text


def test_summary_and_tar_table_match_results(report, evaluations):
    text, page = report
    for name, (evaluation,) in evaluations.items():
        result = evaluation.result
        cell = page.find("td", data_model=name, data_set="0")
        assert len(cell) == 1 and float(cell[0]["attrs"]["data-value"]) == result.accuracy
        assert cell[0]["text"].startswith(f"{100 * result.accuracy:.2f}% ±")
        for far, point in result.tar_at_far.items():
            (cell,) = page.find("td", data_model=name, data_far=repr(far))
            if point.reason:
                assert cell["attrs"]["data-tar"] == "nan"
                assert cell["text"] == f"n/a{point.reason}"
            else:
                assert float(cell["attrs"]["data-tar"]) == point.tar
                assert cell["text"].startswith(f"{100 * point.tar:.2f}%")
    # 20 impostors: FAR 1e-1 is measurable, 1e-2 and 1e-3 are not, and say why.
    point = evaluations["model A"][0].result.tar_at_far
    assert point[0.1].reason is None and "needs &gt;= 100 impostor pairs, have 20" in text
    assert 0.6 < point[0.1].tar < 1  # the fake models make mistakes: a real comparison


def test_worst_pairs_are_the_extreme_scores_with_their_faces(report, evaluations):
    text, page = report
    for name, seed in (("model A", 0), ("model B", 1)):
        vset = evaluations[name][0].set
        threshold = evaluations[name][0].result.threshold
        scores = _numpy_scores(vset, seed)
        impostors = np.where(vset.issame, -np.inf, scores)
        false_accepts = np.count_nonzero(~vset.issame & (scores > threshold))
        false_rejects = np.count_nonzero(vset.issame & (scores <= threshold))
        assert f"{false_accepts} of 20 are false accepts (score above the threshold)" in text
        assert f"{false_rejects} of 20 are false rejects" in text
        genuine = np.where(vset.issame, scores, np.inf)
        for kind, order in (("false_accepts", np.argsort(-impostors, kind="stable")),
                            ("false_rejects", np.argsort(genuine, kind="stable"))):
            expected = _distinct_pairs(order, vset.pairs)[:5]
            shown = _shown_pairs(page, kind, name)
            assert [int(element["attrs"]["data-pair"]) for element in shown] == expected
            worst = shown[0]
            index = int(worst["attrs"]["data-pair"])
            assert float(worst["attrs"]["data-score"]) == pytest.approx(scores[index], abs=1e-6)
            wrong = (scores[index] > threshold) != vset.issame[index]
            assert ("wrong" in worst["attrs"]["class"].split()) == wrong
            verdict = {(False, True): "false accept", (False, False): "rejected (correct)",
                       (True, False): "false reject", (True, True): "accepted (correct)"}
            key = bool(vset.issame[index]), bool(scores[index] > threshold)
            assert verdict[key] in worst["text"]
            faces = [element for element in page.tags[page.tags.index(worst):]
                     if element["tag"] == "img"][:2]
            for face, image_index in zip(faces, vset.pairs[index]):
                _, content = _decode_data_uri(face["attrs"]["src"])
                with open(vset.images[image_index], "rb") as f:
                    assert content == f.read()


def _distinct_pairs(order, pairs):
    """``order`` without the later copies of a pair of images (in either order)."""
    seen, kept = set(), []
    for index in order:
        key = frozenset(pairs[index].tolist())
        if key not in seen:
            seen.add(key)
            kept.append(int(index))
    return kept


def _shown_pairs(page, kind, model):
    (block,) = page.find("div", data_kind=kind, data_model=model)
    following = page.tags[page.tags.index(block) + 1:]
    end = next((i for i, element in enumerate(following)
                if element["attrs"].get("class") == "pairs"), len(following))
    return [element for element in following[:end]
            if element["tag"] == "div" and "data-pair" in element["attrs"]]


def test_repeated_pairs_are_shown_once_with_their_count(tmp_path, evaluations):
    vset = evaluations["model A"][0].set
    worst = evaluations["model A"][0].false_accepts(1)[0]
    listed = sum(frozenset(p.tolist()) == frozenset(vset.pairs[worst].tolist())
                 for p in vset.pairs)
    # The worst impostor pair listed 3 more times, once the other way round.
    extra = np.array([vset.pairs[worst], vset.pairs[worst], vset.pairs[worst][::-1]])
    repeated = VerificationSet(
        "repeated", vset.source, vset.images, np.concatenate([vset.pairs, extra]),
        np.concatenate([vset.issame, [False] * 3]), np.concatenate([vset.folds, [0, 1, 2]]),
        root=vset.root,
    )
    evaluation = evaluate_set(_fake_model(0), repeated, fars=FARS)
    path = write_report(tmp_path / "r.html", {"model A": [evaluation]}, top_k=4)
    page = _Page(open(path, encoding="utf-8").read())
    shown = _shown_pairs(page, "false_accepts", "model A")
    order = np.argsort(np.where(repeated.issame, np.inf, -evaluation.scores), kind="stable")
    expected = _distinct_pairs(order, repeated.pairs)[:4]
    assert [int(element["attrs"]["data-pair"]) for element in shown] == expected
    assert expected[0] == worst
    assert f"this pair is listed {listed + 3} times in the set" in shown[0]["text"]
    second = sum(frozenset(p.tolist()) == frozenset(repeated.pairs[expected[1]].tolist())
                 for p in repeated.pairs)
    assert ("listed" in shown[1]["text"]) == (second > 1)


def test_text_is_escaped(tmp_path):
    vset = VerificationSet.load(_write_set(tmp_path))
    vset.name = "<script>alert(1)</script>"
    evaluations = {"<b>A&B</b>": [evaluate_set(_fake_model(0), vset, fars=FARS)]}
    path = write_report(tmp_path / "report.html", evaluations, title="x < y & 'z'", top_k=1,
                        models_info={"<b>A&B</b>": {"path": '"><img src=x>'}})
    text = open(path, encoding="utf-8").read()
    assert "<script>" not in text and "<b>A" not in text and "<img src=x>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;b&gt;A&amp;B&lt;/b&gt;" in text
    assert "<title>x &lt; y &amp; &#x27;z&#x27;</title>" in text
    tags = {element["tag"] for element in _Page(text).tags}
    assert tags <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "table",
                    "tr", "th", "td", "code", "nav", "a", "span", "br", "b", "img", "p", "div"}


def test_report_rejects_mismatched_sets(tmp_path, evaluations):
    other = VerificationSet.load(_write_set(tmp_path, seed=5))
    other.name = "other"
    mixed = {"model A": evaluations["model A"],
             "model C": [evaluate_set(_fake_model(2), other, fars=FARS)]}
    with pytest.raises(ValueError, match=r"set #0 differs between models: 'model A' has "
                                         r"'pairs' \(40 pairs\), 'model C' has 'other'"):
        write_report(tmp_path / "r.html", mixed)
    with pytest.raises(ValueError, match="`top_k` must be an int >= 0, got -1"):
        write_report(tmp_path / "r.html", evaluations, top_k=-1)
    with pytest.raises(ValueError, match="non-empty dict"):
        write_report(tmp_path / "r.html", {})


def _set_verification_result():
    from kerasface.evaluation.set_verification import evaluate_set_embeddings

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(8, 8))
    frames = [centres[i % 8] + rng.normal(0, 1.5, (5, 8)) for i in range(16)]
    # Odd pairs join the two sets of one identity, even pairs neighbouring identities.
    pairs = np.array([[i % 16, (i + 8) % 16] if i % 2 else [i % 16, (i + 1) % 16]
                      for i in range(20)])
    issame = pairs[:, 0] % 8 == pairs[:, 1] % 8
    return evaluate_set_embeddings(frames, pairs, issame, np.arange(20) // 2,
                                   thresholds=(None, 0.5), fars=(0.1,), name="videos")


def test_identification_and_set_verification_sections(tmp_path, evaluations, monkeypatch):
    from kerasface.evaluation.identification import IdentificationResult

    drawn = {}

    def fake_plot_cmc(results, path):
        drawn.update(results)
        Image.new("RGB", (300, 200), "white").save(path)
        return path

    # The report's CMC figure comes from cmc_plot; a stand-in records what it is given.
    fake = types.ModuleType("kerasface.evaluation.cmc_plot")
    fake.plot_cmc = fake_plot_cmc
    monkeypatch.setitem(sys.modules, "kerasface.evaluation.cmc_plot", fake)
    results = {
        name: IdentificationResult(f"probes <{name}>", "megaface", np.linspace(low, low + 0.45, 10),
                                   num_probes=24, num_distractors=100, num_gallery=101)
        for name, low in (("model A", 0.5), ("model B", 0.25))
    }
    videos = _set_verification_result()
    path = write_report(tmp_path / "r.html", evaluations, identification=results,
                        set_results={"model A": videos}, top_k=0)
    text = open(path, encoding="utf-8").read()
    page = _Page(text)

    assert set(drawn) == {"model A", "model B"}
    cells = page.find("td", data_rank="1") + page.find("td", data_rank="5")
    expected = [r.rank1 for r in results.values()] + [r.rank5 for r in results.values()]
    assert [float(c["attrs"]["data-value"]) for c in cells] == expected
    assert [c["text"] for c in cells] == ["50.00%", "25.00%", "70.00%", "45.00%"]
    assert page.find("h2", id="identification")
    assert "probes &lt;model A&gt;" in text

    assert page.find("h2", id="set-verification")
    (table,) = page.find("table", **{"class": "set-verification"})
    for label, row_result in zip(("none (all frames)", "0.5"), videos.results):
        assert (f"{label}{100 * row_result.accuracy:.2f}% ± {100 * row_result.accuracy_std:.2f}"
                f"{row_result.threshold:.4f}{row_result.auc:.4f}") in table["text"]
    kept = videos.frames_kept(0.5)
    assert 0 < np.count_nonzero(kept < 5)  # outlier removal dropped frames somewhere
    assert f"{kept.sum()}/80{np.count_nonzero(kept < 5)}" in table["text"]


# ----------------------------------------------------------------------------- figures, Markdown


def test_score_histograms_png_and_errors(tmp_path, evaluations):
    path = plot_score_histograms({name: items[0] for name, items in evaluations.items()},
                                 tmp_path / "h" / "scores.png")
    with Image.open(path) as image:
        width, height = image.size
    assert width > 2 * height  # two panels side by side
    with pytest.raises(ValueError, match=r"'m': needs both genuine and impostor pairs, got 2 "
                                         r"genuine of 2"):
        plot_score_histograms({"m": (np.array([0.1, 0.2]), np.array([True, True]), 0.0)},
                              tmp_path / "x.png")
    with pytest.raises(TypeError, match="'m' must be a SetEvaluation or"):
        plot_score_histograms({"m": 3}, tmp_path / "x.png")


def test_markdown_report_writes_pngs(tmp_path, evaluations):
    folder = tmp_path / "md"
    path = write_markdown_report(folder, evaluations, top_k=3, title="Report | <x>")
    text = open(path, encoding="utf-8").read()
    assert text.startswith("# Report \\| &lt;x&gt;\n")
    references = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    # ROC + histograms, then 2 models x 2 montages.
    assert len(references) == 6 and len(set(references)) == 6
    for reference in references:
        file = folder / reference
        content = file.read_bytes()
        assert content.startswith(PNG_SIGNATURE) and len(content) > 1000
        with Image.open(file) as image:
            assert min(image.size) >= 100
    result = evaluations["model B"][0].result
    assert f"| model B | {100 * result.accuracy:.2f}% ± {100 * result.accuracy_std:.2f} |" in text
    worst = evaluations["model B"][0].false_accepts(1)[0]
    assert f"| 1 | {evaluations['model B'][0].scores[worst]:.4f} |" in text


# ----------------------------------------------------------------------------- CLI


def _parser():
    return report_command.add_arguments(argparse.ArgumentParser())


def test_model_spec_parsing(tmp_path):
    model = tmp_path / "sface,v2.onnx"
    model.write_bytes(b"x")
    spec = report_command.parse_model_spec(f"{model},name=SFace,runtime=opencv,layout=nchw")
    assert spec.path == str(model) and spec.name == "SFace"
    assert spec.options == {"runtime": "opencv", "layout": "nchw"}
    assert report_command.parse_model_spec(str(model)).name == "sface,v2"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert report_command.parse_model_spec(f"{run_dir}/").name == "run"
    with pytest.raises(ValueError, match=r"unknown key 'size'; allowed: name, runtime, "
                                         r"channel_order, pixel_range, layout"):
        report_command.parse_model_spec(f"{model},size=112")
    with pytest.raises(FileNotFoundError, match=r"missing\.onnx does not exist"):
        report_command.parse_model_spec(f"{tmp_path}/missing.onnx,name=x")
    with pytest.raises(ValueError, match="key 'name' given twice"):
        report_command.parse_model_spec(f"{model},name=a,name=b")
    with pytest.raises(ValueError, match="empty value for 'runtime'"):
        report_command.parse_model_spec(f"{model},runtime=")
    with pytest.raises(ValueError, match="expected key=value after the path, got 'opencv'"):
        report_command.parse_model_spec(f"{model},name=a,opencv")
    with pytest.raises(ValueError, match="no model path"):
        report_command.parse_model_spec(",name=a")
    with pytest.raises(SystemExit):
        _parser().parse_args(["--model", "m", "--set", "s", "--out", "o", "--far", "1.5"])


def _save_model(path, seed):
    model = keras.Sequential([
        keras.Input((112, 112, 3)),
        keras.layers.AveragePooling2D(28),
        keras.layers.Flatten(),
        keras.layers.Dense(16, use_bias=False),
    ])
    model.layers[-1].set_weights([_kernel(seed)])
    model.save(path)
    return path


def _brute_force_megaface_ranks(probe_root, distractor_root, seed):
    """Every ordered pair (probe p, gallery g) of an identity is one search, ranked among all
    distractors; ties count against the true match."""
    probes = sorted(probe_root.glob("*/*.png"))
    distractors = _numpy_embeddings(sorted(distractor_root.glob("*/*.png")), seed)
    embeddings = _numpy_embeddings(probes, seed)
    identity = np.array([path.parent.name for path in probes])
    ranks = []
    for p in range(len(probes)):
        for g in np.flatnonzero((identity == identity[p]) & (np.arange(len(probes)) != p)):
            true = embeddings[p] @ embeddings[g]
            ranks.append(1 + np.count_nonzero(distractors @ embeddings[p] >= true))
    return np.array(ranks)


def test_report_command_end_to_end(tmp_path, capsys):
    set_spec = _write_set(tmp_path)
    probe_root, distractor_root = tmp_path / "faces", tmp_path / "distractors"
    _write_faces(distractor_root, seed=7)
    first = _save_model(tmp_path / "first.keras", 0)
    second = _save_model(tmp_path / "second.keras", 1)
    out = tmp_path / "out" / "report.html"
    argv = ["--model", f"{first},name=First", "--model", str(second), "--set", set_spec,
            "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--far", "0.1", "0.01",
            "--top-k", "2", "--batch-size", "7", "--identify", str(probe_root),
            "--distractors", str(distractor_root), "--markdown", str(tmp_path / "md")]
    assert report_command.run(_parser().parse_args(argv)) == 0
    printed = capsys.readouterr().out
    assert f"report written to {out}" in printed
    assert "First on pairs: accuracy" in printed and "second on pairs: accuracy" in printed
    assert "second: faces + 24 distractors: megaface identification" in printed
    text = out.read_text(encoding="utf-8")
    page = _Page(text)
    vset = VerificationSet.load(set_spec)
    for name, seed in (("First", 0), ("second", 1)):
        expected = evaluate_scores(_numpy_scores(vset, seed), vset.issame, vset.folds, (0.1, 0.01))
        (cell,) = page.find("td", data_model=name, data_set="0")
        assert float(cell["attrs"]["data-value"]) == pytest.approx(expected.accuracy, abs=1e-12)
        (cell,) = page.find("td", data_model=name, data_far="0.1")
        assert float(cell["attrs"]["data-tar"]) == pytest.approx(expected.tar_at_far[0.1].tar)
    ranks = [_brute_force_megaface_ranks(probe_root, distractor_root, seed) for seed in (0, 1)]
    assert all(len(r) == 72 and 0 < np.mean(r == 1) < 1 for r in ranks)
    shown = [float(cell["attrs"]["data-value"])
             for k in (1, 5) for cell in page.find("td", data_rank=str(k))]
    assert shown == pytest.approx([np.mean(r <= k) for k in (1, 5) for r in ranks], abs=1e-12)
    assert len(page.find("img", **{"class": "figure"})) == 3  # ROC, histograms, CMC
    # The header's command line parses back to the same options.
    (code,) = page.find("code")
    words = shlex.split(code["text"])
    assert words[:2] == ["kerasface", "report"]
    assert vars(_parser().parse_args(words[2:])) == vars(_parser().parse_args(argv))
    from kerasface.evaluation.peer_model import model_fingerprint

    assert f"fingerprint</b>: {model_fingerprint(first)}" in text
    # Per model: the verification set, the probes and the distractor folder.
    cached = sorted(name.split("-")[0] for name in os.listdir(tmp_path / "cache"))
    assert cached == ["distractors"] * 2 + ["faces"] * 2 + ["pairs"] * 2
    assert "![CMC](cmc.png)" in (tmp_path / "md" / "report.md").read_text(encoding="utf-8")
    # A second run reads every embedding from the cache.
    assert report_command.run(_parser().parse_args(argv[:-6])) == 0
    assert capsys.readouterr().out.count("embeddings read from") == 2


def test_report_command_errors(tmp_path, capsys):
    set_spec = _write_set(tmp_path)
    model = _save_model(tmp_path / "m.keras", 0)

    def run(*argv):
        code = report_command.run(_parser().parse_args([*argv, "--out", str(tmp_path / "r.html")]))
        return code, capsys.readouterr().err

    code, err = run("--model", str(model), "--model", str(model), "--set", set_spec)
    assert code == 2 and "several models are named 'm'; give each a distinct name=" in err
    code, err = run("--model", f"{model},colour=rgb", "--set", set_spec)
    assert code == 2 and "unknown key 'colour'" in err
    code, err = run("--model", f"{model},channel_order=bgr", "--set", set_spec, "--no-cache")
    assert code == 2 and "cannot open model" in err and "only apply to peer" in err
    code, err = run("--model", str(model), "--set", str(tmp_path / "nope.txt"))
    assert code == 2 and "nope.txt does not exist" in err
    code, err = run("--model", str(model), "--set", set_spec, "--distractors", "d.npy")
    assert code == 2 and "--distractors needs --identify" in err
    code, err = run("--model", f"{model},name=a", "--model", f"{model},name=b", "--set", set_spec,
                    "--identify", str(tmp_path), "--distractors", "d.npy")
    assert code == 2 and "a .npy holds one model's embeddings, but 2 models" in err
    assert not (tmp_path / "r.html").exists()


_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.mark.skipif(not any(shutil.which(b) for b in _BROWSERS), reason="no headless browser")
def test_report_renders_in_headless_browser(tmp_path, evaluations):
    browser = next(shutil.which(b) for b in _BROWSERS if shutil.which(b))
    page = write_report(tmp_path / "report.html", evaluations, top_k=2)
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox",
                    f"--screenshot={shot}", "--window-size=1200,3000", f"file://{page}"],
                   check=True, timeout=60, capture_output=True)
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("L"))
    assert pixels.shape == (3000, 1200)
    assert pixels.std() > 10 and not math.isclose(pixels.mean(), 255)
