"""Set (video) verification: Union-Find, frame clustering, set-pairs files, noisy set builder."""

import json
import os
from collections import deque

import numpy as np
import pytest

from kerasface.evaluation.frame_clustering import aggregate_set, cluster_frames, largest_cluster
from kerasface.evaluation.set_pairs import read_set_pairs
from kerasface.evaluation.set_verification import (
    SetVerificationResult,
    evaluate_set_embeddings,
    evaluate_set_pairs,
)
from kerasface.evaluation.union_find import UnionFind
from kerasface.evaluation.verification import evaluate_scores
from kerasface.evaluation.video_set_builder import (
    NOISE_KINDS,
    build_video_sets,
    frame_kinds,
    load_manifest,
    removal_stats,
    write_set_pairs,
)


# ---------------------------------------------------------------- references (independent of the code)

def bfs_labels(num_nodes, edges):
    """Connected-component labels by BFS, numbered in order of each component's smallest node."""
    neighbours = [[] for _ in range(num_nodes)]
    for a, b in edges:
        neighbours[a].append(b)
        neighbours[b].append(a)
    labels = -np.ones(num_nodes, np.int64)
    next_label = 0
    for start in range(num_nodes):
        if labels[start] >= 0:
            continue
        labels[start] = next_label
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for other in neighbours[node]:
                if labels[other] < 0:
                    labels[other] = next_label
                    queue.append(other)
        next_label += 1
    return labels


def reference_kept(frames, threshold):
    """The documented rule: BFS components of cos > threshold; the largest, then the one most
    similar to the frames outside it (within 1e-9), then the first."""
    unit = frames / np.linalg.norm(frames, axis=1, keepdims=True)
    if threshold is None:
        return np.arange(len(frames))
    similarity = unit @ unit.T
    edges = [(i, j) for i in range(len(frames)) for j in range(i + 1, len(frames))
             if similarity[i, j] > threshold]
    labels = bfs_labels(len(frames), edges)
    clusters = [np.flatnonzero(labels == label) for label in range(labels.max() + 1)]
    biggest = max(len(members) for members in clusters)
    clusters = [members for members in clusters if len(members) == biggest]
    if len(clusters) == 1:
        return clusters[0]
    centrality = [similarity[members][:, np.setdiff1d(np.arange(len(frames)), members)].mean()
                  for members in clusters]
    for members, value in zip(clusters, centrality):
        if value >= max(centrality) - 1e-9:
            return members


def reference_set_embedding(frames, kept):
    unit = frames / np.linalg.norm(frames, axis=1, keepdims=True)
    mean = unit[kept].mean(axis=0)
    return mean / np.linalg.norm(mean)


def tight_group(rng, direction, size, spread=0.05):
    return direction + spread * rng.normal(size=(size, len(direction)))


# ---------------------------------------------------------------- UnionFind

@pytest.mark.parametrize("seed", range(10))
def test_union_find_matches_bfs_on_random_graphs(seed):
    rng = np.random.default_rng(seed)
    num_nodes = int(rng.integers(1, 60))
    # Sparse graphs, and dense ones with more edges than one union_pairs block (1024).
    num_edges = int(rng.integers(0, 2 * num_nodes)) if seed < 7 else int(rng.integers(1100, 4000))
    edges = rng.integers(0, num_nodes, size=(num_edges, 2))
    forest = UnionFind(num_nodes)
    merges = forest.union_pairs(edges)
    expected = bfs_labels(num_nodes, edges.tolist())
    np.testing.assert_array_equal(forest.component_labels(), expected)
    assert forest.num_components == expected.max() + 1
    assert merges == num_nodes - forest.num_components
    groups = forest.groups()
    assert [g.tolist() for g in groups] == [
        np.flatnonzero(expected == label).tolist() for label in range(expected.max() + 1)
    ]
    for node in range(num_nodes):
        assert forest.size(node) == np.count_nonzero(expected == expected[node])
    a, b = rng.integers(0, num_nodes, size=2)
    assert forest.connected(a, b) == (expected[a] == expected[b])


def test_union_find_edges_after_the_first_block_count():
    # 1500 copies of one edge fill the first block; the chain that joins 10..99 comes after.
    rng = np.random.default_rng(9)
    chain = np.stack([np.arange(10, 99), np.arange(11, 100)], axis=1)[rng.permutation(89)]
    edges = np.concatenate([np.tile([[0, 1]], (1500, 1)), chain, [[5, 5], [3, 4]]])
    forest = UnionFind(100)
    assert forest.union_pairs(edges) == 1 + 89 + 1 and forest.num_components == 9
    np.testing.assert_array_equal(forest.component_labels(), bfs_labels(100, edges.tolist()))
    assert forest.size(50) == 90 and forest.connected(3, 4) and not forest.connected(1, 2)


def test_union_find_union_semantics_and_deep_chain():
    forest = UnionFind(5)
    assert forest.num_components == 5 and len(forest) == 5
    assert forest.union(0, 1) is True
    assert forest.union(1, 0) is False
    assert forest.union(3, 4) is True
    assert forest.num_components == 3
    assert forest.size(4) == 2 and forest.size(2) == 1
    assert forest.component_labels().tolist() == [0, 0, 1, 2, 2]
    assert forest.union(4, 1) is True
    assert forest.size(0) == 4 and forest.connected(0, 3)

    # A long chain must neither recurse nor stay deep after a find.
    chain = UnionFind(20000)
    for i in range(19999):
        chain._parent[i] = i + 1  # worst-case tree, built by hand (no union by size)
    assert chain.find(0) == 19999
    assert chain._parent[0] == 19999 and chain._parent[5000] == 19999

    assert UnionFind(0).groups() == [] and UnionFind(0).num_components == 0


def test_union_find_errors():
    forest = UnionFind(3)
    with pytest.raises(IndexError, match="element 3 is out of range for a UnionFind of 3"):
        forest.find(3)
    with pytest.raises(IndexError, match="element -1 is out of range"):
        forest.union(0, -1)
    with pytest.raises(TypeError, match="elements must be ints, got float"):
        forest.find(1.0)
    with pytest.raises(ValueError, match="`num_elements` must be >= 0, got -2"):
        UnionFind(-2)
    with pytest.raises(ValueError, match=r"`pairs` must be integers of shape \(k, 2\)"):
        forest.union_pairs(np.zeros((2, 3), np.int64))
    with pytest.raises(IndexError, match="element -1 is out of range"):
        forest.union_pairs(np.array([[0, 1], [-1, 2]]))
    assert forest.num_components == 3  # validated before any union


# ---------------------------------------------------------------- frame clustering

def test_largest_cluster_keeps_the_biggest_tight_group():
    rng = np.random.default_rng(0)
    directions = np.linalg.qr(rng.normal(size=(64, 3)))[0].T  # 3 orthonormal directions
    frames = np.concatenate([
        tight_group(rng, directions[0], 6), tight_group(rng, directions[1], 3),
        tight_group(rng, directions[2], 1),
    ])
    order = rng.permutation(len(frames))
    shuffled = frames[order]
    big = np.flatnonzero(order < 6)
    for threshold in (0.3, 0.5, 0.8):
        kept = largest_cluster(shuffled, threshold)
        assert kept.dtype == np.int64
        np.testing.assert_array_equal(kept, big)
    labels = cluster_frames(shuffled, 0.5)
    assert labels.max() == 2 and sorted(np.bincount(labels)) == [1, 3, 6]
    assert labels[0] == 0  # numbered by first frame


def test_largest_cluster_thresholds_and_chains():
    rng = np.random.default_rng(1)
    frames = rng.normal(size=(7, 16))
    for keep_all in (None, -1, -1.0, -5):
        np.testing.assert_array_equal(largest_cluster(frames, keep_all), np.arange(7))
    assert cluster_frames(frames, None).tolist() == [0] * 7
    # Nothing links at >= 1: the single most central frame is kept.
    kept = largest_cluster(frames, 1.0)
    unit = frames / np.linalg.norm(frames, axis=1, keepdims=True)
    assert kept.tolist() == [int(np.argmax((unit @ unit.T).mean(axis=1)))]

    # Links are strict: cos exactly equal to the threshold does not link.
    orthogonal = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert largest_cluster(orthogonal, 0.0).tolist() == [1, 2]
    assert largest_cluster(orthogonal, -0.1).tolist() == [0, 1, 2]

    # A chain a~b~c links a and c although cos(a, c) < threshold.
    angles = np.radians([0, 50, 100, 230])
    chain = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert largest_cluster(chain, 0.5).tolist() == [0, 1, 2]


def test_largest_cluster_tie_break():
    # Two pairs; the pair nearer to the extra frame is more central and wins whatever the order.
    u, v = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    w = np.array([0.8, 0.0, 0.6])  # cos(w, u) = 0.8, below the 0.9 threshold
    frames = np.stack([v, v, u, u, w])
    assert largest_cluster(frames, 0.9).tolist() == [2, 3]
    assert largest_cluster(frames[[2, 3, 0, 1, 4]], 0.9).tolist() == [0, 1]
    # A tighter pair does not win by its own tightness: only similarity to the other frames
    # counts (two duplicated intruder frames vs two looser frames of the video's person).
    # (Counting the clusters' own similarities, as a plain row mean would, picks the duplicates.)
    u4, v4 = np.eye(4)[0], np.eye(4)[1]
    loose = np.array([0.9, 0.0, np.sqrt(1 - 0.81), 0.0])  # cos(u4, loose) = 0.9
    faint = np.array([0.03, 0.0, 0.0, np.sqrt(1 - 0.03**2)])  # cos ~0.03 to the loose pair
    frames = np.stack([v4, v4, u4, loose, faint])
    assert largest_cluster(frames, 0.85).tolist() == [2, 3]
    row_means = (frames @ frames.T).mean(axis=1)
    assert row_means[:2].mean() > row_means[2:4].mean()
    # Exactly symmetric clusters: the one holding the lowest frame index.
    symmetric = np.stack([v, u, v, u])
    assert largest_cluster(symmetric, 0.5).tolist() == [0, 2]
    assert largest_cluster(symmetric[[1, 0, 3, 2]], 0.5).tolist() == [0, 2]


def test_largest_cluster_errors():
    with pytest.raises(ValueError, match=r"non-empty \(n, D\) array, got shape \(0, 4\)"):
        largest_cluster(np.zeros((0, 4)), 0.5)
    with pytest.raises(ValueError, match="frame 1 has a zero embedding"):
        largest_cluster(np.array([[1.0, 0.0], [0.0, 0.0]]), 0.5)
    with pytest.raises(ValueError, match="frame 0 has a non-finite embedding"):
        largest_cluster(np.array([[np.nan, 0.0], [1.0, 0.0]]), 0.5)
    with pytest.raises(ValueError, match="got nan"):
        largest_cluster(np.eye(2), float("nan"))
    with pytest.raises(TypeError, match="`threshold` must be a number or None, got '0.5'"):
        largest_cluster(np.eye(2), "0.5")


def test_aggregate_set_matches_numpy():
    rng = np.random.default_rng(2)
    frames = rng.normal(size=(9, 8)) * rng.uniform(0.5, 3, size=(9, 1))
    for threshold in (None, 0.0, 0.3):
        embedding, kept = aggregate_set(frames, threshold)
        assert embedding.dtype == np.float32 and embedding.shape == (8,)
        np.testing.assert_array_equal(kept, reference_kept(frames, threshold))
        np.testing.assert_allclose(embedding, reference_set_embedding(frames, kept), atol=1e-6)
    single, kept = aggregate_set(frames[:1], 0.5)
    assert kept.tolist() == [0]
    np.testing.assert_allclose(single, frames[0] / np.linalg.norm(frames[0]), atol=1e-6)


# ---------------------------------------------------------------- set verification on arrays

def random_sets(rng, num_sets=60, dim=16):
    identities = rng.integers(0, 12, size=num_sets)
    centres = rng.normal(size=(12, dim))
    sets = [centres[identity] + rng.normal(size=(int(rng.integers(1, 10)), dim))
            for identity in identities]
    same = [(a, b) for a in range(num_sets) for b in range(a + 1, num_sets)
            if identities[a] == identities[b]]
    different = [(a, b) for a in range(num_sets) for b in range(a + 1, num_sets)
                 if identities[a] != identities[b]]
    same = [same[i] for i in rng.choice(len(same), 50, replace=False)]
    different = [different[i] for i in rng.choice(len(different), 50, replace=False)]
    pairs = np.array([p for fold in range(10) for p in same[5 * fold:5 * fold + 5]
                      + different[5 * fold:5 * fold + 5]], np.int64)
    issame = np.tile(np.repeat([True, False], 5), 10)
    folds = np.repeat(np.arange(10), 10)
    return sets, pairs, issame, folds


def test_evaluate_set_embeddings_matches_numpy_reference():
    rng = np.random.default_rng(3)
    sets, pairs, issame, folds = random_sets(rng)
    result = evaluate_set_embeddings(sets, pairs, issame, folds, thresholds=(0.6, None, 0.2),
                                     fars=(0.1,), name="toy")
    assert isinstance(result, SetVerificationResult)
    assert result.thresholds == [None, 0.6, 0.2]
    np.testing.assert_array_equal(result.frames_total, [len(s) for s in sets])
    for position, threshold in enumerate(result.thresholds):
        kept = [reference_kept(frames, threshold) for frames in sets]
        embeddings = np.stack([reference_set_embedding(f, k) for f, k in zip(sets, kept)])
        scores = np.sum(embeddings[pairs[:, 0]] * embeddings[pairs[:, 1]], axis=1)
        np.testing.assert_allclose(result.scores[position], scores, atol=1e-6)
        for got, want in zip(result.kept[position], kept):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(result.frames_kept(threshold), [len(k) for k in kept])
        expected = evaluate_scores(result.scores[position], issame, folds, fars=(0.1,))
        got = result.result(threshold)
        assert got.accuracy == expected.accuracy and got.auc == expected.auc
        np.testing.assert_array_equal(got.fold_accuracies, expected.fold_accuracies)
        assert got.tar_at_far[0.1].tar == expected.tar_at_far[0.1].tar
    # Removal happened at 0.6 (some sets lost frames), never at None.
    assert result.frames_kept(None).sum() == sum(len(s) for s in sets)
    assert result.frames_kept(0.6).sum() < result.frames_kept(None).sum()
    with pytest.raises(KeyError, match=r"threshold 0.4 was not evaluated; have \['none', '0.6', '0.2'\]"):
        result.result(0.4)


def test_removal_improves_accuracy_on_constructed_noisy_sets():
    # "Two identities in one video": each set holds 5 frames of its owner and 4 of another
    # person. The plain mean makes a set look like its intruder too, so impostor pairs where
    # one set's intruder owns the other set score high; keeping the largest cluster undoes it.
    rng = np.random.default_rng(0)
    dim, num_ids = 32, 20
    centres = np.linalg.qr(rng.normal(size=(dim, num_ids)))[0].T
    sets, owners, intruders = [], [], []
    for owner in range(num_ids):
        for video in range(4):
            intruder = (owner + 1 + video) % num_ids
            sets.append(np.concatenate([tight_group(rng, centres[owner], 5, 0.1),
                                        tight_group(rng, centres[intruder], 4, 0.1)]))
            owners.append(owner)
            intruders.append(intruder)
    count = len(sets)
    same = [(a, b) for a in range(count) for b in range(a + 1, count) if owners[a] == owners[b]]
    linked = [(a, b) for a in range(count) for b in range(count)
              if owners[a] != owners[b] and intruders[a] == owners[b]]
    unrelated = [(a, b) for a in range(count) for b in range(a + 1, count)
                 if owners[a] != owners[b] and owners[b] != intruders[a] != intruders[b] != owners[a]]
    same = [same[i] for i in rng.permutation(len(same))[:100]]
    different = [linked[i] for i in rng.choice(len(linked), 50, replace=False)]
    different += [unrelated[i] for i in rng.choice(len(unrelated), 50, replace=False)]
    different = [different[i] for i in rng.permutation(100)]
    pairs = np.array([p for k in range(10) for p in same[10 * k:10 * k + 10]
                      + different[10 * k:10 * k + 10]])
    issame = np.tile(np.repeat([True, False], 10), 10)
    folds = np.repeat(np.arange(10), 20)
    result = evaluate_set_embeddings(sets, pairs, issame, folds, thresholds=(None, 0.5))
    plain, cleaned = result.result(None), result.result(0.5)
    assert result.frames_kept(0.5).tolist() == [5] * count
    assert all(k.tolist() == [0, 1, 2, 3, 4] for k in result.kept[1])  # the owner's frames
    assert plain.accuracy < 0.95 and plain.auc < 0.99
    assert cleaned.accuracy >= plain.accuracy + 0.05, (plain.accuracy, cleaned.accuracy)
    assert cleaned.auc > plain.auc


def test_set_result_summary_and_json():
    rng = np.random.default_rng(5)
    sets, pairs, issame, folds = random_sets(rng)
    result = evaluate_set_embeddings(sets, pairs, issame, folds, thresholds=(0.3, 0.5),
                                     fars=(0.1, 0.001))
    lines = result.summary().splitlines()
    assert lines[1].startswith("threshold") and "frames kept" in lines[1]
    assert lines[2].startswith("none") and lines[3].startswith("0.3") and lines[4].startswith("0.5")
    assert f"{100 * result.result(0.5).accuracy:.2f}% +- " in lines[4]
    assert "TAR@FAR=1e-03 n/a: needs >= 1000 impostor pairs" in result.summary()
    data = json.loads(json.dumps(result.to_dict()))
    assert [row["cluster_threshold"] for row in data["rows"]] == [None, 0.3, 0.5]
    assert data["rows"][1]["threshold"] == pytest.approx(result.result(0.3).threshold)
    assert data["rows"][2]["frames_kept"] == int(result.frames_kept(0.5).sum())
    assert data["rows"][0]["accuracy"] == pytest.approx(result.result(None).accuracy)
    assert data["num_frames"] == sum(len(s) for s in sets)


def test_evaluate_set_embeddings_errors():
    rng = np.random.default_rng(6)
    sets, pairs, issame, folds = random_sets(rng)
    with pytest.raises(ValueError, match="given twice"):
        evaluate_set_embeddings(sets, pairs, issame, folds, thresholds=(None, -1))
    with pytest.raises(ValueError, match="must be numbers or None, got 'x'"):
        evaluate_set_embeddings(sets, pairs, issame, folds, thresholds=("x",))
    with pytest.raises(ValueError, match=r"refers to sets 0..60, but there are 60 sets"):
        evaluate_set_embeddings(sets, np.where(pairs == pairs.max(), 60, pairs), issame, folds)
    bad = list(sets)
    bad[3] = np.zeros((2, 5))
    with pytest.raises(ValueError, match=r"set 3 \(s3\): 5-d frame embeddings, set 0 has 16-d"):
        evaluate_set_embeddings(bad, pairs, issame, folds, set_names=[f"s{i}" for i in range(60)])
    bad[3] = np.zeros((0, 16))
    with pytest.raises(ValueError, match=r"set 3: frame embeddings must be a non-empty"):
        evaluate_set_embeddings(bad, pairs, issame, folds)


# ---------------------------------------------------------------- set-pairs files

def write_image(path, value):
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((112, 112, 3), value, np.uint8)).save(path)


def make_set_tree(root, names, frames=2):
    for index, name in enumerate(names):
        for frame in range(frames):
            write_image(os.path.join(root, name, f"f{frame}.png"), 10 * index + frame)


def test_read_set_pairs(tmp_path):
    names = [f"id{i}/v{j}" for i in range(5) for j in range(2)]
    make_set_tree(tmp_path / "sets", names, frames=3)
    (tmp_path / "sets" / "id0" / "v0" / "notes.txt").write_text("not a frame")
    lines = ["# a comment", ""]
    for k in range(10):
        i = k % 5
        lines.append(f"id{i}/v0 id{i}/v1 {'1' if k % 2 else 'true'}")
    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text("\n".join(lines) + "\n")
    set_pairs = read_set_pairs(pairs_file, tmp_path / "sets")
    assert len(set_pairs) == 10 and set_pairs.num_folds == 10
    assert set_pairs.set_names[:4] == ["id0/v0", "id0/v1", "id1/v0", "id1/v1"]
    assert set_pairs.pairs[:2].tolist() == [[0, 1], [2, 3]] and set_pairs.pairs[5].tolist() == [0, 1]
    assert set_pairs.issame.all() and set_pairs.folds.tolist() == list(range(10))
    assert set_pairs.num_frames == 30
    assert [os.path.basename(p) for p in set_pairs.frame_paths[0]] == ["f0.png", "f1.png", "f2.png"]
    assert all(os.path.isabs(p) for p in set_pairs.frame_paths[0])
    assert len(set_pairs.skipped) == 1 and set_pairs.skipped[0][0].endswith("notes.txt")
    assert "10 set pairs (10 genuine, 0 impostor), 10 folds, 10 sets of 3-3 frames" in set_pairs.summary()


@pytest.mark.parametrize("body, error, match", [
    (["a0 a1 1"] * 9 + ["a0 a1"], ValueError,
     r"pairs.txt: line 10: expected 3 fields `set_a set_b issame`, got 2"),
    (["a0 a1 1"] * 9 + ["a0 a1 yes"], ValueError,
     r"line 10: `issame` must be one of 0/1/true/false, got 'yes'"),
    (["a0 a1 1"] * 7, ValueError, r"7 pairs cannot be split into 10 equal contiguous folds"),
    (["a0 a1 1"] * 9 + ["a0 ../outside 0"], ValueError,
     r"line 10: set '../outside' must be a folder relative to the root and inside it"),
    (["# only comments"], ValueError, r"no set pairs found"),
])
def test_read_set_pairs_malformed(tmp_path, body, error, match):
    make_set_tree(tmp_path / "sets", ["a0", "a1"])
    path = tmp_path / "pairs.txt"
    path.write_text("\n".join(body) + "\n")
    with pytest.raises(error, match=match):
        read_set_pairs(path, tmp_path / "sets")


def test_read_set_pairs_missing_and_empty_sets(tmp_path):
    make_set_tree(tmp_path / "sets", ["a0", "a1"])
    os.makedirs(tmp_path / "sets" / "empty1")
    os.makedirs(tmp_path / "sets" / "empty2")
    (tmp_path / "sets" / "empty2" / "readme.txt").write_text("no frames here")
    path = tmp_path / "pairs.txt"
    path.write_text("\n".join(["a0 a1 1"] * 7 + ["a0 gone1 0", "gone2 a1 0", "gone3 a0 0"]) + "\n")
    with pytest.raises(FileNotFoundError,
                       match=r"pairs.txt: 3 of 5 set folders are missing under .*sets: gone1, gone2, gone3"):
        read_set_pairs(path, tmp_path / "sets")
    path.write_text("\n".join(["a0 a1 1"] * 8 + ["a0 empty1 0", "empty2 a1 0"]) + "\n")
    with pytest.raises(ValueError, match=r"2 of 4 set folders under .* contain no jpg/jpeg/png/bmp "
                                         r"frames: empty1, empty2"):
        read_set_pairs(path, tmp_path / "sets")
    with pytest.raises(FileNotFoundError, match="set-pairs file .*nope.txt does not exist"):
        read_set_pairs(tmp_path / "nope.txt", tmp_path / "sets")
    with pytest.raises(FileNotFoundError, match="set root folder .*nowhere does not exist"):
        read_set_pairs(path, tmp_path / "nowhere")


def test_evaluate_set_pairs_embeds_each_file_once(tmp_path):
    # Frame i of set s is a flat image of grey value 10 s + i; a toy embed_fn maps the mean
    # pixel to a 2-d direction. Symlinked duplicates are embedded once.
    names = [f"s{i}" for i in range(4)]
    make_set_tree(tmp_path / "sets", names, frames=2)
    os.symlink(tmp_path / "sets" / "s0" / "f0.png", tmp_path / "sets" / "s1" / "f9.png")
    (tmp_path / "pairs.txt").write_text("\n".join(["s0 s1 1", "s2 s3 0"] * 5) + "\n")
    set_pairs = read_set_pairs(tmp_path / "pairs.txt", tmp_path / "sets")
    calls = []

    def embed_fn(batch):
        calls.append(len(batch))
        angle = batch.mean(axis=(1, 2, 3)) * 3
        return np.stack([np.cos(angle), np.sin(angle)], axis=1)

    cache = {}
    result = evaluate_set_pairs(embed_fn, set_pairs, thresholds=(None, 0.99), batch_size=4,
                                embedding_cache=cache)
    assert sum(calls) == 8 and len(cache) == 8  # 9 frame paths, 8 distinct files
    assert result.frames_total.tolist() == [2, 3, 2, 2]
    np.testing.assert_allclose(result.frame_embeddings[1][2], result.frame_embeddings[0][0])
    pixels = [[10 * i + f for f in range(2)] for i in range(4)]
    pixels[1].append(0)
    sets = []
    for values in pixels:
        angle = (np.array(values, np.float32) - 127.5) / 128 * 3
        sets.append(np.stack([np.cos(angle), np.sin(angle)], axis=1))
    expected = evaluate_set_embeddings(sets, set_pairs.pairs, set_pairs.issame, set_pairs.folds,
                                       thresholds=(None, 0.99))
    for got, want in zip(result.scores, expected.scores):
        np.testing.assert_allclose(got, want, atol=1e-5)
    evaluate_set_pairs(embed_fn, set_pairs, thresholds=(None,), embedding_cache=cache)
    assert sum(calls) == 8  # everything came from the cache


# ---------------------------------------------------------------- noisy video-set builder

def make_identity_tree(root, num_ids=8, per_id=14):
    from PIL import Image

    rng = np.random.default_rng(123)
    for identity in range(num_ids):
        colour = rng.integers(0, 256, size=3)
        for index in range(per_id):
            pixels = np.clip(colour + rng.normal(0, 20, size=(112, 112, 3)), 0, 255)
            folder = os.path.join(root, f"p{identity}")
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(folder, f"{index:03d}.jpg"))


def tree_bytes(root):
    contents = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                contents[os.path.relpath(path, root)] = f.read()
    return contents


def test_build_video_sets_is_deterministic_and_consistent(tmp_path):
    make_identity_tree(tmp_path / "ids")
    first = build_video_sets(tmp_path / "ids", tmp_path / "a", frames_per_set=5,
                             noise_fraction=0.35, num_pairs=40, seed=7)
    second = build_video_sets(tmp_path / "ids", tmp_path / "b", frames_per_set=5,
                              noise_fraction=0.35, num_pairs=40, seed=7)
    other = build_video_sets(tmp_path / "ids", tmp_path / "c", frames_per_set=5,
                             noise_fraction=0.35, num_pairs=40, seed=8)
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    assert tree_bytes(tmp_path / "a") != tree_bytes(tmp_path / "c")
    assert first.set_names == second.set_names and first.noise_counts == second.noise_counts

    manifest = load_manifest(first.manifest_path)
    set_pairs = read_set_pairs(first.pairs_path, first.root)
    assert len(set_pairs) == 40 and first.num_pairs == 40
    assert all(len(frames) == 5 for frames in set_pairs.frame_paths)
    identity = {name: manifest["sets"][name]["identity"] for name in set_pairs.set_names}
    for (a, b), same in zip(set_pairs.pairs, set_pairs.issame):
        assert (identity[set_pairs.set_names[a]] == identity[set_pairs.set_names[b]]) == same
    for fold in range(10):
        assert set_pairs.issame[set_pairs.folds == fold].tolist() == [True, True, False, False]
    assert len({tuple(sorted(p)) for p in set_pairs.pairs.tolist()}) == 40

    kinds = frame_kinds(manifest, set_pairs)
    counted = {kind: sum(int(np.count_nonzero(k == kind)) for k in kinds)
               for kind in ("face",) + NOISE_KINDS}
    listed = {kind: sum(f["kind"] == kind for name in set_pairs.set_names
                        for f in manifest["sets"][name]["frames"]) for kind in counted}
    assert counted == listed
    assert manifest["frame_counts"] == first.noise_counts
    assert sum(first.noise_counts.values()) == first.num_frames == 5 * len(first.set_names)
    assert all(counted[kind] > 0 for kind in NOISE_KINDS)
    # Noise never outnumbers a set's own faces (so the true identity is the biggest group).
    assert all(np.count_nonzero(k == "face") > len(k) / 2 for k in kinds)

    face_sources = [f["source"] for s in manifest["sets"].values() for f in s["frames"]
                    if f["kind"] == "face"]
    assert len(face_sources) == len(set(face_sources))  # videos of a person share no image
    for name, entry in manifest["sets"].items():
        own = {f["source"] for f in entry["frames"] if f["kind"] == "face"}
        for frame in entry["frames"]:
            path = os.path.join(first.root, name, frame["file"])
            if frame["kind"] == "face":
                assert os.path.realpath(path) == str(tmp_path / "ids" / frame["source"])
            elif frame["kind"] == "occluded":
                assert frame["source"] in own and not os.path.islink(path)
            elif frame["kind"] == "other_identity":
                assert frame["identity"] != entry["identity"]
                assert frame["source"] not in face_sources
                assert frame["source"].startswith(frame["identity"] + "/")
            else:
                assert frame["kind"] == "non_face" and path.endswith(".jpg")

    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        build_video_sets(tmp_path / "ids", tmp_path / "a", frames_per_set=5, num_pairs=40, seed=7)
    with pytest.raises(ValueError, match=r"so at most \d+ balanced pairs in 10 folds; got num_pairs=2000"):
        build_video_sets(tmp_path / "ids", tmp_path / "d", frames_per_set=5, num_pairs=2000)
    with pytest.raises(ValueError, match="`num_pairs` must be a multiple of 2 \\* num_folds = 20"):
        build_video_sets(tmp_path / "ids", tmp_path / "d", num_pairs=30)
    with pytest.raises(ValueError, match="`noise_kinds` must be distinct kinds"):
        build_video_sets(tmp_path / "ids", tmp_path / "d", noise_kinds=("blur",))


def test_build_video_sets_clean_and_default_pair_count(tmp_path):
    make_identity_tree(tmp_path / "ids", num_ids=6, per_id=9)
    built = build_video_sets(tmp_path / "ids", tmp_path / "out", frames_per_set=3,
                             noise_fraction=0.0, num_folds=2, link=False)
    manifest = load_manifest(built.manifest_path)
    # 9 images per identity -> 3 clean sets each -> 3 genuine pairs each: 18, all used.
    assert len(built.set_names) == 18 and built.num_pairs == 36
    assert built.noise_counts == {"face": 54, **{kind: 0 for kind in NOISE_KINDS}}
    frame = os.path.join(built.root, built.set_names[0], "frame_00.jpg")
    assert os.path.isfile(frame) and not os.path.islink(frame)
    assert manifest["noise_fraction"] == 0.0


def test_write_set_pairs_linked_impostors(tmp_path):
    make_identity_tree(tmp_path / "ids")
    built = build_video_sets(tmp_path / "ids", tmp_path / "a", frames_per_set=5,
                             noise_fraction=0.35, num_pairs=40, seed=3,
                             noise_kinds=("other_identity",))
    manifest = load_manifest(built.manifest_path)
    intruders = {name: {f["identity"] for f in entry["frames"] if f["kind"] == "other_identity"}
                 for name, entry in manifest["sets"].items()}
    identity = {name: entry["identity"] for name, entry in manifest["sets"].items()}

    def linked(a, b):
        return identity[b] in intruders[a] or identity[a] in intruders[b]

    path = tmp_path / "a" / "linked.txt"
    assert write_set_pairs(built.manifest_path, path, num_pairs=40, linked_impostors=1.0) == 40
    set_pairs = read_set_pairs(path, built.root)
    names = set_pairs.set_names
    for (a, b), same in zip(set_pairs.pairs, set_pairs.issame):
        a, b = names[a], names[b]
        assert (identity[a] == identity[b]) == same
        assert same or linked(a, b)
    # The default draw has (almost) no linked impostors; half gives half.
    write_set_pairs(built.manifest_path, path, num_pairs=40, linked_impostors=0.5, seed=1)
    set_pairs = read_set_pairs(path, built.root)
    impostors = [(set_pairs.set_names[a], set_pairs.set_names[b])
                 for (a, b), same in zip(set_pairs.pairs, set_pairs.issame) if not same]
    assert sum(linked(a, b) for a, b in impostors) >= 10
    assert len({tuple(sorted(p)) for p in impostors}) == 20
    occluded_only = build_video_sets(tmp_path / "ids", tmp_path / "b", frames_per_set=5,
                                     noise_fraction=0.35, num_pairs=20, noise_kinds=("occluded",))
    with pytest.raises(ValueError, match=r"5 linked impostor pairs wanted \(0.5 of 10\), but the "
                                         r"sets allow only 0"):
        write_set_pairs(occluded_only.manifest_path, path, num_pairs=20, linked_impostors=0.5)
    with pytest.raises(ValueError, match=r"`linked_impostors` must be in \[0, 1\], got 1.5"):
        write_set_pairs(built.manifest_path, path, linked_impostors=1.5)


def test_removal_stats():
    kinds = [np.array(["face", "face", "non_face", "occluded"]),
             np.array(["face", "other_identity", "face"])]
    kept = [np.array([0, 1]), np.array([1, 2])]  # drops both noise frames of set 0, a face in set 1
    stats = removal_stats(kinds, kept)
    assert stats["frames"] == 7 and stats["noise_frames"] == 3
    assert stats["removed"] == 3 and stats["noise_removed"] == 2 and stats["faces_removed"] == 1
    assert stats["precision"] == pytest.approx(2 / 3) and stats["recall"] == pytest.approx(2 / 3)
    assert stats["per_kind"]["other_identity"] == {"frames": 1, "removed": 0, "removed_fraction": 0.0}
    nothing = removal_stats(kinds, [np.arange(4), np.arange(3)])
    assert nothing["precision"] is None and nothing["recall"] == 0.0
