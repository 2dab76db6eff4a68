"""DAIL's ablation (Table IV) on real faces: two datasets whose identities overlap.

``celeba_dev/train`` (150 identities) is split into dataset A (identities 1-100) and dataset B
(51-150). The 50 shared identities have their images split in two disjoint halves, one per
dataset, so each appears in both datasets under two labels: the ID-overlap of DAIL Fig. 2.
Then one fresh run per method, same seed, same backbone, same number of optimizer steps and
batch size (the same number of images seen):

    single_A     ArcFace on A alone
    naive        ArcFace over A+B as 200 classes
    DA           dataset-aware ArcFace (eq. 3-4)
    DA+GRL       + dataset classifier and gradient reversal (lambda=0.1) from 1/3 of the run
    DA+GRL+CD    + Crossing Dropout p=1e-4

Every multi-dataset run trains the dataset classifier G_d; without GRL its lambda stays 0, so
it only measures how well the dataset can be read from the embedding. Reported: val_pairs
10-fold accuracy and TAR@FAR=1e-2 (val identities are disjoint from train), G_d's training
accuracy over the last epoch, and a fresh held-out linear probe on the final embeddings
(logistic regression, 2-fold, images of shared and of single-dataset identities apart).

    python bench/dail_ablation.py --data ../shared/data/celeba_dev --json docs/dail_ablation.json

Runs go to ``--runs-dir``; a finished method already in ``--json`` is skipped, and an
interrupted one resumes from its last epoch.
"""

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

METHODS = {
    "single_A": {"datasets": "A", "overrides": ["dail.gradient_reversal=0.0"]},
    "naive": {"datasets": "AB", "overrides": ["dail.dataset_aware=False", "dail.gradient_reversal=0.0"]},
    "DA": {"datasets": "AB", "overrides": ["dail.crossing_dropout_p=0.0", "dail.gradient_reversal=0.0"]},
    "DA+GRL": {"datasets": "AB", "overrides": ["dail.crossing_dropout_p=0.0", "dail.gradient_reversal=0.1"]},
    "DA+GRL+CD": {"datasets": "AB", "overrides": ["dail.crossing_dropout_p=0.0001", "dail.gradient_reversal=0.1"]},
}

# The small-CPU preset on top of recipes/dail.py: from scratch (no MS1M model to fine-tune),
# so a larger LR with cosine decay and the softer s/m that converge in a few epochs.
PRESET = [
    "model.backbone=mobilenet_v1",
    "model.embedding_size=128",
    "model.backbone_kwargs={'width_multiplier': 0.5}",
    "head.scale=32.0",
    "head.margin=0.3",
    "optimizer.lr=0.1",
    "optimizer.schedule=cosine",
    "optimizer.warmup_epochs=1.0",
    "data.augmentation=flip=0.5",
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/celeba_dev", help="folder with train/, val/ and val_pairs.txt")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps-per-epoch", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights, data order and dropout")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the A/B image split of shared identities")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra recipe override for every method (after the preset)")
    parser.add_argument("--runs-dir", default="runs/dail_ablation")
    parser.add_argument("--json", default="docs/dail_ablation.json", help="results, one entry per method")
    parser.add_argument("--summarize", nargs="+", metavar="JSON",
                        help="instead of training: combine the --json files of several seeds into --json and "
                        "print each method's mean and spread over seeds")
    parser.add_argument("--rescore", action="store_true",
                        help="instead of training: add the overlap diagnostics to the finished runs in --json")
    args = parser.parse_args(argv)
    if args.rescore:
        return rescore(args.json, Path(args.runs_dir), Path(args.runs_dir) / "split") or 0
    if args.summarize:
        combined = summarize([json.loads(Path(path).read_text()) for path in args.summarize])
        Path(args.json).write_text(json.dumps(combined, indent=2))
        print(format_seed_table(combined))
        return 0

    import keras

    from kerasface.data import split_overlapping
    from kerasface.recipe import apply_overrides, load_recipe
    from kerasface.training import train

    data = Path(args.data)
    runs = Path(args.runs_dir)
    split_dir = runs / "split"
    if not (split_dir / "split.json").is_file():
        split = split_overlapping(data / "train", split_dir, shared_fraction=1 / 3, seed=args.split_seed)
        print(f"split: A {split.num_images[0]} images, B {split.num_images[1]} images, "
              f"{len(split.shared)} shared identities")
    split = json.loads((split_dir / "split.json").read_text())
    roots = {"A": str(split_dir / "A"), "B": str(split_dir / "B")}

    results_path = Path(args.json)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results.setdefault("methods", {})
    results["command"] = "python bench/dail_ablation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results["setup"] = {
        "split": {k: split[k] for k in ("num_images", "dropped")} | {
            "shared": len(split["shared"]), "only_a": len(split["only_a"]), "only_b": len(split["only_b"])},
        "epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch, "batch_size": args.batch_size,
        "seed": args.seed, "split_seed": args.split_seed, "preset": PRESET + args.overrides,
    }
    base = apply_overrides(load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "dail.py"), PRESET)
    base = apply_overrides(base, [
        f"train.epochs={args.epochs}", f"train.steps_per_epoch={args.steps_per_epoch}",
        f"data.batch_size={args.batch_size}", f"train.seed={args.seed}", *args.overrides,
    ])
    for method in args.methods:
        if method in results["methods"]:
            print(f"{method}: already in {results_path}, skipped")
            continue
        spec = METHODS[method]
        recipe = apply_overrides(base, spec["overrides"])
        chosen = tuple(roots[name] for name in spec["datasets"])
        recipe = dataclasses.replace(recipe, name=f"dail_{method}",
                                     data=dataclasses.replace(recipe.data, root=chosen if len(chosen) > 1 else chosen[0]))
        started = time.time()
        result = train(recipe, run_dir_of(runs, method), verbose=2)
        entry = _evaluate(result, data, split_dir, split)
        entry["train_seconds"] = round(time.time() - started, 1)
        results["methods"][method] = entry
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=2))
        print(f"{method}: {json.dumps(entry)}")
        keras.backend.clear_session()
    print(format_table(results))
    return 0


def _evaluate(result, data, split_dir, split):
    from kerasface.evaluation import embed_images, verify_pairs

    embedding = result.model.embedding_model
    verification = verify_pairs(embedding, data / "val_pairs.txt", root=data / "val")
    point = verification.tar_at_far.get(1e-2)
    entry = {
        "accuracy": verification.accuracy,
        "accuracy_std": verification.accuracy_std,
        "tar_at_far_1e-2": None if point is None else point.tar,
        "auc": verification.auc,
    }
    history = result.history
    for key in ("dataset_accuracy", "identity_accuracy", "accuracy", "loss", "grl_lambda"):
        if key in history:
            entry[f"last_epoch_{key}"] = float(history[key][-1])
    # Held-out linear probe: can the dataset be read from the final embedding?
    files, datasets, shared = training_images(split_dir, split["shared"])
    features = embed_images(embedding, files, batch_size=128)
    entry["probe"] = linear_probe(features, datasets, shared)
    if (Path(result.out_dir) / "label_map_1.json").is_file():
        entry["overlap"] = overlap_diagnostics(result.model, features, files, datasets, result.out_dir)
    return entry


def training_images(split_dir, shared_identities):
    """Every image of A then B: paths, dataset index (0/1) and whether its identity is shared."""
    import numpy as np

    files, datasets, shared = [], [], []
    shared_identities = set(shared_identities)
    for k, name in enumerate(("A", "B")):
        for identity in sorted(os.listdir(split_dir / name)):
            for image in sorted(os.listdir(split_dir / name / identity)):
                files.append(str(split_dir / name / identity / image))
                datasets.append(k)
                shared.append(identity in shared_identities)
    return files, np.array(datasets), np.array(shared)


def run_dir_of(runs, method):
    """The training run folder of a method (``+`` is not kept in folder names)."""
    return Path(runs) / method.replace("+", "_")


def overlap_diagnostics(model, features, files, datasets, run_dir):
    """How the model treats the shared identities, each trained under two labels.

    ``twin_centre_cosine``: cosine between the head's two class centres of the same person
    (its A label and its B label); a naive softmax pushes them apart. ``cross_dataset_genuine``:
    mean cosine between a shared person's A images and B images; ``within_dataset_genuine``:
    between two images of the same person inside one dataset; ``impostor``: between
    different people (all training images).
    """
    import keras
    import numpy as np

    identities = [Path(path).parent.name for path in files]
    label_maps = [json.loads((Path(run_dir) / f"label_map_{k}.json").read_text()) for k in (0, 1)]
    shared = sorted(set(label_maps[0]) & set(label_maps[1]))
    entry = {}
    kernel = getattr(model.head, "kernel", None)
    if kernel is not None and len(label_maps[0]) + len(label_maps[1]) == kernel.shape[-1]:
        centres = np.asarray(keras.ops.convert_to_numpy(kernel), np.float64)
        centres /= np.linalg.norm(centres, axis=0, keepdims=True)
        offset = len(label_maps[0])
        twins = [float(centres[:, label_maps[0][name]] @ centres[:, offset + label_maps[1][name]]) for name in shared]
        entry["twin_centre_cosine"] = float(np.mean(twins))
        others = centres.T @ centres
        np.fill_diagonal(others, np.nan)
        entry["other_centre_cosine"] = float(np.nanmean(others))
    sims = features @ features.T
    same_person = np.equal.outer(np.array(identities), np.array(identities))
    same_dataset = np.equal.outer(datasets, datasets)
    upper = np.triu(np.ones_like(sims, bool), k=1)
    entry["cross_dataset_genuine"] = float(sims[upper & same_person & ~same_dataset].mean())
    entry["within_dataset_genuine"] = float(sims[upper & same_person & same_dataset].mean())
    entry["impostor"] = float(sims[upper & ~same_person].mean())
    return entry


def rescore(results_path, runs, split_dir):
    """Add the overlap diagnostics to finished runs of ``results_path`` (reloads their models)."""
    import keras

    from kerasface.evaluation import embed_images

    results = json.loads(Path(results_path).read_text())
    files, datasets, _ = training_images(split_dir, ())
    for method, entry in results["methods"].items():
        run_dir = run_dir_of(runs, method)
        if not (run_dir / "label_map_1.json").is_file() or not (run_dir / "model.keras").is_file():
            continue
        model = keras.saving.load_model(run_dir / "model.keras", compile=False)
        features = embed_images(model.embedding_model, files, batch_size=128)
        entry["overlap"] = overlap_diagnostics(model, features, files, datasets, run_dir)
        print(f"{method}: {entry['overlap']}")
    Path(results_path).write_text(json.dumps(results, indent=2))


def linear_probe(features, targets, shared, seed=0, steps=300, lr=0.5):
    """2-fold held-out accuracy of logistic regression predicting ``targets`` from ``features``.

    Returns accuracy over all images, over images of shared identities and of the others.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(targets))
    folds = [order[: len(order) // 2], order[len(order) // 2:]]
    correct = np.zeros(len(targets), bool)
    for train_idx, test_idx in ((folds[0], folds[1]), (folds[1], folds[0])):
        x = np.hstack([features[train_idx], np.ones((len(train_idx), 1), np.float32)])
        y = targets[train_idx].astype(np.float64)
        w = np.zeros(x.shape[1])
        for _ in range(steps):  # full-batch gradient descent on the logistic loss
            p = 1.0 / (1.0 + np.exp(-(x @ w)))
            w -= lr * (x.T @ (p - y) / len(y) + 1e-4 * w)
        xt = np.hstack([features[test_idx], np.ones((len(test_idx), 1), np.float32)])
        correct[test_idx] = ((xt @ w) > 0) == (targets[test_idx] == 1)
    return {
        "accuracy": float(correct.mean()),
        "accuracy_shared_identities": float(correct[shared].mean()),
        "accuracy_single_dataset_identities": float(correct[~shared].mean()),
        "chance": float(max(targets.mean(), 1 - targets.mean())),
    }


def format_table(results):
    lines = [
        "| method | val_pairs accuracy | TAR@FAR=1e-2 | G_d train acc. (last epoch) | probe acc.: all / shared ids / single-dataset ids |",
        "|---|---:|---:|---:|---:|",
    ]
    for method, entry in results["methods"].items():
        probe = entry.get("probe") or {}
        gd = entry.get("last_epoch_dataset_accuracy")
        tar = entry.get("tar_at_far_1e-2")
        lines.append(
            f"| {method} | {100 * entry['accuracy']:.2f} ± {100 * entry['accuracy_std']:.2f} | "
            f"{'—' if tar is None else f'{100 * tar:.2f}'} | {'—' if gd is None else f'{100 * gd:.1f}'} | "
            f"{100 * probe.get('accuracy', float('nan')):.1f} / {100 * probe.get('accuracy_shared_identities', float('nan')):.1f}"
            f" / {100 * probe.get('accuracy_single_dataset_identities', float('nan')):.1f} |"
        )
    return "\n".join(lines)


def summarize(runs):
    """Per method: every seed's metrics, and their mean, sample std and min/max."""
    from kerasface.benchmark import summarize_seeds

    return summarize_seeds(runs, {
        "accuracy": lambda e: e["accuracy"],
        "tar_at_far_1e-2": lambda e: e["tar_at_far_1e-2"],
        "dataset_accuracy": lambda e: e.get("last_epoch_dataset_accuracy"),
        "probe_accuracy": lambda e: e["probe"]["accuracy"],
        "probe_single_dataset_identities": lambda e: e["probe"]["accuracy_single_dataset_identities"],
    })


def format_seed_table(combined):
    from kerasface.benchmark import format_seed_cell

    def cell(stats, key):
        return format_seed_cell(stats.get(key))

    lines = [
        "| method | val_pairs accuracy, mean ± std over seeds (min–max) | TAR@FAR=1e-2 | G_d train acc. | probe acc., single-dataset ids |",
        "|---|---:|---:|---:|---:|",
    ]
    for method, stats in combined["summary"].items():
        lines.append(f"| {method} | {cell(stats, 'accuracy')} | {cell(stats, 'tar_at_far_1e-2')} | "
                     f"{cell(stats, 'dataset_accuracy')} | {cell(stats, 'probe_single_dataset_identities')} |")
    keys = ("twin_centre_cosine", "other_centre_cosine", "cross_dataset_genuine", "within_dataset_genuine", "impostor")
    lines += [
        "",
        "| method, seed | twin centres | other centres | shared person across A/B | same person within a dataset | different people |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run in combined["runs"]:
        for method, entry in run["methods"].items():
            if "overlap" in entry:
                values = " | ".join(f"{entry['overlap'][key]:.3f}" for key in keys)
                lines.append(f"| {method}, {run['setup']['seed']} | {values} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
