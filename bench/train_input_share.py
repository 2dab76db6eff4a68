"""Training throughput and the share of step time spent waiting for input.

Runs the same compiled model alternately on (A) the real ``FacePipeline`` over a source
(identity folders, TFRecords or RecordIO, see ``kerasface.data.open_source``) and (B) a
single cached batch repeated in memory (zero input cost), ``--rounds`` times each, and reports
the medians. Step-time ratio = time(A) / time(B) (target <= 1.05); input-wait share =
1 - time(B) / time(A): the step time the pipeline adds.

    python bench/train_input_share.py --root ../shared/data/celeba_dev/train --batch-size 128
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--root",
        default=None,
        help="training data: identity folders, a TFRecord dir or a RecordIO (default: synthetic faces)",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--augment", default="flip=0.5", help="FaceAugmentation spec for the real pipeline (default flip=0.5)"
    )
    parser.add_argument("--steps", type=int, default=8, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="A/B alternations")
    parser.add_argument("--embedding-size", type=int, default=128)
    parser.add_argument("--jit-compile", action="store_true")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    import dataclasses

    import keras
    import tensorflow as tf

    from kerasface.data.face_pipeline import FacePipeline
    from kerasface.data.open_source import open_source
    from kerasface.recipe import Recipe, apply_overrides
    from kerasface.training import build_face_recognizer
    from kerasface.training.train_model import resolve_train_root

    recipe = apply_overrides(Recipe(), [f"model.embedding_size={args.embedding_size}", "head.scale=32.0"])
    if args.root:
        recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, root=args.root))
    source = open_source(resolve_train_root(recipe))
    pipeline = FacePipeline(source, batch_size=args.batch_size, augmentation=args.augment, repeat=True)
    model = build_face_recognizer(recipe, source.num_classes)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9, weight_decay=5e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=args.jit_compile,
    )
    real = pipeline.dataset
    cached = real.take(1).cache().repeat()

    # One fit step builds the model and optimizer; then both variants run the same compiled
    # train function on one persistent iterator each, so no fit() start-up is timed.
    model.fit(real, epochs=1, steps_per_epoch=1, verbose=0)
    train_function = model.make_train_function()
    iterators = {"real": iter(real), "cached": iter(cached)}

    def timed(name):
        iterator = iterators[name]
        start = time.perf_counter()
        for _ in range(args.steps):
            logs = train_function(iterator)
        float(logs["loss"])
        return (time.perf_counter() - start) / args.steps

    timed("real"), timed("cached")  # trace and warm up both paths
    real_times, cached_times = [], []
    for _ in range(args.rounds):
        real_times.append(timed("real"))
        cached_times.append(timed("cached"))
    real_step, cached_step = statistics.median(real_times), statistics.median(cached_times)
    result = {
        "source": repr(source),
        "augmentation": repr(pipeline.augmentation),
        "batch_size": args.batch_size,
        "steps_per_measurement": args.steps,
        "rounds": args.rounds,
        "real_pipeline_s_per_step": real_step,
        "cached_batch_s_per_step": cached_step,
        "images_per_second": args.batch_size / real_step,
        "step_time_ratio": real_step / cached_step,
        "input_wait_share": max(0.0, 1.0 - cached_step / real_step),
        "real_times": real_times,
        "cached_times": cached_times,
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "jit_compile": args.jit_compile,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
