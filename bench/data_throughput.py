"""Images per second of the training pipeline per source format vs plain JPEG decoding.

    python bench/data_throughput.py --root ../shared/data/celeba_dev/train --json docs/data_throughput.json

Converts the identity folders once into TFRecord shards and an insightface RecordIO (in a
temporary directory), then times, in interleaved rounds on the same machine:

* ``decode loop``: a Python loop decoding the JPEGs (already in memory) one by one with the
  pipeline's decoder - the plain loop the issue compares against;
* ``parallel decode``: the same JPEGs decoded by ``tf.data`` on every core, no file access,
  labels, shuffling or normalisation - the practical limit of any pipeline here;
* ``FacePipeline`` over each source (folder, TFRecord, RecordIO): shuffled epoch, batches of
  ``--batch-size``, random flips, uint8 output as training uses it (``kerasface train``
  normalises on the device); and once more over the folder with float32 normalised output.

Prints the medians and each pipeline's ratio to both baselines.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _rate(dataset):
    start = time.perf_counter()
    images = 0
    for batch in dataset:
        images += int((batch[0] if isinstance(batch, tuple) else batch).shape[0])
    return images / (time.perf_counter() - start)


def _decode_loop(blobs, decode):
    import tensorflow as tf

    start = time.perf_counter()
    for data in blobs:
        decode(tf.constant(data))
    return len(blobs) / (time.perf_counter() - start)


def convert_sources(root, work_dir, shards=4):
    """``{"folder": FolderSource, "tfrecord": TFRecordSource, "recordio": RecordIOSource}``."""
    from kerasface.data.folder_source import FolderSource
    from kerasface.data.record_io_source import RecordIOSource
    from kerasface.data.record_io_writer import write_insightface_record_io
    from kerasface.data.tfrecord_source import TFRecordSource
    from kerasface.data.tfrecord_writer import write_tfrecords

    folder = FolderSource(root)
    tfrecord_dir = os.path.join(work_dir, "tfrecord")
    write_tfrecords(folder, tfrecord_dir, shards=shards, shuffle_seed=0)
    recordio_dir = os.path.join(work_dir, "recordio")
    items = ((int(label), folder.read_bytes(i)) for i, label in enumerate(folder.labels))
    write_insightface_record_io(recordio_dir, items, num_classes=folder.num_classes)
    return {
        "folder": folder,
        "tfrecord": TFRecordSource(tfrecord_dir),
        "recordio": RecordIOSource(recordio_dir),
    }


def measure(root, batch_size=128, rounds=5, augment="flip=0.5", work_dir=None):
    import tensorflow as tf

    from kerasface.data.face_pipeline import FacePipeline
    from kerasface.data.preprocessing import decode_rgb

    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        sources = convert_sources(root, tmp)
        folder = sources["folder"]
        blobs = [folder.read_bytes(i) for i in range(folder.num_records)]
        decode = tf.function(decode_rgb)
        parallel = (
            tf.data.Dataset.from_tensor_slices(blobs)
            .map(decode_rgb, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )
        variants = {"decode loop": lambda: _decode_loop(blobs, decode), "parallel decode": lambda: _rate(parallel)}
        for name, source in sources.items():
            pipeline = FacePipeline(
                source, batch_size=batch_size, augmentation=augment, seed=0, normalize=False
            )
            variants[f"FacePipeline {name}"] = lambda d=pipeline.dataset: _rate(d)
        floats = FacePipeline(folder, batch_size=batch_size, augmentation=augment, seed=0)
        variants["FacePipeline folder, float32 output"] = lambda d=floats.dataset: _rate(d)
        for run in variants.values():  # warm up: trace, fill the page cache
            run()
        rates = {name: [] for name in variants}
        for _ in range(rounds):
            for name, run in variants.items():
                rates[name].append(run())
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return {
        "root": os.path.abspath(root),
        "num_images": folder.num_records,
        "num_classes": folder.num_classes,
        "batch_size": batch_size,
        "augmentation": augment,
        "rounds": rounds,
        "rates": {name: [round(r, 1) for r in values] for name, values in rates.items()},
        "median_images_per_s": {name: round(m, 1) for name, m in medians.items()},
        "ratio_to_decode_loop": {
            name: round(m / medians["decode loop"], 3) for name, m in medians.items()
        },
        "ratio_to_parallel_decode": {
            name: round(m / medians["parallel decode"], 3) for name, m in medians.items()
        },
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", required=True, help="folder of identity sub-folders of aligned faces")
    parser.add_argument("--batch-size", type=int, default=128, help="images per batch (default 128)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds (default 5)")
    parser.add_argument("--augment", default="flip=0.5", help="FaceAugmentation spec (default flip=0.5)")
    parser.add_argument("--work-dir", help="where the temporary TFRecord/RecordIO copies go")
    parser.add_argument("--json", help="also write the result as JSON to this file")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    result = measure(args.root, args.batch_size, args.rounds, args.augment, args.work_dir)
    print(f"{result['num_images']} images, batch {result['batch_size']}, {result['rounds']} rounds, "
          f"{result['cpu_count']} CPUs, load average {result['load_average_1min']}")
    print("| input | median images/s | vs decode loop | vs parallel decode |")
    print("|---|---|---|---|")
    for name, median in result["median_images_per_s"].items():
        print(
            f"| {name} | {median:,.0f} | {result['ratio_to_decode_loop'][name]:.2f} | "
            f"{result['ratio_to_parallel_decode'][name]:.2f} |"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
