"""LATSE's ablation (Table 4) on real faces with 20% injected label noise.

``celeba_dev/train`` (150 identities, 3151 faces) gets 20% symmetric label noise: 630 images,
chosen with ``--noise-seed``, are filed under another identity drawn uniformly
(``kerasface.data.inject_label_noise``; the list is in ``<runs>/noisy/noise.json``). Then one
fresh run per method, same seed, backbone, batch and number of steps (``recipes/latse.py
--preset small_cpu``):

    linearface    LinearFace alone (DLoss). Its seed-0 run is also the teacher (LATSE stage 1)
    ts_k1, ts_k3  + teacher-student filter, k = 1 / 3 (Algorithm 1, "embedding" mode)
    gen           + generative decoder and GLoss against the identity mean image
    ts_gen        + both, k = 3 (LATSE)
    ts_sface_k1   + filter by a third-party teacher: OpenCV's SFace, nearest-class scores
    linearface_x3 LinearFace for 3x the epochs: a better-trained teacher (and its own row)
    ts_x3teacher_k3  + filter by that teacher, k = 3

Reported: val_pairs 10-fold accuracy, TAR@FAR=1e-2 (val identities are disjoint from train),
the share of samples filtered during training (with augmentation) and, on the un-augmented
training images, the filter's precision (filtered samples that were noisy) and recall (noisy
samples filtered). The teacher's cost (one more run) is not in the students' budget.

    python bench/latse_ablation.py --data ../shared/data/celeba_dev --json docs/latse_ablation.json
    python bench/latse_ablation.py --filter-diagnostics   # filter P/R of every teacher checkpoint
    python bench/latse_ablation.py --grid docs/latse_reconstructions.png --grid-method ts_gen

A finished method already in ``--json`` is skipped; an interrupted one resumes from its last epoch.
"""

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SFACE = "../shared/models/opencv_zoo/face_recognition_sface_2021dec_int8bq.onnx"

METHODS = {
    "linearface": {"teacher": None, "overrides": ["latse.decoder=False"]},
    "ts_k1": {"teacher": "own", "overrides": ["latse.decoder=False", "latse.teacher_k=1"]},
    "ts_k3": {"teacher": "own", "overrides": ["latse.decoder=False", "latse.teacher_k=3"]},
    "gen": {"teacher": None, "overrides": ["latse.decoder=True"]},
    "ts_gen": {"teacher": "own", "overrides": ["latse.decoder=True", "latse.teacher_k=3"]},
    "ts_sface_k1": {"teacher": "sface", "overrides": [
        "latse.decoder=False", "latse.teacher_k=1", "latse.teacher_kwargs={'runtime': 'opencv'}"]},
    # A teacher trained three times longer (24 epochs), and the student it filters.
    "linearface_x3": {"teacher": None, "overrides": ["latse.decoder=False", "train.epochs=24"]},
    "ts_x3teacher_k3": {"teacher": "x3", "overrides": ["latse.decoder=False", "latse.teacher_k=3"]},
}
DEFAULT_METHODS = ["linearface", "ts_k1", "ts_k3", "gen", "ts_gen"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/celeba_dev", help="folder with train/, val/ and val_pairs.txt")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=DEFAULT_METHODS)
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and data order")
    parser.add_argument("--noise", type=float, default=0.2, help="share of mislabelled training images")
    parser.add_argument("--noise-seed", type=int, default=0, help="seed of which images are mislabelled, and how")
    parser.add_argument("--teacher", default=None,
                        help="teacher run directory (default: <runs-dir>/linearface_seed0, the seed-0 LinearFace run)")
    parser.add_argument("--sface", default=SFACE, help="SFace ONNX file for ts_sface_k1")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra recipe override for every method (after the small_cpu preset)")
    parser.add_argument("--runs-dir", default="runs/latse_ablation")
    parser.add_argument("--json", default="docs/latse_ablation.json", help="results, one entry per method")
    parser.add_argument("--summarize", nargs="+", metavar="JSON",
                        help="instead of training: combine the --json files of several seeds into --json")
    parser.add_argument("--filter-diagnostics", action="store_true",
                        help="instead of training: the filter's precision/recall for every checkpoint of the teacher")
    parser.add_argument("--grid", metavar="PNG", help="instead of training: save input/decoded/difference faces "
                        "of val identities at the early, middle and last checkpoints of --grid-method")
    parser.add_argument("--memory", action="store_true",
                        help="instead of training: the memory of the identity mean images at 10k/100k/1M identities")
    parser.add_argument("--costs", action="store_true",
                        help="instead of training: parameters and MACs of the student encoder and the decoder "
                        "(small_cpu preset and paper settings)")
    parser.add_argument("--ssim-timing", action="store_true",
                        help="instead of training: GLoss forward+backward time with tf.image.ssim and with "
                        "kerasface's SSIM, side by side (median of 5 runs, 64 images of 112x112)")
    parser.add_argument("--grid-method", default="ts_gen", choices=[m for m, s in METHODS.items() if "decoder=True" in
                                                                   " ".join(s["overrides"])])
    args = parser.parse_args(argv)
    if args.summarize:
        combined = summarize([json.loads(Path(path).read_text()) for path in args.summarize])
        Path(args.json).write_text(json.dumps(combined, indent=2))
        print(format_seed_table(combined))
        return 0

    if args.memory:
        return memory_table(Path(args.json))
    if args.costs:
        return model_costs(Path(args.json))
    if args.ssim_timing:
        return ssim_timing(Path(args.json))
    data = Path(args.data)
    runs = Path(args.runs_dir)
    noise = noisy_training_set(data, runs, args.noise, args.noise_seed)
    teacher = Path(args.teacher) if args.teacher else runs / "linearface_seed0"
    if args.filter_diagnostics:
        return filter_diagnostics(teacher, noise, Path(args.json))
    if args.grid:
        return save_grid(runs / f"{args.grid_method}_seed{args.seed}", data, Path(args.grid))

    import keras

    from kerasface.recipe import apply_overrides, load_recipe, preset_overrides
    from kerasface.training import train

    results_path = Path(args.json)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results.setdefault("methods", {})
    results.setdefault("filters", {})
    results["command"] = "python bench/latse_ablation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    recipe_path = REPO / "recipes" / "latse.py"
    preset = preset_overrides(recipe_path, "small_cpu")
    results["setup"] = {
        "noise": {"fraction": noise.fraction, "seed": noise.seed, "mislabelled": len(noise.moved),
                  "images": noise.num_images},
        "seed": args.seed, "teacher": str(teacher), "preset": preset + args.overrides,
    }
    base = apply_overrides(load_recipe(recipe_path), [*preset, f"train.seed={args.seed}", *args.overrides])
    base = dataclasses.replace(base, data=dataclasses.replace(base.data, root=str(noise.root)))
    for method in args.methods:
        if method in results["methods"]:
            print(f"{method}: already in {results_path}, skipped")
            continue
        spec = METHODS[method]
        x3_teacher = runs / "linearface_x3_seed0"
        teacher_path = {"own": str(teacher), "x3": str(x3_teacher), "sface": args.sface, None: None}[spec["teacher"]]
        for kind, needed, first in (("own", teacher, "linearface"), ("x3", x3_teacher, "linearface_x3")):
            if spec["teacher"] == kind and not (needed / "model.keras").is_file():
                raise SystemExit(f"{method}: the teacher {needed} is not trained yet; run the {first} method first "
                                 "(seed 0)" + (" or give --teacher" if kind == "own" else ""))
        recipe = apply_overrides(base, [*spec["overrides"], f"latse.teacher={teacher_path!r}"])
        recipe = dataclasses.replace(recipe, name=f"latse_{method}")
        started = time.time()
        result = train(recipe, runs / f"{method}_seed{args.seed}", verbose=2)
        entry = evaluate(result, data)
        entry["train_seconds"] = round(time.time() - started, 1)
        if teacher_path is not None:
            key = f"{Path(teacher_path).name}"
            if key not in results["filters"]:
                results["filters"][key] = filter_quality(teacher_path, noise, recipe.latse.teacher_kwargs)
            entry["filter"] = results["filters"][key][f"k{recipe.latse.teacher_k}"]
        results["methods"][method] = entry
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=2))
        print(f"{method}: {json.dumps(entry)}")
        keras.backend.clear_session()
    print(format_table(results))
    return 0


def noisy_training_set(data, runs, fraction, seed):
    """The noisy copy of ``data/train`` under ``runs/noisy`` (made once, then reused)."""
    from kerasface.data import NoisyLabels, inject_label_noise

    noisy_dir = runs / "noisy"
    if (noisy_dir / "noise.json").is_file():
        noise = NoisyLabels.load(noisy_dir)
        if (noise.fraction, noise.seed) != (fraction, seed):
            raise SystemExit(f"{noisy_dir} holds noise {noise.fraction} seed {noise.seed}, not {fraction} seed {seed}; "
                             "use another --runs-dir")
        return noise
    noise = inject_label_noise(data / "train", noisy_dir, fraction=fraction, seed=seed)
    print(f"label noise: {len(noise.moved)} of {noise.num_images} images mislabelled -> {noise.root}")
    return noise


def evaluate(result, data):
    from kerasface.evaluation import verify_pairs

    verification = verify_pairs(result.model.embedding_model, data / "val_pairs.txt", root=data / "val")
    point = verification.tar_at_far.get(1e-2)
    entry = {
        "accuracy": verification.accuracy,
        "accuracy_std": verification.accuracy_std,
        "tar_at_far_1e-2": None if point is None else point.tar,
        "auc": verification.auc,
    }
    history = result.history
    for key in ("filtered_fraction", "image_l1", "image_ssim", "accuracy", "identity_accuracy", "loss"):
        if key in history:
            entry[f"epoch_{key}"] = [round(float(v), 4) for v in history[key]]
    return entry


def filter_quality(teacher, noise, teacher_kwargs=None, ks=(1, 3)):
    """Precision/recall of the teacher's filter against the known noise, on un-augmented images."""
    import numpy as np

    from kerasface.data import FolderSource
    from kerasface.evaluation.embed_images import embed_images
    from kerasface.training import TeacherFilter

    source = FolderSource(noise.root)
    teacher_filter = TeacherFilter.from_model(teacher, k=1, num_classes=source.num_classes, source=source,
                                              label_map=source.label_map, **(teacher_kwargs or {}))
    features = embed_images(teacher_filter.embed, source.file_paths, batch_size=64)
    centres = np.asarray(teacher_filter.class_centres.numpy())
    scores = features @ centres.T
    labels = np.asarray(source.labels)
    ranks = (scores > scores[np.arange(len(labels)), labels][:, None]).sum(axis=1)
    noisy = np.array([noise.is_noisy(os.path.relpath(path, source.root)) for path in source.file_paths])
    out = {"description": teacher_filter.description, "noisy": int(noisy.sum()), "images": len(labels)}
    for k in ks:
        filtered = ranks >= k
        caught = int((filtered & noisy).sum())
        out[f"k{k}"] = {
            "filtered_fraction": float(filtered.mean()),
            "precision": caught / max(int(filtered.sum()), 1),
            "recall": caught / max(int(noisy.sum()), 1),
            "clean_filtered": int((filtered & ~noisy).sum()),
            "noisy_kept": int((~filtered & noisy).sum()),
        }
    return out


def filter_diagnostics(teacher, noise, results_path):
    """Filter quality of each teacher checkpoint: does the teacher memorise the noisy labels?"""
    checkpoints = sorted((teacher / "checkpoints").glob("epoch_*.keras"))
    if not checkpoints:
        raise SystemExit(f"{teacher}: no checkpoints/epoch_*.keras")
    rows = {}
    for checkpoint in checkpoints:
        rows[checkpoint.stem] = filter_quality(checkpoint, noise)
        print(checkpoint.stem, json.dumps({k: v for k, v in rows[checkpoint.stem].items() if k.startswith("k")}))
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results["teacher_checkpoints"] = rows
    results_path.write_text(json.dumps(results, indent=2))
    return 0


def save_grid(run_dir, data, path, identities=8):
    """Input / decoded / |difference| of one val face per identity, at three checkpoints of a run."""
    import keras
    import numpy as np
    from PIL import Image

    from kerasface.visualization import save_reconstruction_grid

    checkpoints = sorted((run_dir / "checkpoints").glob("epoch_*.keras"))
    if len(checkpoints) < 3:
        raise SystemExit(f"{run_dir}: need 3 or more checkpoints, found {len(checkpoints)}")
    chosen = [checkpoints[0], checkpoints[len(checkpoints) // 2 - 1], checkpoints[-1]]
    folders = sorted(p for p in (data / "val").iterdir() if p.is_dir())[:identities]
    files = [sorted(folder.glob("*.jpg"))[0] for folder in folders]
    faces = np.stack([np.asarray(Image.open(f).convert("RGB").resize((112, 112))) for f in files])
    decoded = []
    for checkpoint in chosen:
        model = keras.saving.load_model(checkpoint, compile=False)
        decoded.append(np.asarray(model.decode(faces)))
    names = [f"epoch {int(c.stem.split('_')[1])}" for c in chosen]
    save_reconstruction_grid(path, faces, decoded, names)
    print(f"{path}: {len(files)} val identities x {names}")
    return 0


def memory_table(results_path, identities=(10_000, 100_000, 1_000_000)):
    """Bytes of IdentityMeanImages state (images + counters) per storage choice, printed and saved."""
    from kerasface.layers import IdentityMeanImages

    rows = []
    for resolution in (112, 56):
        for dtype in ("uint8", "float16", "float32"):
            per_identity = IdentityMeanImages(1, resolution=resolution, storage_dtype=dtype).bytes_per_identity
            rows.append({"resolution": resolution, "dtype": dtype, "bytes_per_identity": per_identity,
                         **{str(n): per_identity * n for n in identities}})
    lines = ["| resolution | dtype | per identity | " + " | ".join(f"{n:,} identities" for n in identities) + " |",
             "|---|---|---:|" + "---:|" * len(identities)]
    for row in rows:
        sizes = " | ".join(_human(row[str(n)]) for n in identities)
        lines.append(f"| {row['resolution']} | {row['dtype']} | {row['bytes_per_identity'] / 1000:.1f} kB | {sizes} |")
    print("\n".join(lines))
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results["memory"] = rows
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=2))
    return 0


def model_costs(results_path):
    """Parameters and MACs (batch 1) of the encoder and decoder of both settings, from the traced graph."""
    from kerasface import backbones
    from kerasface.backbones.resnet_decoder import ResNetDecoder
    from kerasface.budget.flop_counter import count_macs
    from kerasface.recipe import apply_overrides, load_recipe, preset_overrides

    recipe_path = REPO / "recipes" / "latse.py"
    settings = {"paper": load_recipe(recipe_path)}
    settings["small_cpu"] = apply_overrides(settings["paper"], preset_overrides(recipe_path, "small_cpu"))
    costs = {}
    for name, recipe in settings.items():
        encoder = backbones.get(recipe.model.backbone, embedding_size=recipe.model.embedding_size,
                                **recipe.model.backbone_kwargs)
        decoder = ResNetDecoder(embedding_size=recipe.model.embedding_size, output_activation="sigmoid",
                                **recipe.latse.decoder_kwargs)
        for part, model in (("encoder", encoder), ("decoder", decoder)):
            cost = count_macs(model)
            costs[f"{name}/{part}"] = {"params": int(cost.params), "macs": int(cost.macs), "flops": int(cost.flops)}
            print(f"{name:9s} {part:7s} {cost.params / 1e6:7.2f}M params {cost.macs / 1e9:7.3f}G MACs")
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results["costs"] = costs
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=2))
    return 0


def ssim_timing(results_path, runs=5, batch=64):
    """Median seconds of one L1 + (1 - SSIM)/2 forward and backward pass, both SSIMs interleaved."""
    import numpy as np
    import tensorflow as tf

    from kerasface.losses import structural_similarity

    target = tf.random.uniform((batch, 112, 112, 3), seed=1)
    decoded = tf.random.uniform((batch, 112, 112, 3), seed=2)
    ssims = {"tf.image.ssim": lambda a, b: tf.image.ssim(a, b, max_val=1.0), "kerasface": structural_similarity}

    def step_for(ssim):
        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_mean(tf.abs(x - target)) + tf.reduce_mean((1.0 - ssim(target, x)) / 2.0)
            return tape.gradient(loss, x)
        return step

    steps = {name: step_for(ssim) for name, ssim in ssims.items()}
    times = {name: [] for name in steps}
    for step in steps.values():
        step(decoded)  # trace
    for _ in range(runs):
        for name, step in steps.items():
            started = time.perf_counter()
            step(decoded).numpy()
            times[name].append(time.perf_counter() - started)
    medians = {name: float(np.median(values)) for name, values in times.items()}
    ratio = medians["tf.image.ssim"] / medians["kerasface"]
    for name, value in medians.items():
        print(f"{name:14s} {value:.3f} s per {batch}-image batch (median of {runs})")
    print(f"tf.image.ssim / kerasface: {ratio:.1f}x")
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results["ssim_timing"] = {"batch": batch, "runs": runs, "median_seconds": medians, "ratio": ratio}
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=2))
    return 0


def _human(size):
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"


def format_table(results):
    lines = [
        "| method | val_pairs accuracy | TAR@FAR=1e-2 | filtered in training (last epoch) | filter precision / recall |",
        "|---|---:|---:|---:|---:|",
    ]
    for method, entry in results["methods"].items():
        tar = entry.get("tar_at_far_1e-2")
        online = entry.get("epoch_filtered_fraction")
        quality = entry.get("filter")
        pr = "—" if not quality else f"{100 * quality['precision']:.1f}% / {100 * quality['recall']:.1f}%"
        lines.append(
            f"| {method} | {100 * entry['accuracy']:.2f} ± {100 * entry['accuracy_std']:.2f} | "
            f"{'—' if tar is None else f'{100 * tar:.2f}'} | "
            f"{'—' if not online or not quality else f'{100 * online[-1]:.1f}%'} | "
            f"{pr} |"
        )
    return "\n".join(lines)


def summarize(runs):
    """Per method: every seed's accuracy and TAR, and their mean, sample std and min/max."""
    from kerasface.benchmark import summarize_seeds

    return summarize_seeds(runs, {
        "accuracy": lambda e: e["accuracy"],
        "tar_at_far_1e-2": lambda e: e.get("tar_at_far_1e-2"),
        "filter_precision": lambda e: (e.get("filter") or {}).get("precision"),
        "filter_recall": lambda e: (e.get("filter") or {}).get("recall"),
    })


def format_seed_table(combined):
    from kerasface.benchmark import format_seed_cell

    lines = ["| method | val_pairs accuracy, mean ± std over seeds (min–max, n) | TAR@FAR=1e-2 |", "|---|---:|---:|"]
    for method, stats in combined["summary"].items():
        lines.append(f"| {method} | {format_seed_cell(stats.get('accuracy'))} | "
                     f"{format_seed_cell(stats.get('tar_at_far_1e-2'))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
