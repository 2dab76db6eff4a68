"""make_pairs / write_pairs / folder_to_bin and the `data make-pairs` command."""

import argparse
import os

import numpy as np
import pytest

from kerasface.evaluation.bin_file import load_bin
from kerasface.evaluation.pair_generation import _remaining_negatives, folder_to_bin, make_pairs
from kerasface.evaluation.pairs_file import read_pairs, write_pairs


def _folder(root, counts, prefix="id"):
    """``root/<prefix>NN/kk.jpg`` placeholders (make_pairs never decodes)."""
    for identity, count in enumerate(counts):
        folder = os.path.join(root, f"{prefix}{identity:02d}")
        os.makedirs(folder, exist_ok=True)
        for image in range(count):
            with open(os.path.join(folder, f"{image:02d}.jpg"), "wb") as f:
                f.write(b"\xff\xd8\xff placeholder")
    return str(root)


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    counts = np.random.default_rng(0).integers(1, 9, 40)
    counts[:5] = 1  # some identities only usable for different-identity pairs
    return _folder(tmp_path_factory.mktemp("varied"), counts.tolist()), counts


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from kerasface.data.synthetic_faces import write_synthetic_faces

    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_faces(root, num_identities=8, images_per_identity=3, seed=0, workers=2)
    return str(root)


def _identity(path):
    return path.split("/")[0]


def test_folds_are_balanced_disjoint_and_correct(varied):
    root, counts = varied
    pairs = make_pairs(root, num_folds=5, pairs_per_fold=20, seed=1)
    assert len(pairs) == 100 and pairs.num_folds == 5 and pairs.pairs_per_fold == 20
    np.testing.assert_array_equal(pairs.folds, np.repeat(np.arange(5), 20))
    np.testing.assert_array_equal(pairs.issame, np.tile(np.repeat([True, False], 10), 5))
    for a, b, same in zip(pairs.paths_a, pairs.paths_b, pairs.issame):
        assert (_identity(a) == _identity(b)) == same
        assert a != b
        assert os.path.isfile(os.path.join(root, a)) and os.path.isfile(os.path.join(root, b))
    # identities actually used per fold, from the paths: disjoint across folds
    used = [
        {_identity(p) for k in range(100) if pairs.folds[k] == fold for p in (pairs.paths_a[k], pairs.paths_b[k])}
        for fold in range(5)
    ]
    for i in range(5):
        assert used[i] <= set(pairs.fold_identities[i])
        for j in range(i + 1, 5):
            assert not used[i] & used[j]
            assert not set(pairs.fold_identities[i]) & set(pairs.fold_identities[j])
    all_names = sorted(name for fold in pairs.fold_identities for name in fold)
    assert all_names == [f"id{i:02d}" for i in range(40)]
    assert [len(fold) for fold in pairs.fold_identities] == [8] * 5  # dealt evenly
    unordered = {tuple(sorted(pair)) for pair in zip(pairs.paths_a, pairs.paths_b)}
    assert len(unordered) == 100


def test_same_identity_pairs_are_spread_over_identities(tmp_path):
    root = _folder(tmp_path, [5] * 12)  # 10 pairs per identity possible
    pairs = make_pairs(root, num_folds=3, pairs_per_fold=16, seed=0)
    for fold in range(3):
        same = [_identity(pairs.paths_a[k]) for k in range(48) if pairs.folds[k] == fold and pairs.issame[k]]
        per_identity = np.unique(same, return_counts=True)[1]
        # 8 same pairs over the fold's 4 identities: 2 each
        assert per_identity.tolist() == [2, 2, 2, 2]


def test_deterministic_under_the_seed(varied):
    root, _ = varied
    first = make_pairs(root, num_folds=4, pairs_per_fold=10, seed=3)
    again = make_pairs(root, num_folds=4, pairs_per_fold=10, seed=3)
    other = make_pairs(root, num_folds=4, pairs_per_fold=10, seed=4)
    assert (first.paths_a, first.paths_b) == (again.paths_a, again.paths_b)
    assert first.fold_identities == again.fold_identities
    assert (first.paths_a, first.paths_b) != (other.paths_a, other.paths_b)


def test_round_trip_through_write_and_read_pairs(varied, tmp_path):
    root, _ = varied
    pairs = make_pairs(root, num_folds=5, pairs_per_fold=20, seed=2)
    path = pairs.write(tmp_path / "sub" / "pairs.txt")
    with open(path, encoding="utf-8") as f:
        assert f.readline().startswith("# kerasface make-pairs")
    read = read_pairs(path, root=root, num_folds=5)
    assert read.paths_a == [os.path.join(os.path.abspath(root), p) for p in pairs.paths_a]
    assert read.paths_b == [os.path.join(os.path.abspath(root), p) for p in pairs.paths_b]
    np.testing.assert_array_equal(read.issame, pairs.issame)
    np.testing.assert_array_equal(read.folds, pairs.folds)


def test_write_pairs_plain_lists_and_errors(tmp_path):
    path = write_pairs(tmp_path / "p.txt", ["a/1.jpg", "b/2.jpg"], ["a/2.jpg", "c/1.jpg"], [True, 0])
    read = read_pairs(path, num_folds=2)
    assert read.paths_a == ["a/1.jpg", "b/2.jpg"] and read.issame.tolist() == [True, False]
    with pytest.raises(ValueError, match=r"same length, got 2, 1 and 2"):
        write_pairs(tmp_path / "x.txt", ["a", "b"], ["c"], [1, 0])
    with pytest.raises(ValueError, match=r"pair #1: image paths .* without whitespace.*'my file.jpg'"):
        write_pairs(tmp_path / "x.txt", ["a", "my file.jpg"], ["c", "d"], [1, 0])
    with pytest.raises(ValueError, match=r"may not start with '#'"):
        write_pairs(tmp_path / "x.txt", ["#a"], ["c"], [1])
    with pytest.raises(ValueError, match=r"pair #0: `issame` must be a boolean or 0/1, got 2"):
        write_pairs(tmp_path / "x.txt", ["a"], ["c"], [2])
    with pytest.raises(ValueError, match="no pairs to write"):
        write_pairs(tmp_path / "x.txt", [], [], [])
    assert not os.path.exists(tmp_path / "x.txt")


def test_argument_errors(varied):
    root, _ = varied
    with pytest.raises(ValueError, match="`pairs_per_fold` must be even .* got 7"):
        make_pairs(root, num_folds=2, pairs_per_fold=7)
    with pytest.raises(ValueError, match="`num_folds` must be an int >= 2, got 1"):
        make_pairs(root, num_folds=1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_pairs(os.path.join(root, "missing"))


def test_too_few_identities_for_disjoint_folds(tmp_path):
    root = _folder(tmp_path, [6] * 12)
    with pytest.raises(ValueError, match=r"12 identities cannot be split into 10 disjoint folds .* at least 20"):
        make_pairs(root)
    shared = make_pairs(root, num_folds=10, pairs_per_fold=20, disjoint=False)
    assert not shared.disjoint and len(shared) == 200
    assert shared.fold_identities[0] == shared.fold_identities[9] and len(shared.fold_identities[0]) == 12
    assert len({tuple(sorted(p)) for p in zip(shared.paths_a, shared.paths_b)}) == 200
    assert "identities shared across folds" in shared.summary()


def test_a_fold_without_enough_same_identity_pairs(tmp_path):
    root = _folder(tmp_path, [2] * 20)  # each fold: 2 identities, 2 same pairs possible
    with pytest.raises(ValueError, match=r"fold 1 has 2 identities \(2 with 2\+ images\) allowing 2 distinct "
                                         r"same-identity .* but 5 of each are needed"):
        make_pairs(root, num_folds=10, pairs_per_fold=10)
    with pytest.raises(ValueError, match=r"allow 20 distinct same-identity .* need 50 of each"):
        make_pairs(root, num_folds=10, pairs_per_fold=10, disjoint=False)


def test_identities_without_a_second_image(tmp_path):
    root = _folder(tmp_path, [1] * 30)
    with pytest.raises(ValueError, match=r"one with 2\+ images.*found 30 identities, 0 of them with 2\+ images"):
        make_pairs(root, num_folds=2, pairs_per_fold=2)


def test_every_available_pair_can_be_used(tmp_path):
    # one identity of 5 images and one of 1: exactly 5 different-identity pairs exist
    root = _folder(tmp_path, [5, 1])
    pairs = make_pairs(root, num_folds=5, pairs_per_fold=2, disjoint=False)
    negatives = {tuple(sorted(p)) for p, s in zip(zip(pairs.paths_a, pairs.paths_b), pairs.issame) if not s}
    assert negatives == {(f"id00/{i:02d}.jpg", "id01/00.jpg") for i in range(5)}


def test_exhaustive_fallback_returns_unused_pairs():
    images = {"a": ["1.jpg", "2.jpg"], "b": ["1.jpg"], "c": ["1.jpg"]}
    seen = {("a/1.jpg", "b/1.jpg"), ("a/2.jpg", "c/1.jpg")}
    rest = _remaining_negatives(["a", "b", "c"], images, seen, 3, np.random.default_rng(0))
    keys = {tuple(sorted(p)) for p in rest}
    assert keys == {("a/2.jpg", "b/1.jpg"), ("a/1.jpg", "c/1.jpg"), ("b/1.jpg", "c/1.jpg")}


def test_names_a_pairs_file_cannot_hold_are_left_out_and_reported(tmp_path):
    root = _folder(tmp_path, [3] * 4)
    os.makedirs(tmp_path / "with space")
    (tmp_path / "with space" / "0.jpg").write_bytes(b"x")
    (tmp_path / "id00" / "my photo.jpg").write_bytes(b"x")
    pairs = make_pairs(root, num_folds=2, pairs_per_fold=2)
    reasons = dict((os.path.basename(path), reason) for path, reason in pairs.skipped)
    assert reasons == {"with space": "identity name has whitespace or starts with '#'",
                       "my photo.jpg": "file name has whitespace"}
    assert all(" " not in p for p in pairs.paths_a + pairs.paths_b)


def test_folder_to_bin_round_trip(synthetic, tmp_path):
    pairs = make_pairs(synthetic, num_folds=2, pairs_per_fold=6, seed=0)
    pairs_path = pairs.write(tmp_path / "pairs.txt")
    bin_path = folder_to_bin(synthetic, pairs_path, tmp_path / "out.bin", num_folds=2)
    images, issame = load_bin(bin_path)
    expected = []
    for a, b in zip(pairs.paths_a, pairs.paths_b):
        for path in (a, b):
            with open(os.path.join(synthetic, path), "rb") as f:
                expected.append(f.read())
    assert images == expected
    np.testing.assert_array_equal(issame, pairs.issame)


def test_folder_to_bin_refuses_undecodable_images(tmp_path):
    root = _folder(tmp_path / "faces", [2, 2])
    pairs_path = write_pairs(tmp_path / "p.txt", ["id00/00.jpg", "id00/01.jpg"], ["id00/01.jpg", "id01/00.jpg"],
                             [1, 0])
    with pytest.raises(ValueError, match=r"3 of the 3 images cannot be decoded, so no .bin was written: .*id00/00.jpg"):
        folder_to_bin(root, pairs_path, tmp_path / "x.bin", num_folds=2)
    assert not os.path.exists(tmp_path / "x.bin")
    with pytest.raises(FileNotFoundError, match="images are missing"):
        folder_to_bin(tmp_path, pairs_path, tmp_path / "x.bin", num_folds=2)


def test_make_pairs_command(synthetic, tmp_path, capsys):
    from kerasface.cli import make_pairs_command

    parser = make_pairs_command.add_arguments(argparse.ArgumentParser())
    out, bin_path = str(tmp_path / "pairs.txt"), str(tmp_path / "pairs.bin")
    args = parser.parse_args([synthetic, out, "--folds", "2", "--pairs-per-fold", "6", "--seed", "5", "--bin", bin_path])
    assert make_pairs_command.run(args) == 0
    printed = capsys.readouterr().out
    assert "2 folds x 6 pairs (3 same, 3 different identity) from 8 identities, disjoint" in printed
    read = read_pairs(out, root=synthetic, num_folds=2)
    assert len(read) == 12 and len(load_bin(bin_path)[0]) == 24
    with pytest.raises(SystemExit):
        parser.parse_args([synthetic, out, "--pairs-per-fold", "1"])


def test_default_protocol_on_real_faces():
    from kerasface.testing.shared_data import require_shared

    root = require_shared("data/celeba_dev/val")
    pairs = make_pairs(root)
    assert len(pairs) == 3000 and pairs.disjoint
    names = [set(fold) for fold in pairs.fold_identities]
    assert sum(len(n) for n in names) == len(set().union(*names)) == 50
    assert len({tuple(sorted(p)) for p in zip(pairs.paths_a, pairs.paths_b)}) == 3000
