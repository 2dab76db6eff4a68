import argparse
import io
import json
import os
import pickle
import re

import keras
import numpy as np
import pytest
from PIL import Image

from kerasface.cli import eval_command
from kerasface.data.preprocessing import normalize_numpy
from kerasface.evaluation import (
    decode_bin_images,
    decode_images,
    embed_images,
    evaluate_scores,
    load_bin,
    plot_roc,
    read_pairs,
    roc_curve,
    tar_at_far,
    verification_accuracy,
    verify_pairs,
    write_bin,
)
from kerasface.testing.shared_data import require_shared


# ----------------------------------------------------------------------------- helpers


def _write(path, text):
    path.write_text(text)
    return path


def _png_bytes(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _random_faces(count, seed):
    return np.random.default_rng(seed).integers(0, 256, (count, 112, 112, 3), dtype=np.uint8)


def _tiny_model(seed=0, dim=8):
    """Average-pool to 4x4x3 then a fixed linear map: easy to recompute in NumPy."""
    model = keras.Sequential(
        [
            keras.Input((112, 112, 3)),
            keras.layers.AveragePooling2D(28),
            keras.layers.Flatten(),
            keras.layers.Dense(dim, use_bias=False),
        ]
    )
    kernel = np.random.default_rng(seed).normal(size=(48, dim)).astype(np.float32)
    model.layers[-1].set_weights([kernel])
    return model, kernel


def _numpy_embed(pixels, kernel, flip=False):
    x = normalize_numpy(pixels).astype(np.float64)
    if flip:
        x = x[:, :, ::-1, :]
    pooled = x.reshape(len(x), 4, 28, 4, 28, 3).mean(axis=(2, 4)).reshape(len(x), 48)
    return pooled @ kernel


def _l2(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _numpy_reference(pixels, kernel, flip):
    raw = _numpy_embed(pixels, kernel)
    if flip:
        raw = raw + _numpy_embed(pixels, kernel, flip=True)
    return _l2(raw)


def _brute_force_kfold(scores, issame, folds):
    """Per held-out fold: try every candidate threshold on the other folds, keep the lowest best."""
    accuracies, thresholds = [], []
    for fold in np.unique(folds):
        train = folds != fold
        values = np.unique(scores[train])
        candidates = [np.nextafter(values[0], -np.inf)]
        candidates += [(values[i] + values[i + 1]) / 2 for i in range(len(values) - 1)]
        candidates += [values[-1]]
        best_accuracy, best_threshold = -1.0, None
        for threshold in candidates:
            accuracy = np.mean((scores[train] > threshold) == issame[train])
            if accuracy > best_accuracy:
                best_accuracy, best_threshold = accuracy, threshold
        test = ~train
        accuracies.append(np.mean((scores[test] > best_threshold) == issame[test]))
        thresholds.append(best_threshold)
    return np.array(accuracies), np.array(thresholds)


# ----------------------------------------------------------------------------- pairs files


def test_read_pairs_plain_format_with_root(tmp_path):
    root = tmp_path / "images"
    (root / "p1").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (root / "p1" / name).write_bytes(b"x")
    tokens = ["1", "0", "true", "False", "TRUE", "0", "1", "0", "1", "false"] * 2
    body = [f"p1/a.jpg p1/{'b' if i % 2 else 'c'}.jpg {t}" for i, t in enumerate(tokens)]
    lines = ["# comment", ""] + body
    pairs = read_pairs(_write(tmp_path / "pairs.txt", "\n".join(lines) + "\n"), root=root)
    assert len(pairs) == 20
    assert pairs.paths_a[0] == os.path.join(str(root), "p1/a.jpg")
    assert pairs.paths_b[1] == os.path.join(str(root), "p1/b.jpg")
    assert pairs.issame.dtype == bool
    np.testing.assert_array_equal(pairs.issame, [t.lower() in ("1", "true") for t in tokens])
    np.testing.assert_array_equal(pairs.folds, np.repeat(np.arange(10), 2))
    assert pairs.num_folds == 10


def test_read_pairs_without_root_keeps_relative_paths_and_skips_file_check(tmp_path):
    text = "".join(f"x/{i}.jpg y/{i}.jpg {i % 2}\n" for i in range(30))
    pairs = read_pairs(_write(tmp_path / "pairs.txt", text))
    assert pairs.paths_a[4] == "x/4.jpg" and pairs.paths_b[29] == "y/29.jpg"
    np.testing.assert_array_equal(pairs.folds, np.repeat(np.arange(10), 3))


@pytest.mark.parametrize(
    "lines, message",
    [
        (["a b 1", "a b 0", "a b"], r"line 3: expected 3 fields `a b issame`, got 2: 'a b'"),
        (["a b 1", "a b yes"], r"line 2: `issame` must be one of 0/1/true/false, got 'yes'"),
        (["a b 1 extra"], r"line 1: expected 3 fields `a b issame`, got 4"),
        (["a b 1"] * 7, r"7 pairs cannot be split into 10 equal contiguous folds"),
        (["# only a comment", ""], r"no pairs found"),
    ],
)
def test_read_pairs_malformed_plain(tmp_path, lines, message):
    path = _write(tmp_path / "bad_pairs.txt", "\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + message):
        read_pairs(path)


def test_read_pairs_missing_images_lists_count_and_names(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "ok.jpg").write_bytes(b"x")
    text = "".join(f"ok.jpg gone{i % 7}.jpg {i % 2}\n" for i in range(10))
    message = r"7 of 8 images are missing under .*: gone0\.jpg, gone1\.jpg.*, \.\.\."
    with pytest.raises(FileNotFoundError, match=message):
        read_pairs(_write(tmp_path / "pairs.txt", text), root=tmp_path / "img")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_pairs(tmp_path / "nope.txt")


LFW_SMALL = """2\t2
Ann\t1\t2
Bob\t3\t12
Ann\t1\tBob\t2
Cid\t4\tDee\t1
Eve\t1\t3
Fay\t2\t5
Eve\t2\tFay\t1
Gus\t1\tAnn\t2
"""


def test_read_pairs_lfw_view2_format(tmp_path):
    pairs = read_pairs(_write(tmp_path / "pairs.txt", LFW_SMALL))
    assert pairs.paths_a[:4] == [
        "Ann/Ann_0001.jpg", "Bob/Bob_0003.jpg", "Ann/Ann_0001.jpg", "Cid/Cid_0004.jpg"
    ]
    assert pairs.paths_b[:4] == [
        "Ann/Ann_0002.jpg", "Bob/Bob_0012.jpg", "Bob/Bob_0002.jpg", "Dee/Dee_0001.jpg"
    ]
    np.testing.assert_array_equal(pairs.issame, [1, 1, 0, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(pairs.folds, [0, 0, 0, 0, 1, 1, 1, 1])


@pytest.mark.parametrize(
    "replace, message",
    [
        (
            ("Bob\t3\t12", "Bob\t3\tBob\t12"),
            r"line 3: expected a matched pair `name n1 n2` \(3 fields, set 1\), got 4",
        ),
        (("Cid\t4\tDee\t1", "Cid\t4\tDee"), r"line 5: expected a mismatched pair .* got 3"),
        (("Eve\t1\t3", "Eve\t1\tx"), r"line 6: image numbers must be positive integers, got 'Eve 1 x'"),
        (
            ("2\t2\n", "2\t3\n"),
            r"announces 2 sets of 3 matched \+ 3 mismatched pairs = 12 pair lines, got 8",
        ),
    ],
)
def test_read_pairs_malformed_lfw(tmp_path, replace, message):
    path = _write(tmp_path / "lfw.txt", LFW_SMALL.replace(*replace))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + message):
        read_pairs(path)


def test_read_pairs_official_lfw_file():
    path = require_shared("data/lfw_pairs_official.txt")
    pairs = read_pairs(path)
    assert len(pairs) == 6000
    np.testing.assert_array_equal(np.bincount(pairs.folds), [600] * 10)
    np.testing.assert_array_equal(pairs.issame.reshape(10, 600).sum(axis=1), [300] * 10)
    assert pairs.issame[:300].all() and not pairs.issame[300:600].any()
    assert pairs.paths_a[0] == "Abel_Pacheco/Abel_Pacheco_0001.jpg"
    assert pairs.paths_b[0] == "Abel_Pacheco/Abel_Pacheco_0004.jpg"
    assert (pairs.paths_a[300], pairs.paths_b[300]) == (
        "Abdel_Madi_Shabneh/Abdel_Madi_Shabneh_0001.jpg", "Dean_Barker/Dean_Barker_0001.jpg"
    )


# ----------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kfold_accuracy_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    issame = rng.random(300) < 0.5
    # Rounding creates ties inside and across folds; fold ids are arbitrary and interleaved.
    scores = np.round(rng.normal(size=300) * 0.3 + 0.4 * issame, 2)
    folds = rng.permutation(np.repeat(np.arange(5, 15), 30))
    result = verification_accuracy(scores, issame, folds)
    expected_accuracies, expected_thresholds = _brute_force_kfold(scores, issame, folds)
    np.testing.assert_array_equal(result.fold_accuracies, expected_accuracies)
    np.testing.assert_allclose(result.fold_thresholds, expected_thresholds, rtol=0, atol=1e-12)
    assert result.accuracy == pytest.approx(expected_accuracies.mean())
    assert result.accuracy_std == pytest.approx(expected_accuracies.std())
    assert result.threshold == pytest.approx(expected_thresholds.mean())
    assert 0.5 < result.accuracy < 1.0


def test_kfold_accuracy_perfect_separation_and_bad_folds():
    issame = np.tile([True, False], 50)
    scores = np.where(issame, 0.8, 0.1) + np.linspace(0, 0.05, 100)
    result = verification_accuracy(scores, issame, np.repeat(np.arange(10), 10))
    assert result.accuracy == 1.0 and result.accuracy_std == 0.0
    assert 0.15 < result.threshold < 0.8
    with pytest.raises(ValueError, match="at least 2 folds"):
        verification_accuracy(scores, issame, np.zeros(100, int))
    with pytest.raises(ValueError, match=r"`folds` must be integers of shape \(100,\)"):
        verification_accuracy(scores, issame, np.zeros(99, int))
    with pytest.raises(ValueError, match="both genuine and impostor"):
        verification_accuracy(scores, np.ones(100, bool), np.repeat(np.arange(10), 10))


def test_tar_at_far_matches_brute_force():
    rng = np.random.default_rng(3)
    issame = rng.random(2500) < 0.4
    scores = np.round(rng.normal(size=2500) + 1.5 * issame, 3)
    genuine, impostors = scores[issame], scores[~issame]
    fars = (0.3, 0.1, 0.01, 1e-3, 1e-4)
    points = tar_at_far(scores, issame, fars)
    assert list(points) == list(fars)
    for far in fars[:4]:
        best_tar, best_threshold = -1.0, None
        for threshold in np.concatenate([[-np.inf], np.unique(scores)]):
            if np.mean(impostors > threshold) <= far:
                tar = np.mean(genuine > threshold)
                if tar > best_tar:
                    best_tar, best_threshold = tar, threshold
        point = points[far]
        assert point.reason is None
        assert point.tar == pytest.approx(best_tar, abs=1e-12)
        assert point.threshold == best_threshold
        assert point.achieved_far <= far
    # ~1500 impostors cannot measure FAR 1e-4: NaN with the reason.
    missing = points[1e-4]
    assert np.isnan(missing.tar) and np.isnan(missing.threshold)
    assert missing.reason == f"needs >= 10000 impostor pairs, have {len(impostors)}"
    with pytest.raises(ValueError, match=r"FAR targets must be in \(0, 1\), got 1.5"):
        tar_at_far(scores, issame, (1.5,))


def test_roc_curve_and_auc_match_brute_force():
    rng = np.random.default_rng(4)
    issame = rng.random(400) < 0.5
    scores = np.round(rng.normal(size=400) + issame, 1)
    fpr, tpr, thresholds = roc_curve(scores, issame)
    assert thresholds[0] == np.inf and np.all(np.diff(thresholds) < 0)
    for f, t, threshold in zip(fpr, tpr, thresholds):
        accepted = scores >= threshold
        assert f == pytest.approx(np.mean(accepted[~issame]))
        assert t == pytest.approx(np.mean(accepted[issame]))
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    genuine, impostors = scores[issame], scores[~issame]
    wins = genuine[:, None] > impostors[None]
    ties = genuine[:, None] == impostors[None]
    mann_whitney = np.mean(wins + 0.5 * ties)
    result = evaluate_scores(scores, issame, np.repeat(np.arange(10), 40))
    assert result.auc == pytest.approx(mann_whitney, abs=1e-12)


def test_verification_result_summary_and_json():
    rng = np.random.default_rng(5)
    issame = np.tile([True, False], 100)
    scores = rng.normal(size=200) + issame
    result = evaluate_scores(scores, issame, np.repeat(np.arange(10), 20), name="toy")
    text = result.summary()
    assert "toy: 200 pairs (100 genuine, 100 impostor), 10 folds" in text
    assert f"{100 * result.accuracy:.2f}%" in text
    assert "TAR@FAR=1e-03  n/a: needs >= 1000 impostor pairs, have 100" in text
    data = json.loads(json.dumps(result.to_dict()))
    assert data["num_pairs"] == 200 and len(data["fold_accuracies"]) == 10
    assert data["tar_at_far"]["0.001"]["tar"] is None
    assert data["tar_at_far"]["0.1"]["tar"] == pytest.approx(result.tar_at_far[0.1].tar)


def test_plot_roc_writes_png(tmp_path):
    rng = np.random.default_rng(6)
    issame = np.tile([True, False], 50)
    scores = rng.normal(size=100) + issame
    result = evaluate_scores(scores, issame, np.repeat(np.arange(10), 10), name="m")
    path = plot_roc({"m": result, "raw": (result.fpr, result.tpr)}, tmp_path / "out" / "roc.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(TypeError, match="must be a VerificationResult or \\(fpr, tpr\\), got int"):
        plot_roc({"bad": 3}, tmp_path / "x.png")


# ----------------------------------------------------------------------------- .bin files


def test_bin_round_trip_and_decode(tmp_path):
    faces = _random_faces(6, seed=7)
    images_bytes = [_png_bytes(face) for face in faces]
    path = tmp_path / "toy.bin"
    write_bin(path, images_bytes, [True, False, True])
    loaded, issame = load_bin(path)
    assert loaded == images_bytes
    assert issame.dtype == bool and issame.tolist() == [True, False, True]
    decoded = decode_bin_images(loaded, source=str(path))
    assert decoded.dtype == np.uint8 and decoded.shape == (6, 112, 112, 3)
    np.testing.assert_array_equal(decoded, faces)


@pytest.mark.parametrize("protocol", [2, 5])
def test_bin_insightface_style_pickles_load(tmp_path, protocol):
    # insightface files come from several writers: numpy bool arrays, old protocols, bytearrays.
    images_bytes = [_png_bytes(face) for face in _random_faces(4, seed=8)]
    path = tmp_path / "style.bin"
    with open(path, "wb") as f:
        pickle.dump(([images_bytes[0], bytearray(images_bytes[1])] + images_bytes[2:],
                     np.array([False, True])), f, protocol=protocol)
    loaded, issame = load_bin(path)
    assert loaded == images_bytes and issame.tolist() == [False, True]


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _EvalExploit:
    def __reduce__(self):
        return eval, ("__import__('os').getcwd()",)


def test_bin_malicious_pickle_is_rejected_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([b"x", _Exploit(marker)], [True])))
    message = re.escape(str(path)) + r": refusing to load forbidden global `(posix|os|nt)\.system`"
    with pytest.raises(pickle.UnpicklingError, match=message):
        load_bin(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps(_EvalExploit(), protocol=4))
    with pytest.raises(pickle.UnpicklingError, match=r"forbidden global `builtins\.eval`"):
        load_bin(path)
    # The bytes helper of old protocols is only allowed with the latin1 codec.
    path.write_bytes(b"c_codecs\nencode\n(Vabc\nVrot13\ntR.")
    with pytest.raises(pickle.UnpicklingError, match=r"only allowed with the latin1 codec.*'rot13'"):
        load_bin(path)


def test_bin_malformed_content_and_corrupt_image(tmp_path):
    path = tmp_path / "bad.bin"
    path.write_bytes(pickle.dumps(([b"a", b"b", b"c"], [True])))
    with pytest.raises(ValueError, match=r"1 pairs need 2 images, got 3"):
        load_bin(path)
    path.write_bytes(pickle.dumps([b"a"]))
    message = r"expected a pickled pair `\(bins, issame_list\)`, got list of length 1"
    with pytest.raises(ValueError, match=message):
        load_bin(path)
    path.write_bytes(pickle.dumps(([b"a", b"b"], ["yes"])))
    with pytest.raises(ValueError, match=r"`issame_list` must hold booleans"):
        load_bin(path)
    good = _png_bytes(_random_faces(1, seed=9)[0])
    with pytest.raises(ValueError, match=r"bad\.bin: image #1: cannot decode image"):
        decode_bin_images([good, b"not an image", good], source=str(path))


# ----------------------------------------------------------------------------- embedding


def test_embed_images_flip_fusion_matches_numpy():
    model, kernel = _tiny_model()
    faces = _random_faces(5, seed=10)
    for flip in (False, True):
        embeddings = embed_images(model, faces, batch_size=2, flip=flip)
        assert embeddings.dtype == np.float32 and embeddings.shape == (5, 8)
        np.testing.assert_allclose(embeddings, _numpy_reference(faces, kernel, flip), atol=2e-5)
    # The mirrored view really contributes: flip and no-flip embeddings differ.
    assert not np.allclose(embed_images(model, faces, flip=True), embed_images(model, faces))


def test_embed_images_files_are_deduplicated(tmp_path):
    _, kernel = _tiny_model(seed=1)
    faces = _random_faces(3, seed=11)
    paths = []
    for index, face in enumerate(faces):
        paths.append(str(tmp_path / f"{index}.png"))
        Image.fromarray(face).save(paths[-1])
    seen = []

    def embed_fn(batch):
        assert batch.dtype == np.float32 and batch.shape[1:] == (112, 112, 3)
        seen.append(len(batch))
        pooled = batch.reshape(-1, 4, 28, 4, 28, 3).mean(axis=(2, 4)).reshape(len(batch), 48)
        return pooled @ kernel

    order = [2, 0, 2, 1, 0, 2]
    embeddings = embed_images(embed_fn, [paths[i] for i in order], batch_size=2, flip=True)
    assert sum(seen) == 2 * 3  # three distinct files, each embedded plain and mirrored
    expected = _numpy_reference(faces[order], kernel, flip=True)
    np.testing.assert_allclose(embeddings, expected, atol=2e-5)


def test_embed_images_bad_files_are_errors_naming_them(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(_random_faces(1, seed=12)[0]).save(good)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"definitely not a jpeg")
    model, _ = _tiny_model()
    with pytest.raises(ValueError, match=re.escape(str(corrupt)) + ": cannot decode image"):
        embed_images(model, [str(good), str(good), str(corrupt)], batch_size=2)
    missing = re.escape(str(tmp_path / "missing.jpg")) + ": image file does not exist"
    with pytest.raises(FileNotFoundError, match=missing):
        embed_images(model, [str(good), str(tmp_path / "missing.jpg")])
    with pytest.raises(ValueError, match=r"must map a batch of 2 images to \(2, D\), got shape \(2,\)"):
        embed_images(lambda batch: np.zeros(len(batch)), _random_faces(2, seed=13))


def test_decode_images_resizes_and_converts_to_rgb(tmp_path):
    big, gray = tmp_path / "big.png", tmp_path / "gray.png"
    Image.new("RGB", (224, 160), (10, 200, 77)).save(big)
    Image.new("L", (112, 112), 33).save(gray)
    decoded = decode_images([str(big), str(gray)])
    assert decoded.shape == (2, 112, 112, 3) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded[0], np.broadcast_to([10, 200, 77], (112, 112, 3)))
    np.testing.assert_array_equal(decoded[1], np.full((112, 112, 3), 33))


def test_verify_pairs_on_bin_matches_numpy(tmp_path):
    model, kernel = _tiny_model(seed=2)
    faces = _random_faces(40, seed=15)
    faces[1::4] = faces[0::4] // 2 + 60  # make some pairs look alike
    issame = np.tile([True, False], 10)
    path = tmp_path / "pairs.bin"
    write_bin(path, [_png_bytes(face) for face in faces], issame)
    result = verify_pairs(model, path, flip=True, batch_size=16)
    embeddings = _numpy_reference(faces, kernel, flip=True)
    scores = np.sum(embeddings[0::2] * embeddings[1::2], axis=1)
    expected = evaluate_scores(scores, issame, np.repeat(np.arange(10), 2))
    assert result.name == "pairs.bin" and result.num_pairs == 20
    np.testing.assert_allclose(result.fold_accuracies, expected.fold_accuracies)
    assert result.auc == pytest.approx(expected.auc, abs=1e-6)


def test_verify_pairs_on_real_val_pairs(tmp_path):
    root = require_shared("data/celeba_dev/val")
    lines = (root.parent / "val_pairs.txt").read_text().splitlines()
    subset = lines[:5] + lines[150:155] + lines[300:305] + lines[450:455]  # 10 genuine, 10 impostor
    pairs_path = _write(tmp_path / "few_pairs.txt", "\n".join(subset) + "\n")
    model, kernel = _tiny_model(seed=3)
    result = verify_pairs(model, pairs_path, root=root, batch_size=8)
    pairs = read_pairs(pairs_path, root=root)
    assert result.num_pairs == 20 and result.num_genuine == int(pairs.issame.sum())

    def load(paths):
        return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])

    # JPEGs decode with the accurate IDCT, bit-identical to PIL (TF's default differs by up to 16).
    np.testing.assert_array_equal(decode_images(pairs.paths_a[:4]), load(pairs.paths_a[:4]))
    embeddings_a = _numpy_reference(load(pairs.paths_a), kernel, flip=False)
    embeddings_b = _numpy_reference(load(pairs.paths_b), kernel, flip=False)
    scores = np.sum(embeddings_a * embeddings_b, axis=1)
    expected = evaluate_scores(scores, pairs.issame, pairs.folds)
    assert result.auc == pytest.approx(expected.auc, abs=1e-6)
    np.testing.assert_allclose(result.fold_accuracies, expected.fold_accuracies)


# ----------------------------------------------------------------------------- CLI


def _cli_args(*argv):
    parser = argparse.ArgumentParser()
    eval_command.add_arguments(parser)
    return parser.parse_args(["--model", "unused.keras", *argv])


def test_eval_command_writes_summary_json_and_png(tmp_path, capsys):
    model, _ = _tiny_model(seed=4)
    faces = _random_faces(40, seed=16)
    path = tmp_path / "cli.bin"
    write_bin(path, [_png_bytes(face) for face in faces], np.tile([True, False], 10))
    args = _cli_args(
        "--pairs", str(path), "--flip", "--batch-size", "8", "--cache-dir", str(tmp_path / "cache"),
        "--json", str(tmp_path / "out" / "m.json"), "--roc-png", str(tmp_path / "roc.png"),
    )
    assert eval_command.run_with_model(model, args) == 0
    out = capsys.readouterr().out
    assert "cli (flip): 20 pairs (10 genuine, 10 impostor), 10 folds" in out
    assert "TAR@FAR=1e-06  n/a: needs >= 1000000 impostor pairs, have 10" in out
    data = json.loads((tmp_path / "out" / "m.json").read_text())
    (entry,) = data["verification"]
    assert data["flip"] is True and entry["num_pairs"] == 20 and entry["source"] == str(path)
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"
    # The second run re-scores cached embeddings.
    assert eval_command.run_with_model(model, args) == 0
    assert "(embeddings read from " in capsys.readouterr().out

    args = _cli_args("--pairs", str(tmp_path / "absent.txt"))
    assert eval_command.run_with_model(model, args) == 1
    assert "absent.txt does not exist" in capsys.readouterr().err


def test_eval_command_run_loads_a_keras_file(tmp_path, capsys):
    model, _ = _tiny_model(seed=5)
    model_path = tmp_path / "tiny.keras"
    model.save(model_path)
    path = tmp_path / "run.bin"
    write_bin(path, [_png_bytes(face) for face in _random_faces(40, seed=17)], np.tile([1, 0], 10))
    parser = argparse.ArgumentParser()
    eval_command.add_arguments(parser)
    argv = ["--model", str(model_path), "--pairs", str(path), "--no-cache"]
    assert eval_command.run(parser.parse_args(argv)) == 0
    assert "run: 20 pairs" in capsys.readouterr().out
    missing = parser.parse_args(["--model", str(tmp_path / "none.keras"), "--pairs", str(path)])
    assert eval_command.run(missing) == 1
    assert "cannot load model" in capsys.readouterr().err
