"""Train MobileFaceNet from scratch with each margin head, same steps, and verify on pairs.

For every head (paper defaults, unless ``--set``), one fresh ``kerasface train`` run from the
same seed and initial weights: same data order, schedule and step count. Then 10-fold
verification accuracy and TAR@FAR=1e-2 on the val pairs, whether the loss went NaN/inf, and
the per-epoch losses. Each head runs in its own subprocess (a crash is recorded, not fatal);
results accumulate in ``--json`` and heads already there are skipped, so rerunning resumes.

    python bench/head_comparison.py --data ../shared/data/celeba_dev --epochs 2 \
        --steps-per-epoch 40 --json docs/head_comparison.json
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Heads left out of the default list, with the reason printed in the report.
NOT_COMPARED = {
    "dataset_aware": "a wrapper for multi-dataset training; celeba_dev is one dataset",
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/celeba_dev",
                        help="folder with train/, val/ and val_pairs.txt")
    parser.add_argument("--heads", nargs="+", help="registered head names (default: every head)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps-per-epoch", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--embedding-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs-dir", default="runs/head_comparison", help="one training run per head")
    parser.add_argument("--json", default="docs/head_comparison.json", help="results, appended per head")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _run_one(args, args.child)

    from kerasface import heads

    names = args.heads or [name for name in heads.list() if name not in NOT_COMPARED]
    results_path = Path(args.json)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name in names:
        if name in results:
            print(f"{name}: already in {results_path}, skipped")
            continue
        started = time.time()
        proc = subprocess.run([sys.executable, __file__, *(argv or sys.argv[1:]), "--child", name],
                              capture_output=True, text=True)
        line = [text for text in proc.stdout.splitlines() if text.startswith("RESULT ")]
        if proc.returncode or not line:
            result = {"error": (proc.stderr or proc.stdout).strip().splitlines()[-5:]}
        else:
            result = json.loads(line[-1][len("RESULT "):])
        result["wall_s"] = round(time.time() - started, 1)
        results[name] = result
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=2) + "\n")
        print(_row(name, result), flush=True)
    print(_table(results, args))
    for name, reason in NOT_COMPARED.items():
        print(f"not compared: {name}: {reason}")
    return 0


def _run_one(args, name):
    import keras
    import numpy as np

    from kerasface.evaluation.verification import verify_pairs
    from kerasface.recipe import DataConfig, HeadConfig, ModelConfig, OptimizerConfig, Recipe, TrainConfig
    from kerasface.training import train

    data = Path(args.data)
    recipe = Recipe(
        name=f"compare_{name}",
        data=DataConfig(root=str(data / "train"), batch_size=args.batch_size),
        model=ModelConfig(backbone="mobilefacenet", embedding_size=args.embedding_size),
        head=HeadConfig(name=name, scale=None, margin=None),
        optimizer=OptimizerConfig(lr=args.lr, schedule="cosine", warmup_epochs=0.25),
        train=TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, seed=args.seed),
    )
    result = train(recipe, Path(args.runs_dir) / name, verbose=0, print_fn=lambda *a: None,
                   extra_callbacks=[keras.callbacks.TerminateOnNaN()])
    losses = [float(value) for value in result.history.get("loss", [])]
    diverged = any(not math.isfinite(value) for value in losses)
    out = {"losses": losses, "diverged": diverged, "images_per_second": result.images_per_second,
           "head_config": {k: v for k, v in result.model.head.get_config().items()
                           if k not in ("name", "trainable", "dtype", "kernel_initializer", "kernel_regularizer")}}
    if not diverged:
        verification = verify_pairs(result.model.embedding_model, data / "val_pairs.txt", root=data / "val")
        summary = verification.to_dict()
        out["accuracy"] = summary["accuracy"]
        out["accuracy_std"] = summary["accuracy_std"]
        point = verification.tar_at_far.get(1e-2)
        out["tar_at_far_1e-2"] = None if point is None or point.tar is None else float(point.tar)
        out["auc"] = summary.get("auc")
    print("RESULT " + json.dumps(out, default=lambda value: np.asarray(value).tolist()), flush=True)
    return 0


def _row(name, result):
    if "error" in result:
        return f"| {name} | error: {' / '.join(result['error'])[-200:]} |"
    losses = " -> ".join(f"{value:.2f}" for value in result["losses"])
    if result["diverged"]:
        return f"| {name} | diverged (NaN/inf loss) | | | {losses} |"
    tar = result.get("tar_at_far_1e-2")
    return (f"| {name} | {100 * result['accuracy']:.2f} ± {100 * result['accuracy_std']:.2f} | "
            f"{'n/a' if tar is None else f'{100 * tar:.2f}'} | no | {losses} |")


def _table(results, args):
    lines = [
        f"MobileFaceNet-{args.embedding_size}, {args.epochs} x {args.steps_per_epoch} steps of "
        f"{args.batch_size}, SGD lr {args.lr} cosine, seed {args.seed}",
        "| head | val_pairs accuracy % | TAR@FAR=1e-2 % | diverged | loss per epoch |",
        "|---|---|---|---|---|",
    ]
    return "\n".join([*lines, *(_row(name, result) for name, result in results.items())])


if __name__ == "__main__":
    sys.exit(main())
