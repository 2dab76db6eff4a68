"""What each per-image stage of the input pipeline costs, by A/B variants of one tf.data stream.

    python bench/pipeline_costs.py --root ../shared/data/celeba_dev/train

Every variant reads the same files in the same shuffled order, decodes them on all cores and
batches them by 128; each adds one of FacePipeline's per-image stages to the plain
read+decode stream: the header check and its branch, the resize branch, the per-image flip,
the bad-record counters (dense scatter counters, as used outside a strategy scope, or the
hash table used inside one), and the float32 normalisation. Prints the median images/s of
interleaved rounds and each variant's rate relative to the plain stream.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _rate(dataset):
    start = time.perf_counter()
    images = 0
    for batch in dataset:
        images += int(batch.shape[0])
    return images / (time.perf_counter() - start)


def build_variants(root, batch_size=128):
    import tensorflow as tf

    from kerasface.data.bad_record_tracker import BadRecordTracker, looks_like_image
    from kerasface.data.face_pipeline import _to_image_size
    from kerasface.data.folder_source import FolderSource
    from kerasface.data.preprocessing import decode_rgb, normalize_images

    source = FolderSource(root)
    dense = BadRecordTracker(source)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        hashed = BadRecordTracker(source)  # under a strategy scope: the hash-table fallback
    order = tf.random.shuffle(tf.range(source.num_records, dtype=tf.int64), seed=1)

    def make(header=False, resize=False, flip=False, tracker=None, to_float=False):
        def load(position, index):
            begin = [tracker.begin(index)] if tracker is not None else []
            with tf.control_dependencies(begin):
                data = source.read(tf.reshape(index, [1]))[0]

            def decoded():
                image = decode_rgb(data)
                image.set_shape([None, None, 3])
                if tracker is not None:
                    image = tracker.end(index, image)
                return _to_image_size(image, index, dense) if resize else image

            if header:
                image = tf.cond(
                    looks_like_image(data), decoded, lambda: tf.zeros([112, 112, 3], tf.uint8)
                )
            else:
                image = decoded()
            if flip:
                draw = tf.random.stateless_uniform([], tf.stack([tf.constant(0, tf.int64), position]))
                image = tf.cond(draw < 0.5, lambda: tf.reverse(image, [1]), lambda: image)
            return tf.ensure_shape(image, [112, 112, 3])

        dataset = tf.data.Dataset.from_tensor_slices(order).enumerate()
        dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
        dataset = dataset.batch(batch_size, drop_remainder=True)
        if to_float:
            dataset = dataset.map(normalize_images, num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.prefetch(tf.data.AUTOTUNE)

    return {
        "read + decode": make(),
        "+ header check": make(header=True),
        "+ resize branch": make(resize=True),
        "+ flip": make(flip=True),
        "+ dense counters": make(tracker=dense),
        "+ hash-table counters": make(tracker=hashed),
        "+ float32 normalisation": make(to_float=True),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", required=True, help="folder of identity sub-folders of aligned faces")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved timed rounds (default 4)")
    args = parser.parse_args(argv)
    variants = build_variants(args.root)
    for dataset in variants.values():
        _rate(dataset)  # trace, warm the page cache
    rates = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, dataset in variants.items():
            rates[name].append(_rate(dataset))
    base = statistics.median(rates["read + decode"])
    print(f"{args.rounds} rounds, load average {os.getloadavg()[0]:.2f}")
    print("| variant | median images/s | vs read + decode |")
    print("|---|---|---|")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"| {name} | {median:,.0f} | {median / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
