"""VerificationSet (specs, distinct images, fingerprints) and evaluate_set (scores, cache)."""

import os
import time

import numpy as np
import pytest
from PIL import Image

from kerasface.evaluation import evaluate_scores, write_bin, write_pairs
from kerasface.evaluation.set_evaluation import evaluate_set, keras_model_id
from kerasface.evaluation.verification_set import VerificationSet, parse_set_spec

NUM_IDS, PER_ID = 4, 3


def _png_bytes(pixels):
    import io

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def face_set(tmp_path):
    """12 PNG faces of 4 identities under root/, a 20-pair list with repeated images."""
    rng = np.random.default_rng(0)
    root = tmp_path / "faces"
    pixels = {}
    for identity in range(NUM_IDS):
        (root / f"id{identity}").mkdir(parents=True)
        base = rng.integers(0, 256, (112, 112, 3))
        for k in range(PER_ID):
            image = np.clip(base + rng.integers(-40, 40, (112, 112, 3)), 0, 255).astype(np.uint8)
            relative = f"id{identity}/{k}.png"
            Image.fromarray(image).save(root / relative)
            pixels[relative] = image
    names = sorted(pixels)
    paths_a, paths_b, issame = [], [], []
    for index in range(20):
        a = names[index % len(names)]
        same = index % 2 == 0
        identity = int(a[2])
        if same:
            b = f"id{identity}/{(int(a[4]) + 1) % PER_ID}.png"
        else:
            b = f"id{(identity + 1) % NUM_IDS}/{index % PER_ID}.png"
        paths_a.append(a)
        paths_b.append(b)
        issame.append(same)
    pairs_path = tmp_path / "pairs.txt"
    write_pairs(pairs_path, paths_a, paths_b, issame)
    return pairs_path, root, pixels, (paths_a, paths_b, np.array(issame))


class CountingEmbedder:
    """A fixed random projection of the pixels; counts the images it embeds."""

    def __init__(self, dim=16):
        self.projection = np.random.default_rng(1).normal(size=(112 * 112 * 3, dim)).astype(np.float32)
        self.images = 0

    def __call__(self, batch):
        self.images += len(batch)
        return np.asarray(batch).reshape(len(batch), -1) @ self.projection

    def reference(self, pixels):
        features = ((pixels.astype(np.float32) - 127.5) / 128).reshape(-1) @ self.projection
        return features / np.linalg.norm(features)


def test_load_text_set_keeps_each_image_once(face_set):
    pairs_path, root, _, (paths_a, paths_b, issame) = face_set
    vset = VerificationSet.load(f"{pairs_path}:{root}")
    assert vset.name == "pairs" and len(vset) == 20 and vset.num_folds == 10
    assert len(vset.images) == len(set(paths_a + paths_b)) < 40
    resolved = [(vset.images[a], vset.images[b]) for a, b in vset.pairs]
    assert resolved == [(str(root / a), str(root / b)) for a, b in zip(paths_a, paths_b)]
    np.testing.assert_array_equal(vset.issame, issame)
    np.testing.assert_array_equal(vset.folds, np.repeat(np.arange(10), 2))
    assert not vset.from_bin and vset.image_name(0) == vset.images[0]
    assert vset.image_bytes(0) == open(vset.images[0], "rb").read()
    decoded = vset.decoded()
    assert decoded.dtype == np.uint8 and decoded.shape == (len(vset.images), 112, 112, 3)
    assert vset.decoded() is decoded


def test_set_specs_names_roots_and_errors(face_set, tmp_path):
    pairs_path, root, _, _ = face_set
    assert parse_set_spec(f"{pairs_path}:{root}") == (str(pairs_path), str(root), None)
    assert parse_set_spec(f"mine={pairs_path}") == (str(pairs_path), None, "mine")
    assert VerificationSet.load(f"mine={pairs_path}:{root}").name == "mine"
    assert VerificationSet.load(pairs_path, root=root).name == "pairs"
    with pytest.raises(FileNotFoundError, match="nope.txt does not exist"):
        VerificationSet.load(f"{tmp_path}/nope.txt:{root}")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        VerificationSet.load(f"{pairs_path}:{tmp_path}/missing_root")
    with pytest.raises(FileNotFoundError, match="12 of 12 images are missing"):
        VerificationSet.load(pairs_path)  # images are not next to the pairs file


def test_bin_set_and_malformed_bin(face_set, tmp_path):
    _, _, pixels, _ = face_set
    images = [_png_bytes(image) for image in pixels.values()]
    bin_path = tmp_path / "tiny.bin"
    write_bin(bin_path, images[:10] * 2, [True, False] * 5)
    vset = VerificationSet.load(bin_path)
    assert vset.from_bin and len(vset) == 10 and len(vset.images) == 20
    np.testing.assert_array_equal(vset.pairs, np.arange(20).reshape(10, 2))
    assert vset.image_name(3) == "tiny.bin#3" and vset.image_bytes(3) == images[3]
    with pytest.raises(ValueError, match="takes no image root"):
        VerificationSet.load(f"{bin_path}:{tmp_path}")
    bad = tmp_path / "odd.bin"
    write_bin(bad, images[:6], [True, False, True])
    with pytest.raises(ValueError, match="cannot be split into 10"):
        VerificationSet.load(bad)


def test_evaluate_set_matches_numpy_and_ranks_worst_pairs(face_set):
    pairs_path, root, pixels, (paths_a, paths_b, issame) = face_set
    embedder = CountingEmbedder()
    evaluation = evaluate_set(embedder, f"{pairs_path}:{root}")
    assert embedder.images == len(evaluation.set.images)  # each distinct image embedded once
    expected = np.array([
        embedder.reference(pixels[a]) @ embedder.reference(pixels[b])
        for a, b in zip(paths_a, paths_b)
    ])
    np.testing.assert_allclose(evaluation.scores, expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"expected one embedding per image, \(\d+, D\), got shape \(3, 16\)"):
        evaluation.set.pair_scores(evaluation.embeddings[:3])
    reference = evaluate_scores(expected, issame, np.repeat(np.arange(10), 2))
    assert evaluation.result.accuracy == pytest.approx(reference.accuracy)
    assert evaluation.result.auc == pytest.approx(reference.auc)
    impostors = np.flatnonzero(~issame)
    genuine = np.flatnonzero(issame)
    assert evaluation.false_accepts(3) == impostors[np.argsort(-evaluation.scores[impostors], kind="stable")[:3]].tolist()
    assert evaluation.false_rejects(2) == genuine[np.argsort(evaluation.scores[genuine], kind="stable")[:2]].tolist()


def test_embedding_cache_is_reused_and_invalidated(face_set, tmp_path):
    pairs_path, root, _, _ = face_set
    cache = tmp_path / "cache"
    embedder = CountingEmbedder()
    with pytest.raises(ValueError, match="needs `model_id`"):
        evaluate_set(embedder, f"{pairs_path}:{root}", cache_dir=cache)
    first = evaluate_set(embedder, f"{pairs_path}:{root}", cache_dir=cache, model_id="proj")
    calls = embedder.images
    again = evaluate_set(embedder, f"{pairs_path}:{root}", cache_dir=cache, model_id="proj")
    assert not first.from_cache and again.from_cache and embedder.images == calls
    assert again.cache_path == first.cache_path and os.path.isfile(first.cache_path)
    np.testing.assert_array_equal(again.scores, first.scores)
    # Another model, the flip test, or a changed image each get their own embeddings.
    assert not evaluate_set(embedder, f"{pairs_path}:{root}", cache_dir=cache, model_id="other").from_cache
    assert not evaluate_set(embedder, f"{pairs_path}:{root}", cache_dir=cache, model_id="proj",
                            flip=True).from_cache
    image = root / "id0" / "0.png"
    os.utime(image, ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = evaluate_set(embedder, f"{pairs_path}:{root}", cache_dir=cache, model_id="proj")
    assert not changed.from_cache and changed.cache_path != first.cache_path
    # A corrupt cache is reported and recomputed, never trusted.
    with open(changed.cache_path, "wb") as f:
        f.write(b"not numpy")
    with pytest.warns(UserWarning, match="unreadable embedding cache"):
        repaired = evaluate_set(embedder, f"{pairs_path}:{root}", cache_dir=cache, model_id="proj")
    assert not repaired.from_cache
    np.testing.assert_allclose(repaired.scores, changed.scores, atol=1e-6)


def test_keras_model_id_follows_weights(capsys):
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    before = keras_model_id(model)
    assert keras_model_id(model) == before
    model.layers[0].kernel.assign(model.layers[0].kernel + 1.0)
    assert keras_model_id(model) != before
