"""kerasface.data: identity-folder pipeline, unreadable-file reporting, synthetic faces."""

import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kerasface.data import (
    BadRecordReport,
    ImageFolder,
    image_folder,
    load_label_map,
    normalize_numpy,
)
from kerasface.data.bad_record_tracker import describe_bad_records, diagnose_image_file
from kerasface.data.synthetic_faces import (
    MARKER_FILE,
    make_synthetic_dataset,
    synthetic_face,
    write_synthetic_faces,
    write_synthetic_pairs,
)
from kerasface.testing.shared_data import require_shared


def _pixels(seed, size=112):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _make_lossless_folder(root, names=("bob", "alice", "carol10", "carol9"), per_identity=3):
    """Identity folders of PNG/BMP images (lossless, so decoded pixels are known exactly)."""
    expected = {}
    for k, name in enumerate(names):
        os.makedirs(root / name)
        for j in range(per_identity):
            pixels = _pixels(100 * k + j)
            ext = (".png", ".BMP", ".Png")[j % 3]
            path = root / name / f"img{j}{ext}"
            Image.fromarray(pixels).save(path, format="BMP" if ext.lower() == ".bmp" else "PNG")
            expected[str(path)] = pixels
    return expected


def _collect(dataset):
    images, labels = [], []
    for x, y in dataset:
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


# ---- indexing and labels -----------------------------------------------------------------


def test_labels_follow_sorted_folder_names(tmp_path):
    _make_lossless_folder(tmp_path)
    folder = image_folder(tmp_path, batch_size=2, shuffle=False, augment=False)
    assert folder.class_names == ["alice", "bob", "carol10", "carol9"]
    assert folder.label_map == {"alice": 0, "bob": 1, "carol10": 2, "carol9": 3}
    assert folder.num_classes == 4 and folder.num_images == 12
    names = [os.path.basename(os.path.dirname(p)) for p in folder.file_paths]
    np.testing.assert_array_equal(folder.labels, [folder.label_map[n] for n in names])
    assert folder.labels.dtype == np.int32
    assert folder.file_paths == sorted(folder.file_paths)
    again = image_folder(tmp_path, batch_size=2)
    assert again.file_paths == folder.file_paths
    np.testing.assert_array_equal(again.labels, folder.labels)

    path = folder.save_label_map(tmp_path / "out" / "labels.json")
    assert load_label_map(path) == folder.label_map
    # An earlier label map is honoured, including identities absent from this folder.
    remap = {"zed": 0, "carol9": 1, "carol10": 2, "bob": 3, "alice": 4}
    mapped = image_folder(tmp_path, batch_size=2, label_map=remap)
    assert mapped.num_classes == 5 and mapped.class_names[1] == "carol9"
    for p, label in zip(mapped.file_paths, mapped.labels):
        assert remap[os.path.basename(os.path.dirname(p))] == label
    with pytest.raises(ValueError, match="not in the given label_map: carol9"):
        image_folder(tmp_path, label_map={"alice": 0, "bob": 1, "carol10": 2})
    with pytest.raises(ValueError, match=r"indices must be 0..1, each used once"):
        image_folder(tmp_path, label_map={"alice": 0, "bob": 0})


def test_folder_errors_name_the_path(tmp_path, caplog):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=f"image folder {missing} does not exist"):
        image_folder(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"{empty}: no images found"):
        image_folder(empty)
    root = tmp_path / "root"
    _make_lossless_folder(root, names=("a", "b"), per_identity=2)
    (root / "ghost").mkdir()
    (root / "a" / "notes.txt").write_text("hello")
    (root / "stray.jpg").write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="kerasface.data"):
        folder = image_folder(root, batch_size=2)
    assert folder.class_names == ["a", "b"]
    text = caplog.text
    assert f"{root / 'ghost'}" in text and "no jpg/jpeg/png/bmp images" in text
    assert f"{root / 'a' / 'notes.txt'}" in text
    reasons = dict(folder.skipped_files)
    assert reasons[str(root / "a" / "notes.txt")] == "not an image file extension"
    assert "not in an identity folder" in reasons[str(root / "stray.jpg")]
    with pytest.raises(ValueError, match=r"4 images is fewer than batch_size=5"):
        image_folder(root, batch_size=5)
    assert image_folder(root, batch_size=5, drop_remainder=False).steps_per_epoch == 1
    with pytest.raises(ValueError, match="`batch_size` must be an int >= 1, got 0"):
        image_folder(root, batch_size=0)


# ---- pipeline values ---------------------------------------------------------------------


def test_batches_are_normalised_decoded_pixels(tmp_path):
    expected = _make_lossless_folder(tmp_path)
    folder = image_folder(tmp_path, batch_size=5, shuffle=False, augment=False,
                          drop_remainder=False)
    spec = folder.dataset.element_spec
    assert spec[0].dtype == tf.float32 and spec[0].shape.as_list() == [None, 112, 112, 3]
    assert spec[1].dtype == tf.int32
    images, labels = _collect(folder.dataset)
    assert images.shape == (12, 112, 112, 3) and images.dtype == np.float32
    np.testing.assert_array_equal(labels, folder.labels)
    for image, path in zip(images, folder.file_paths):
        reference = (expected[path].astype(np.float32) - 127.5) / 128.0
        np.testing.assert_array_equal(image, reference)
    assert images.min() >= -127.5 / 128 and images.max() <= 127.5 / 128

    batch_sizes = [int(x.shape[0]) for x, _ in image_folder(tmp_path, batch_size=5).dataset]
    assert batch_sizes == [5, 5]  # drop_remainder drops the 2 left over


def test_jpeg_values_match_pil_decoder(tmp_path):
    write_synthetic_faces(tmp_path, num_identities=2, images_per_identity=3, workers=1)
    folder = image_folder(tmp_path, batch_size=6, shuffle=False, augment=False)
    images, _ = _collect(folder.dataset)
    for image, path in zip(images, folder.file_paths):
        reference = normalize_numpy(np.asarray(Image.open(path).convert("RGB")))
        # libjpeg builds differ in chroma upsampling by a few levels, never more on average
        assert np.abs(image - reference).mean() < 2.0 / 128


def test_flips_only_with_augment_and_seeded_order(tmp_path):
    expected = _make_lossless_folder(tmp_path, names=("a", "b", "c", "d"), per_identity=6)
    plain = image_folder(tmp_path, batch_size=4, shuffle=False, augment=False)
    images, _ = _collect(plain.dataset)
    for image, path in zip(images, plain.file_paths):
        assert np.array_equal(image, normalize_numpy(expected[path]))

    flipped = image_folder(tmp_path, batch_size=4, shuffle=False, augment=True, seed=5)
    images, _ = _collect(flipped.dataset)
    was_flipped = []
    for image, path in zip(images, flipped.file_paths):
        reference = normalize_numpy(expected[path])
        if np.array_equal(image, reference):
            was_flipped.append(False)
        else:
            np.testing.assert_array_equal(image, reference[:, ::-1])
            was_flipped.append(True)
    assert 0 < sum(was_flipped) < len(was_flipped)

    first = image_folder(tmp_path, batch_size=4, seed=11)
    second = image_folder(tmp_path, batch_size=4, seed=11)
    epoch_a, labels_a = _collect(first.dataset)
    epoch_b, labels_b = _collect(second.dataset)
    np.testing.assert_array_equal(epoch_a, epoch_b)
    np.testing.assert_array_equal(labels_a, labels_b)
    assert sorted(labels_a.tolist()) == sorted(first.labels.tolist())
    assert labels_a.tolist() != first.labels.tolist()  # shuffled
    _, labels_next = _collect(first.dataset)
    assert labels_next.tolist() != labels_a.tolist()  # reshuffled each pass
    other = image_folder(tmp_path, batch_size=4, seed=12)
    assert _collect(other.dataset)[1].tolist() != labels_a.tolist()


def test_repeat_and_other_sizes_are_resized(tmp_path):
    _make_lossless_folder(tmp_path, names=("a", "b"), per_identity=2)
    Image.fromarray(_pixels(7, size=150)).save(tmp_path / "a" / "large.png")
    folder = image_folder(tmp_path, batch_size=2, repeat=True)
    batches = list(folder.dataset.take(7))
    assert all(x.shape == (2, 112, 112, 3) for x, _ in batches)
    assert folder.num_resized() == 1
    assert "1 images were not 112x112 and were resized" in folder.report()


# ---- unreadable files ----------------------------------------------------------------------


@pytest.fixture
def corrupt_folder(tmp_path):
    expected = _make_lossless_folder(tmp_path, names=("a", "b", "c"), per_identity=3)
    write_synthetic_faces(tmp_path / "jpegs", num_identities=1, images_per_identity=1, workers=1)
    good_jpeg = (tmp_path / "jpegs" / "id_0000" / "000.jpg").read_bytes()
    bad = {
        tmp_path / "a" / "truncated.jpg": (good_jpeg[: len(good_jpeg) // 2], "truncated JPEG"),
        tmp_path / "b" / "text.jpg": (b"this is not an image at all", "not an image"),
        tmp_path / "c" / "empty.JPG": (b"", "empty file"),
    }
    for path, (data, _) in bad.items():
        path.write_bytes(data)
    (tmp_path / "c" / "readme.txt").write_text("identity c")
    import shutil

    shutil.rmtree(tmp_path / "jpegs")
    return tmp_path, expected, {str(p): reason for p, (_, reason) in bad.items()}


def test_unreadable_files_are_skipped_counted_and_named(corrupt_folder):
    root, expected, bad = corrupt_folder
    folder = image_folder(root, batch_size=3, shuffle=False, augment=False,
                          drop_remainder=False)
    assert folder.num_images == 12
    assert folder.skipped_files == [(str(root / "c" / "readme.txt"), "not an image file extension")]
    for epoch in (1, 2):
        images, labels = _collect(folder.dataset)
        good_paths = [p for p in folder.file_paths if p not in bad]
        assert images.shape[0] == len(good_paths) == 9
        for image, path in zip(images, good_paths):
            np.testing.assert_array_equal(image, normalize_numpy(expected[path]))
        records = folder.bad_records()
        assert sorted(records) == sorted(bad)
        for path, (count, reason) in records.items():
            assert count == epoch, path
            assert bad[path] in reason
    report = folder.report()
    assert "skipped 3 unreadable files" in report and "readme.txt" in report
    for path in bad:
        assert path in report


def test_bad_record_report_in_fit_under_mirrored_strategy(corrupt_folder):
    root, _, bad = corrupt_folder
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        folder = image_folder(root, batch_size=4, seed=0)
        model = keras.Sequential(
            [keras.Input((112, 112, 3)), keras.layers.GlobalAveragePooling2D(),
             keras.layers.Dense(folder.num_classes)]
        )
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    printed = []
    list_path = root / "run" / "bad_records.txt"
    report = BadRecordReport(folder, list_path=list_path, print_fn=printed.append)
    history = model.fit(folder.dataset, epochs=2, verbose=0, callbacks=[report])
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    epoch_lines = [m for m in printed if m.startswith("epoch ")]
    assert [m.split(":")[0] for m in epoch_lines] == ["epoch 1", "epoch 2"]
    for line in epoch_lines:
        assert "skipped 3 unreadable files" in line
        assert all(path in line for path in bad)
    assert any("readme.txt" in m for m in printed if not m.startswith("epoch "))
    assert [sorted(records) for _, records in report.history] == [sorted(bad)] * 2
    listed = [line.split("\t")[0] for line in list_path.read_text().splitlines()]
    assert sorted(listed) == sorted(bad)


def test_in_flight_counts_are_not_reported(tmp_path):
    from kerasface.data import BadRecordTracker

    good, bad = tmp_path / "good.png", tmp_path / "bad.jpg"
    Image.fromarray(_pixels(3)).save(good)
    bad.write_bytes(b"<html>404</html>")
    tracker = BadRecordTracker([str(good), str(bad)])
    # A file counted as "started" but not yet "done" when the report looks: decode it to see.
    tracker._pending.insert(tf.constant([0, 1], tf.int64), tf.constant([1, 2], tf.int64))
    records = tracker.bad_records()
    assert list(records) == [str(bad)]
    assert records[str(bad)][0] == 2 and "not an image" in records[str(bad)][1]
    tracker.reset()
    assert tracker.bad_records() == {}


def test_long_bad_lists_point_to_a_file(tmp_path):
    records = {f"/data/x/{i:02d}.jpg": (1, "empty file (0 bytes)") for i in range(25)}
    list_path = tmp_path / "bad.txt"
    message = describe_bad_records(records, max_listed=20, list_path=list_path)
    assert message.startswith("skipped 25 unreadable files: /data/x/00.jpg (empty file")
    assert "/data/x/19.jpg" in message and "/data/x/20.jpg" not in message
    assert f"5 more; full list in {list_path}" in message
    lines = list_path.read_text().splitlines()
    assert len(lines) == 25 and lines[24] == "/data/x/24.jpg\t1\tempty file (0 bytes)"
    assert describe_bad_records({}) == ""
    few = describe_bad_records(dict(list(records.items())[:2]), list_path=list_path)
    assert few.endswith("/data/x/01.jpg (empty file (0 bytes))")
    assert len(list_path.read_text().splitlines()) == 2


def test_diagnose_image_file(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(_pixels(1)).save(good)
    assert diagnose_image_file(good) is None
    assert "missing" in diagnose_image_file(tmp_path / "gone.jpg")
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 3])
    assert "truncated PNG" in diagnose_image_file(tmp_path / "cut.png")


# ---- synthetic faces -----------------------------------------------------------------------


def test_synthetic_faces_are_deterministic(tmp_path):
    write_synthetic_faces(tmp_path / "one", num_identities=3, images_per_identity=3, seed=4,
                          workers=1)
    write_synthetic_faces(tmp_path / "two", num_identities=3, images_per_identity=3, seed=4,
                          workers=2)
    write_synthetic_faces(tmp_path / "three", num_identities=3, images_per_identity=3, seed=5,
                          workers=1)
    files = sorted(os.path.relpath(os.path.join(d, f), tmp_path / "one")
                   for d, _, fs in os.walk(tmp_path / "one") for f in fs)
    assert files == [f"id_{i:04d}/{j:03d}.jpg" for i in range(3) for j in range(3)]
    for rel in files:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes()
        assert (tmp_path / "one" / rel).read_bytes() != (tmp_path / "three" / rel).read_bytes()
    with Image.open(tmp_path / "one" / files[0]) as image:
        assert image.size == (112, 112) and image.mode == "RGB"
    with pytest.raises(ValueError, match="`images_per_identity` must be an int >= 1, got 0"):
        write_synthetic_faces(tmp_path / "x", images_per_identity=0)


def test_synthetic_identities_are_closer_to_themselves():
    features, identity = [], []
    for i in range(6):
        for j in range(5):
            face = synthetic_face(i, j).astype(np.float32)[28:100, 24:88]
            features.append(((face - face.mean()) / face.std()).ravel())
            identity.append(i)
    features, identity = np.asarray(features), np.asarray(identity)
    distances = ((features[:, None] - features[None]) ** 2).mean(-1)
    same = (identity[:, None] == identity[None]) & ~np.eye(len(identity), dtype=bool)
    different = identity[:, None] != identity[None]
    assert distances[same].mean() < 0.95 * distances[different].mean()
    # ...but not trivially: images of one identity are not copies of each other
    assert distances[same].min() > 0.1


def test_synthetic_pairs_file(tmp_path):
    from kerasface.evaluation.pairs_file import read_pairs

    write_synthetic_faces(tmp_path / "val", num_identities=24, images_per_identity=3, workers=1)
    pairs_path = write_synthetic_pairs(tmp_path / "val", tmp_path / "pairs.txt", num_pairs=100)
    lines = [line.split() for line in open(pairs_path).read().splitlines()]
    assert len(lines) == 100 and all(len(fields) == 3 for fields in lines)
    folds_identities = []
    for fold in range(10):
        block = lines[10 * fold: 10 * (fold + 1)]
        assert [f[2] for f in block] == ["1"] * 5 + ["0"] * 5
        identities = set()
        for a, b, issame in block:
            assert (tmp_path / "val" / a).is_file() and (tmp_path / "val" / b).is_file()
            assert a != b
            assert (a.split("/")[0] == b.split("/")[0]) == (issame == "1")
            identities.update([a.split("/")[0], b.split("/")[0]])
        folds_identities.append(identities)
    for i in range(10):
        for j in range(i + 1, 10):
            assert not folds_identities[i] & folds_identities[j]  # person-disjoint folds
    pairs = {tuple(sorted(f[:2])) for f in lines}
    assert len(pairs) == 100
    parsed = read_pairs(pairs_path, root=tmp_path / "val")
    assert len(parsed) == 100 and parsed.num_folds == 10 and parsed.issame.sum() == 50
    with pytest.raises(ValueError, match="multiple of 2 \\* num_folds = 20.*got 610"):
        write_synthetic_pairs(tmp_path / "val", tmp_path / "p.txt", num_pairs=610)


def test_make_synthetic_dataset_is_idempotent(tmp_path):
    kwargs = dict(train_identities=3, val_identities=4, images_per_identity=2, num_pairs=20,
                  workers=1)
    made = make_synthetic_dataset(tmp_path / "syn", **kwargs)
    assert made.generated and os.path.isfile(made.val_pairs)
    train_ids, val_ids = sorted(os.listdir(made.train_dir)), sorted(os.listdir(made.val_dir))
    assert train_ids == ["id_0000", "id_0001", "id_0002"]
    assert val_ids == ["id_0003", "id_0004", "id_0005", "id_0006"]
    stamp = os.path.getmtime(os.path.join(made.train_dir, "id_0000", "000.jpg"))
    again = make_synthetic_dataset(tmp_path / "syn", **kwargs)
    assert not again.generated
    assert os.path.getmtime(os.path.join(made.train_dir, "id_0000", "000.jpg")) == stamp
    changed = make_synthetic_dataset(tmp_path / "syn", **{**kwargs, "train_identities": 2})
    assert changed.generated and sorted(os.listdir(changed.train_dir)) == ["id_0000", "id_0001"]
    assert sorted(os.listdir(changed.val_dir))[0] == "id_0002"
    assert os.path.isfile(tmp_path / "syn" / MARKER_FILE)

    foreign = tmp_path / "foreign"
    (foreign / "train").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="no .kerasface_synthetic.json"):
        make_synthetic_dataset(foreign, **kwargs)
    folder = image_folder(made.train_dir, batch_size=2)
    assert folder.num_classes == 2 and folder.num_images == 4


@pytest.mark.slow
def test_synthetic_generation_speed(tmp_path):
    # CPU seconds (this process and its workers) rather than wall time, so that other jobs on
    # the machine don't make it flaky: under 40 CPU-s is under 20 s on 2 free cores.
    before = os.times()
    write_synthetic_faces(tmp_path, num_identities=200, images_per_identity=20)
    after = os.times()
    cpu = sum(getattr(after, f) - getattr(before, f)
              for f in ("user", "system", "children_user", "children_system"))
    assert cpu < 40, f"drawing 4000 faces took {cpu:.1f} CPU-seconds"


# ---- real data -----------------------------------------------------------------------------


def test_celeba_dev_train_folder():
    root = require_shared("data/celeba_dev/train")
    folder = image_folder(root, batch_size=128)
    assert folder.num_classes == 150 and folder.num_images == 3151
    assert isinstance(folder, ImageFolder)
    images, labels = next(iter(folder.dataset))
    assert images.shape == (128, 112, 112, 3) and labels.shape == (128,)
    assert labels.numpy().max() < 150
