"""``kerasface quickstart``: train, evaluate, export and verify a face model in one go."""

import dataclasses
import json
import os
import time
from pathlib import Path

from kerasface.recipe import DataConfig, HeadConfig, ModelConfig, OptimizerConfig, Recipe, TrainConfig, apply_overrides

# Sized to finish in under 10 minutes on a 2-core CPU (MobileFaceNet trains at ~5-9 images/s
# there): the point is the whole path, not state-of-the-art accuracy.
QUICKSTART_RECIPE = Recipe(
    name="quickstart",
    data=DataConfig(batch_size=32, synthetic_identities=60, synthetic_images_per_identity=12),
    model=ModelConfig(backbone="mobilefacenet", embedding_size=128),
    head=HeadConfig(name="arcface", scale=32.0, margin=0.3),
    optimizer=OptimizerConfig(lr=0.1, schedule="cosine", warmup_epochs=0.5),
    train=TrainConfig(epochs=3),
)


def add_arguments(parser):
    parser.add_argument("--data", help="aligned 112x112 faces, one sub-folder per identity "
                        "(default: embedded synthetic identities, generated offline)")
    parser.add_argument("--pairs", help="verification pairs (`a b issame` lines or insightface .bin); "
                        "default: the synthetic validation pairs")
    parser.add_argument("--root", help="folder the pairs' paths are relative to")
    parser.add_argument("--calibration", help="faces for int8 calibration (default: the training faces)")
    parser.add_argument("--out", default="runs/quickstart", help="run directory (default: runs/quickstart)")
    parser.add_argument("--epochs", type=int, help=f"training epochs (default {QUICKSTART_RECIPE.train.epochs})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the quickstart recipe, e.g. --set optimizer.lr=0.05")


def run(args):
    from kerasface.budget import count_macs
    from kerasface.data.synthetic_faces import make_synthetic_dataset
    from kerasface.evaluation import verify_pairs
    from kerasface.export import export_model, open_runner
    from kerasface.training import train

    started = time.perf_counter()
    out = Path(args.out)
    recipe = apply_overrides(QUICKSTART_RECIPE, args.overrides)
    if args.epochs is not None:
        recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, epochs=args.epochs))
    if args.data:
        recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, root=args.data))
        pairs, root = args.pairs, args.root
    else:
        synthetic = make_synthetic_dataset(
            Path(os.path.expanduser(recipe.data.synthetic_dir)),
            train_identities=recipe.data.synthetic_identities,
            images_per_identity=recipe.data.synthetic_images_per_identity,
            seed=recipe.train.seed,
        )
        recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, root=synthetic.train_dir))
        pairs, root = args.pairs or synthetic.val_pairs, args.root or synthetic.val_dir
    if pairs and not Path(pairs).is_file():
        raise FileNotFoundError(f"--pairs {pairs}: no such file")

    print(f"[1/4] training ({recipe.train.epochs} epochs) into {out}")
    result = train(recipe, out, verbose=2)
    embedding_model = result.model.embedding_model
    cost = count_macs(embedding_model)

    print("[2/4] exporting SavedModel, TFLite fp32, TFLite int8, ONNX (each checked against Keras)")
    calibration = args.calibration or recipe.data.root
    export_dir = out / "export"
    exports = {
        "SavedModel": export_model(embedding_model, export_dir / "saved_model", "savedmodel", parity_images=calibration),
        "TFLite fp32": export_model(embedding_model, export_dir / "model_fp32.tflite", "tflite", parity_images=calibration),
        # Post-training int8 of MobileFaceNet can miss the 0.99 cosine bar (error builds up over
        # ~50 thin layers); the quickstart reports that and the int8 accuracy instead of stopping.
        "TFLite int8": export_model(embedding_model, export_dir / "model_int8.tflite", "tflite", quantize="int8",
                                    calibration=calibration, parity_images=calibration, raise_on_failure=False),
        "ONNX": export_model(embedding_model, export_dir / "model.onnx", "onnx", parity_images=calibration),
    }

    runners = {"Keras": embedding_model}
    for name in ("TFLite fp32", "TFLite int8", "ONNX"):
        runners[name] = open_runner(exports[name].path)

    accuracy = {}
    if pairs:
        print(f"[3/4] verification on {pairs}")
        for name, runner in runners.items():
            accuracy[name] = verify_pairs(runner, pairs, root)
            print(f"  {name:12s} {accuracy[name].accuracy * 100:6.2f}% +- {accuracy[name].accuracy_std * 100:.2f}")
    else:
        print("[3/4] no --pairs given: skipping verification")

    print("[4/4] per-face latency (batch 1, median, TFLite and ONNX Runtime on 1 thread)")
    latency = _latencies({
        "Keras": embedding_model,
        **{name: open_runner(exports[name].path, num_threads=1) for name in ("TFLite fp32", "TFLite int8", "ONNX")},
    })
    table = _summary_table(cost, exports, accuracy, latency, time.perf_counter() - started, result)
    print(table)
    (out / "quickstart.md").write_text(table + "\n")
    (out / "quickstart.json").write_text(json.dumps({
        "params": cost.params,
        "macs": cost.macs,
        "flops": cost.flops,
        "accuracy": {name: res.to_dict() for name, res in accuracy.items()},
        "latency_ms": {name: lat.median_ms for name, lat in latency.items()},
        "exports": {name: {"path": str(rep.path), "size_bytes": rep.size_bytes, "parity": rep.parity}
                    for name, rep in exports.items()},
        "train_images_per_second": result.images_per_second,
    }, indent=2, default=float))
    print(f"summary written to {out / 'quickstart.md'}")
    return 0


def _latencies(runners):
    import numpy as np

    from kerasface.benchmark import measure_latency

    face = np.random.default_rng(0).normal(0, 0.5, (1, 112, 112, 3)).astype("float32")
    results = {}
    for name, runner in runners.items():
        call = runner.predict_on_batch if name == "Keras" else runner
        results[name] = measure_latency(call, face, warmup=5, runs=50, max_seconds=10)
    return results


def _parity_text(report):
    parity = report.parity
    verdict = "ok" if report.passed else "FAILED"
    return f"min {parity['min_cosine']:.4f} / mean {parity['mean_cosine']:.4f} ({verdict})"


def _summary_table(cost, exports, accuracy, latency, seconds, result):
    from kerasface.budget import format_quantity

    rate = result.images_per_second
    trained = f"trained at {rate:.1f} images/s" if rate == rate else "resumed a finished run (no epochs trained now)"
    lines = [
        f"MobileFaceNet: {format_quantity(cost.params)} params, {format_quantity(cost.macs)} MACs, "
        f"{format_quantity(cost.flops)} FLOPs (batch 1); {trained}",
        "",
        "| model | accuracy (10-fold) | TAR@FAR=1e-2 | file size | latency/face (batch 1) | parity cosine vs Keras |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("Keras", "SavedModel", "TFLite fp32", "TFLite int8", "ONNX"):
        res = accuracy.get(name)
        acc = f"{res.accuracy * 100:.2f}% +- {res.accuracy_std * 100:.2f}" if res else "-"
        tar = res.tar_at_far.get(1e-2) if res else None
        tar_text = f"{tar.tar * 100:.2f}%" if tar is not None and tar.tar == tar.tar else "-"
        rep = exports.get(name)
        size = f"{rep.size_bytes / 1e6:.2f} MB" if rep else "-"
        lat = latency.get(name)
        lat_text = f"{lat.per_face_ms:.2f} ms" if lat else "-"
        parity = _parity_text(rep) if rep else "-"
        lines.append(f"| {name} | {acc} | {tar_text} | {size} | {lat_text} | {parity} |")
    lines.append("")
    failed = [name for name, rep in exports.items() if not rep.passed]
    if failed:
        lines.append(f"PARITY FAILED for {', '.join(failed)}: compare its accuracy with Keras above before shipping it.")
    lines.append(f"TFLite and ONNX Runtime ran single-threaded; Keras used TensorFlow's default threads. "
                 f"Total time {seconds / 60:.1f} min.")
    return "\n".join(lines)
