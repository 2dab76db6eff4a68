"""Images per second delivered by kerasface.data.image_folder (no model, input only).

    python bench/data_throughput.py --root ../shared/data/celeba_dev/train

Iterates the training pipeline (batch 128, augment, shuffle) for a few epochs and prints the
per-epoch rate and the median. Compare with the training step rate of a model: when the
pipeline is several times faster, training never waits on input.
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def measure(root, batch_size=128, epochs=2, augment=True, seed=0):
    """``{"rates": [img/s per epoch], "median": ..., "images_per_epoch": ...}``."""
    from kerasface.data import image_folder

    folder = image_folder(root, batch_size=batch_size, augment=augment, seed=seed)
    rates, counts = [], []
    for _ in range(epochs):
        start = time.perf_counter()
        images = 0
        for batch, _ in folder.dataset:
            images += int(batch.shape[0])
        elapsed = time.perf_counter() - start
        rates.append(images / elapsed)
        counts.append(images)
    return {
        "root": folder.root,
        "num_images": folder.num_images,
        "num_classes": folder.num_classes,
        "batch_size": batch_size,
        "augment": augment,
        "images_per_epoch": counts[-1],
        "rates": [round(rate, 1) for rate in rates],
        "median": round(statistics.median(rates), 1),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="folder of identity sub-folders of images")
    parser.add_argument(
        "--batch-size", type=int, default=128, help="images per batch (default 128)"
    )
    parser.add_argument("--epochs", type=int, default=2, help="passes to time (default 2)")
    parser.add_argument("--no-augment", action="store_true", help="turn off random flips")
    parser.add_argument("--json", help="also write the result as JSON to this file")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    result = measure(args.root, args.batch_size, args.epochs, augment=not args.no_augment)
    for epoch, rate in enumerate(result["rates"], start=1):
        print(f"epoch {epoch}: {rate:.0f} images/s")
    print(
        f"median {result['median']:.0f} images/s over {result['images_per_epoch']} images/epoch "
        f"({result['num_classes']} identities, batch {result['batch_size']}, "
        f"{result['cpu_count']} CPUs, load average {result['load_average_1min']})"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
