import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from kerasface.evaluation.cmc_plot import plot_cmc
from kerasface.evaluation.identification import (
    IdentificationResult,
    closed_set_identification,
    identify_folder,
    megaface_identification,
    split_gallery_probe,
    true_match_ranks,
)

# ----------------------------------------------------------------------------- references


def _l2(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _argsort_rank(true_score, other_scores):
    """Rank of the true match by sorting the whole gallery; ties are sorted ahead of it."""
    gallery = np.concatenate([other_scores, [true_score]])
    order = np.argsort(-gallery, kind="stable")
    return int(np.flatnonzero(order == len(gallery) - 1)[0]) + 1


def _reference_megaface(probes, labels, distractors, max_rank):
    probes = _l2(probes)
    full = probes @ probes.T
    distractor_scores = (
        probes @ _l2(distractors).T if len(distractors) else np.zeros((len(probes), 0))
    )
    searches, ranks = [], []
    for identity in np.unique(labels):
        members = np.flatnonzero(labels == identity)
        if len(members) < 2:
            continue
        for p in members:
            for g in members:
                if g != p:
                    searches.append((p, g))
                    ranks.append(_argsort_rank(full[p, g], distractor_scores[p]))
    return np.array(searches), np.minimum(np.array(ranks), max_rank + 1)


def _reference_closed_set(gallery, gallery_labels, probes, probe_labels, distractors, max_rank):
    scores = _l2(probes) @ _l2(gallery).T
    distractor_scores = (
        _l2(probes) @ _l2(distractors).T if distractors is not None else np.zeros((len(probes), 0))
    )
    ranks, matches = [], []
    for p in range(len(probes)):
        own = gallery_labels == probe_labels[p]
        best = np.flatnonzero(own)[np.argmax(scores[p, own])]
        others = np.concatenate([scores[p, ~own], distractor_scores[p]])
        ranks.append(_argsort_rank(scores[p, best], others))
        matches.append(best)
    return np.minimum(np.array(ranks), max_rank + 1), np.array(matches)


def _clustered(rng, num_identities, per_identity, dim, noise):
    centers = rng.normal(size=(num_identities, dim))
    labels = np.repeat(np.arange(num_identities), per_identity)
    return centers[labels] + noise * rng.normal(size=(len(labels), dim)), labels


# ----------------------------------------------------------------------------- core ranks


@pytest.mark.parametrize("chunk_size", [1, 7, 64, None])
def test_true_match_ranks_match_argsort_reference(chunk_size):
    rng = np.random.default_rng(0)
    probes = rng.normal(size=(23, 16))
    distractors = rng.normal(size=(301, 16)).astype(np.float32)  # 301 = no chunk size divides
    # True scores spread over the distractor score range, two searches per probe.
    probe_index = np.repeat(np.arange(23), 2)
    true_scores = rng.uniform(-0.3, 0.8, size=46)
    ranks = true_match_ranks(probes, true_scores, distractors, max_rank=6, chunk_size=chunk_size,
                             probe_index=probe_index)
    distractor_scores = _l2(probes) @ _l2(distractors).T
    expected = [
        min(_argsort_rank(s, distractor_scores[p]), 7) for p, s in zip(probe_index, true_scores)
    ]
    assert ranks.dtype == np.int64 and ranks.shape == (46,)
    np.testing.assert_array_equal(ranks, expected)
    assert ranks.min() == 1 and ranks.max() == 7  # both ends of the range occur


def test_true_match_ranks_ties_count_against_the_true_match():
    # Unit vectors with dyadic entries: every dot product is exact in float32, so ties are real.
    probe = np.array([[1.0, 0, 0, 0]])
    distractors = np.array([
        [0.5, -0.5, 0.5, -0.5],  # 0.5: ties the true match
        [0.5, 0.5, -0.5, -0.5],  # 0.5: ties
        [0.0, 1.0, 0.0, 0.0],  # 0
        [-1.0, 0.0, 0.0, 0.0],  # -1
        [1.0, 0.0, 0.0, 0.0],  # 1: beats it
    ])
    assert true_match_ranks(probe, [0.5], distractors, max_rank=10).tolist() == [4]
    assert true_match_ranks(probe, [0.75], distractors, max_rank=10).tolist() == [2]
    assert true_match_ranks(probe, [1.0], distractors, max_rank=10).tolist() == [2]
    assert true_match_ranks(probe, [-2.0], distractors, max_rank=10).tolist() == [6]
    assert true_match_ranks(probe, [-2.0], distractors, max_rank=3).tolist() == [4]
    assert true_match_ranks(probe, [0.5], None).tolist() == [1]


def test_true_match_ranks_bad_input():
    probes = np.ones((3, 4))
    with pytest.raises(ValueError, match=r"distractors` are 5-d but the probes are 4-d"):
        true_match_ranks(probes, [0.1, 0.2, 0.3], np.ones((10, 5)))
    with pytest.raises(ValueError, match=r"`true_scores` has 2 entries for 3 probes"):
        true_match_ranks(probes, [0.1, 0.2], np.ones((10, 4)))
    with pytest.raises(ValueError, match=r"`probe_index` values must be in \[0, 3\), got \[0, 3\]"):
        true_match_ranks(probes, [0.1, 0.2], np.ones((10, 4)), probe_index=[0, 3])
    with pytest.raises(ValueError, match=r"`max_rank` must be an integer >= 1, got 0"):
        true_match_ranks(probes, [0.1, 0.2, 0.3], np.ones((10, 4)), max_rank=0)
    distractors = np.ones((10, 4))
    distractors[7] = 0
    with pytest.raises(ValueError, match=r"`distractors` row 7 is zero or not finite"):
        true_match_ranks(probes, [0.1, 0.2, 0.3], distractors, chunk_size=4)
    with pytest.raises(ValueError, match=r"`probe_embeddings` has 1 rows that are zero"):
        true_match_ranks(np.array([[1.0, 0], [0, 0]]), [0.1, 0.2], np.ones((3, 2)))


# ----------------------------------------------------------------------------- MegaFace


@pytest.mark.parametrize("chunk_size", [5, 128, None])
def test_megaface_matches_reference(chunk_size):
    rng = np.random.default_rng(1)
    probes, labels = _clustered(rng, 7, 4, 12, noise=0.5)
    # A singleton identity and a larger one: uneven identity sizes.
    probes = np.concatenate([probes, rng.normal(size=(6, 12))])
    labels = np.concatenate([labels, [100, 101, 101, 101, 101, 101]])
    distractors = rng.normal(size=(257, 12))
    result = megaface_identification(probes, labels, distractors, max_rank=5,
                                     chunk_size=chunk_size, name="synthetic")
    searches, ranks = _reference_megaface(probes, labels, distractors, 5)
    np.testing.assert_array_equal(result.searches, searches)
    np.testing.assert_array_equal(result.ranks, ranks)
    expected_cmc = [np.mean(ranks <= k) for k in range(1, 6)]
    np.testing.assert_allclose(result.cmc, expected_cmc)
    assert result.num_probes == 7 * 4 * 3 + 5 * 4 == len(ranks)
    assert result.num_identities == 8
    assert result.num_skipped_images == 1
    assert result.num_distractors == 257 and result.num_gallery == 258
    assert result.rank1 == expected_cmc[0] and result.rank5 == expected_cmc[4]
    assert 0.1 < result.rank1 < 0.95  # the data makes some searches fail


def test_megaface_with_memmap_distractors_matches_in_memory(tmp_path):
    rng = np.random.default_rng(2)
    probes, labels = _clustered(rng, 10, 3, 32, noise=1.5)
    distractors = _l2(rng.normal(size=(1001, 32))).astype(np.float32)
    path = tmp_path / "distractors.npy"
    np.save(path, distractors)
    mapped = np.load(path, mmap_mode="r")
    from_file = megaface_identification(probes, labels, mapped, max_rank=10, chunk_size=100)
    in_memory = megaface_identification(probes, labels, distractors, max_rank=10, chunk_size=333)
    np.testing.assert_array_equal(from_file.ranks, in_memory.ranks)
    _, expected = _reference_megaface(probes, labels, distractors, 10)
    np.testing.assert_array_equal(from_file.ranks, expected)
    # Reading through the memmap (and dropping its pages) left the file as it was.
    np.testing.assert_array_equal(np.load(path), distractors)


def test_megaface_without_distractors_and_errors():
    rng = np.random.default_rng(3)
    probes, labels = _clustered(rng, 3, 3, 8, noise=0.1)
    result = megaface_identification(probes, labels, None, max_rank=3)
    assert result.ranks.tolist() == [1] * 18 and result.num_gallery == 1
    with pytest.raises(ValueError, match=r"needs an identity with >= 2 probe images, got 4 images"):
        megaface_identification(rng.normal(size=(4, 8)), [0, 1, 2, 3], None)
    with pytest.raises(ValueError, match=r"`probe_labels` must have shape \(9,\)"):
        megaface_identification(probes, labels[:8], None)
    with pytest.raises(ValueError, match=r"`distractors` are 7-d but the probes are 8-d"):
        megaface_identification(probes, labels, np.ones((5, 7)))


# ----------------------------------------------------------------------------- closed set


@pytest.mark.parametrize("with_distractors", [False, True])
def test_closed_set_matches_reference(with_distractors):
    rng = np.random.default_rng(4)
    embeddings, labels = _clustered(rng, 12, 5, 10, noise=1.4)
    names = np.array([f"person_{label:02d}" for label in labels])  # string labels
    gallery, probe = split_gallery_probe(names, gallery_per_identity=2)
    distractors = rng.normal(size=(95, 10)) if with_distractors else None
    result = closed_set_identification(
        embeddings[gallery], names[gallery], embeddings[probe], names[probe], distractors,
        max_rank=7, chunk_size=9,
    )
    ranks, matches = _reference_closed_set(
        embeddings[gallery], names[gallery], embeddings[probe], names[probe], distractors, 7
    )
    np.testing.assert_array_equal(result.ranks, ranks)
    np.testing.assert_array_equal(result.searches[:, 1], matches)
    assert result.num_probes == 36 and result.num_identities == 12
    assert result.num_gallery == 24 + (95 if with_distractors else 0)
    assert 0.1 < result.rank1 < 1.0


def test_closed_set_unknown_probe_identity_is_an_error():
    rng = np.random.default_rng(5)
    with pytest.raises(ValueError, match=r"2 probes of 1 identities are not enrolled: carol"):
        closed_set_identification(
            rng.normal(size=(2, 4)), ["alice", "bob"], rng.normal(size=(3, 4)),
            ["alice", "carol", "carol"],
        )
    with pytest.raises(ValueError, match=r"are 4-d but `probe_embeddings` are 3-d"):
        closed_set_identification(rng.normal(size=(2, 4)), [0, 1], rng.normal(size=(2, 3)), [0, 1])


def test_split_gallery_probe():
    labels = np.array([3, 1, 3, 1, 1, 7, 3])
    gallery, probes = split_gallery_probe(labels)
    assert gallery.tolist() == [0, 1, 5] and probes.tolist() == [2, 3, 4, 6]
    gallery, probes = split_gallery_probe(labels, gallery_per_identity=2)
    assert gallery.tolist() == [0, 1, 2, 3, 5] and probes.tolist() == [4, 6]
    # A seed picks the gallery images at random, reproducibly, still per identity.
    picks = {tuple(split_gallery_probe(labels, 1, seed=seed)[0]) for seed in range(20)}
    assert len(picks) > 1
    for picked in picks:
        assert sorted(labels[list(picked)]) == [1, 3, 7]
    assert split_gallery_probe(labels, 1, seed=4)[0].tolist() == split_gallery_probe(
        labels, 1, seed=4)[0].tolist()
    with pytest.raises(ValueError, match="no probe images left"):
        split_gallery_probe([0, 1, 2])
    with pytest.raises(ValueError, match=r"`gallery_per_identity` must be an integer >= 1, got 0"):
        split_gallery_probe(labels, 0)


# ----------------------------------------------------------------------------- results, plots


def test_result_summary_json_and_rank5_beyond_max_rank():
    result = IdentificationResult(
        name="toy", protocol="megaface", cmc=np.array([0.5, 0.75, 1.0]), num_probes=4,
        num_distractors=10, num_gallery=11, num_identities=2, num_skipped_images=1,
    )
    assert result.rank1 == 0.5 and math.isnan(result.rank5) and result.max_rank == 3
    data = json.loads(json.dumps(result.to_dict()))
    assert data["rank5"] is None and data["cmc"] == [0.5, 0.75, 1.0]
    text = result.summary()
    assert "toy: megaface identification, 4 searches of 2 identities" in text
    assert "rank-1   50.00%" in text and "rank-3   100.00%" in text
    assert "1 probe images gave no search" in text


def test_plot_cmc_writes_png(tmp_path):
    rng = np.random.default_rng(6)
    probes, labels = _clustered(rng, 5, 3, 8, noise=1.0)
    result = megaface_identification(probes, labels, rng.normal(size=(50, 8)), max_rank=10)
    path = plot_cmc({"model a": result, "raw": np.linspace(0.2, 1.0, 40)},
                    tmp_path / "plots" / "cmc.png")
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with Image.open(path) as image:
        assert image.size[0] > 300
    assert os.path.getsize(plot_cmc(result, tmp_path / "one.png")) > 5000
    with pytest.raises(ValueError, match=r"must hold rates in \[0, 1\]"):
        plot_cmc({"bad": [0.5, 1.5]}, tmp_path / "bad.png")
    with pytest.raises(TypeError, match="must be an IdentificationResult or a non-empty dict"):
        plot_cmc([result], tmp_path / "bad.png")


# ----------------------------------------------------------------------------- folders


def _pool_embed(batch):
    """A fixed embed_fn: 4x4 average pool, then a fixed projection to 6-d."""
    batch = np.asarray(batch, np.float64)
    pooled = batch.reshape(len(batch), 4, 28, 4, 28, 3).mean(axis=(2, 4)).reshape(len(batch), 48)
    return (pooled @ np.random.default_rng(0).normal(size=(48, 6))).astype(np.float32)


def _write_faces(root, names, rng):
    paths = []
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, (1, 1, 3))
        noise = rng.integers(-40, 40, (112, 112, 3))
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_identify_folder_with_distractor_folder_and_npy(tmp_path):
    from kerasface.evaluation.embed_images import embed_images

    rng = np.random.default_rng(7)
    probe_names = [f"id{i}/{j}.png" for i in range(3) for j in range(3)]
    probe_paths = _write_faces(tmp_path / "probes", probe_names, rng)
    distractor_paths = _write_faces(
        tmp_path / "distractors", ["a.png", "deep/er/b.png", "c/d.png", "c/e.png"], rng
    )
    (tmp_path / "distractors" / "notes.txt").write_text("not an image")
    labels = np.repeat(np.arange(3), 3)
    probes = embed_images(_pool_embed, probe_paths)
    distractors = embed_images(_pool_embed, sorted(distractor_paths))

    result = identify_folder(_pool_embed, tmp_path / "probes", tmp_path / "distractors",
                             max_rank=5)
    expected = megaface_identification(probes, labels, distractors, max_rank=5)
    np.testing.assert_array_equal(result.ranks, expected.ranks)
    assert result.num_distractors == 4 and result.name == "probes + 4 distractors"

    np.save(tmp_path / "distractors.npy", distractors)
    from_npy = identify_folder(_pool_embed, tmp_path / "probes", tmp_path / "distractors.npy",
                               protocol="closed-set", max_rank=5)
    gallery, probe = split_gallery_probe(labels)
    expected = closed_set_identification(probes[gallery], labels[gallery], probes[probe],
                                         labels[probe], distractors, max_rank=5)
    np.testing.assert_array_equal(from_npy.ranks, expected.ranks)
    assert from_npy.protocol == "closed-set" and from_npy.num_gallery == 3 + 4

    bad = tmp_path / "wrong_dims.npy"
    np.save(bad, np.ones((5, 7), np.float32))
    with pytest.raises(ValueError, match=f"{bad}: distractor embeddings are 7-d but the model "
                                         "gives 6-d"):
        identify_folder(_pool_embed, tmp_path / "probes", bad)
    with pytest.raises(FileNotFoundError, match="missing.npy does not exist"):
        identify_folder(_pool_embed, tmp_path / "probes", tmp_path / "missing.npy")
    with pytest.raises(ValueError, match=r"`protocol` must be one of"):
        identify_folder(_pool_embed, tmp_path / "probes", protocol="open-set")


def test_true_match_ranks_many_distractors_against_full_matrix():
    # Many chunks after the first: most are merged through the sparse path (few candidates).
    rng = np.random.default_rng(8)
    probes = rng.normal(size=(40, 24))
    distractors = rng.normal(size=(20011, 24)).astype(np.float32)
    distractor_scores = _l2(probes) @ _l2(distractors).T
    # True scores placed at chosen distractor order statistics, so ranks cover 1..21.
    ordered = -np.sort(-distractor_scores, axis=1)
    positions = rng.integers(0, 30, size=40)
    true_scores = ordered[np.arange(40), positions] + 1e-3 * rng.choice([-1, 1], size=40)
    ranks = true_match_ranks(probes, true_scores, distractors, max_rank=20, chunk_size=997)
    expected = 1 + np.sum(distractor_scores >= true_scores[:, None], axis=1)
    np.testing.assert_array_equal(ranks, np.minimum(expected, 21))
    assert len(set(ranks.tolist())) > 10
