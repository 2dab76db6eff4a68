"""Set (video) verification with LFRC's Union-Find outlier removal, on noisy sets from celeba_dev.

    python bench/video_sets.py --sface --json docs/video_sets.json

There is no video face data here, so
:func:`kerasface.evaluation.video_set_builder.build_video_sets` makes "videos" from
``celeba_dev/val`` (50 identities, 1040 aligned faces): frames of one identity plus injected
noise frames of LFRC's three kinds (a second identity, non-face frames cut from the corners of
the raw CelebA photos or random noise, grey-block occlusions). Two configurations by default:
``8:0.25`` (8 frames, 25% noise expected; ~147 sets, 380 pairs) and the harder ``5:0.4`` (5
frames, 40% noise, capped at 2 per set; ~294 sets, 1720 pairs).

Each judge (a kerasface model, and OpenCV's SFace with ``--sface``) embeds every distinct frame
once; then, per configuration, seed and pairs list (``random``: impostor pairs drawn uniformly;
``linked``: half of them join a set with the set whose person intrudes into it, the co-star case
where averaging every frame hurts most, see ``write_set_pairs``):

- ``noisy``: the set embedding is the mean of all frames (threshold ``none``) or of the largest
  Union-Find cluster at each cosine threshold (LFRC Table 5 uses 0.3-0.6);
- ``clean``: the same pairs with the injected frames left out (the ideal outlier removal), with
  and without the clustering (what the removal costs when there is nothing to remove);
- removal quality: of the frames the clustering dropped, how many were injected noise
  (precision), and how many injected frames it dropped (recall), per noise kind.

The cosine scale of a model decides which thresholds mean anything: a weak model whose
different-identity pairs already score ~0.6 links everything at 0.3-0.6, so the default
thresholds go on to 0.9.
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SHARED = os.path.join(os.path.dirname(_REPO), "shared")
_SFACE = os.path.join(_SHARED, "models", "opencv_zoo", "face_recognition_sface_2021dec_int8bq.onnx")
_OPENCV_FALLBACK = "/tmp/al/pylib"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="/work/runs/celeba_arcface",
                        help="kerasface embedding model (.keras file or training run folder)")
    parser.add_argument("--sface", nargs="?", const=_SFACE, default=None, metavar="ONNX",
                        help="also judge with OpenCV's SFace (default file: %(const)s); needs cv2")
    parser.add_argument("--identity-root", default=os.path.join(_SHARED, "data/celeba_dev/val"),
                        help="identity folders the sets are made from")
    parser.add_argument("--background-root",
                        default=os.path.join(_SHARED, "data/celeba_dev/raw_val"),
                        help="photos to cut the non-face texture frames from ('' for none)")
    parser.add_argument("--out-dir", default=None,
                        help="where to write the sets (default: a temporary folder, removed)")
    parser.add_argument("--configs", nargs="+", default=["8:0.25", "5:0.4"],
                        metavar="FRAMES:NOISE",
                        help="benchmark configurations: frames per set and expected noise fraction")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                        help="one benchmark per configuration and seed; also averaged over seeds")
    parser.add_argument("--thresholds", type=float, nargs="+",
                        default=[0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                        help="Union-Find cosine link thresholds (no removal is always evaluated)")
    parser.add_argument("--linked-impostors", type=float, default=0.5,
                        help="fraction of linked impostor pairs (one set's intruder is the other "
                             "set's person) in the second pairs list of every benchmark")
    parser.add_argument("--embedding-cache", default=None, metavar="DIR",
                        help="keep frame embeddings in DIR/<judge>.npz, keyed by file content, "
                             "so a re-run embeds only new frames")
    parser.add_argument("--flip", action="store_true", help="flip test for every frame")
    parser.add_argument("--batch-size", type=int, default=64, help="frames per model call")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    configs = [_parse_config(parser, text) for text in args.configs]

    from kerasface.evaluation.set_pairs import read_set_pairs
    from kerasface.evaluation.set_verification import evaluate_set_embeddings, evaluate_set_pairs
    from kerasface.evaluation.video_set_builder import (
        FACE, build_video_sets, frame_kinds, load_manifest, removal_stats, write_set_pairs,
    )

    started = time.perf_counter()
    temporary = None
    out_dir = args.out_dir
    if out_dir is None:
        temporary = tempfile.TemporaryDirectory(prefix="video_sets_")
        out_dir = temporary.name
    benchmarks = []  # (config label, seed, VideoSets, {protocol: (SetPairs, kinds)})
    for label, frames_per_set, noise_fraction in configs:
        for seed in args.seeds:
            built = build_video_sets(
                args.identity_root,
                os.path.join(out_dir, f"{frames_per_set}_{noise_fraction}_{seed}"),
                frames_per_set=frames_per_set, noise_fraction=noise_fraction, seed=seed,
                background_root=args.background_root or None, overwrite=True,
            )
            manifest = load_manifest(built.manifest_path)
            linked_path = os.path.join(built.out_dir, "set_pairs_linked.txt")
            write_set_pairs(built.manifest_path, linked_path,
                            linked_impostors=args.linked_impostors, seed=seed)
            protocols = {}
            for protocol, path in (("random", built.pairs_path), ("linked", linked_path)):
                set_pairs = read_set_pairs(path, built.root)
                protocols[protocol] = (set_pairs, frame_kinds(manifest, set_pairs))
            benchmarks.append((label, seed, built, protocols))
            print(f"config {label}, seed {seed}: {built.summary()}", flush=True)

    judges = [(args.model, lambda: _keras_embedder(args.model))]
    if args.sface:
        judges.append((f"sface:{os.path.basename(args.sface)}",
                       lambda: _sface_embedder(args.sface)))
    command = argv if argv is not None else sys.argv[1:]
    figures = {
        "command": "python bench/video_sets.py " + " ".join(command),
        "identity_root": args.identity_root,
        "background_root": args.background_root or None,
        "configs": args.configs,
        "linked_impostors": args.linked_impostors,
        "seeds": args.seeds,
        "thresholds": args.thresholds,
        "flip": args.flip,
        "benchmarks": {
            f"{label} seed {seed}": {
                "sets": built.summary(),
                **{protocol: pairs.summary() for protocol, (pairs, _) in protocols.items()},
            }
            for label, seed, built, protocols in benchmarks
        },
        "judges": {},
    }
    thresholds = [None] + args.thresholds
    for judge_name, make_embedder in judges:
        embed_fn = make_embedder()
        judge_started = time.perf_counter()
        cache, disk_cache = _open_cache(args.embedding_cache, judge_name, args.flip, benchmarks)
        # config -> protocol -> seed -> {"noisy", "clean"}: to_dict() rows plus removal figures;
        # only their means over seeds go into the JSON (the per-seed tables are printed).
        runs = {}
        for label, seed, built, protocols in benchmarks:
            for protocol, (set_pairs, kinds) in protocols.items():
                title = f"{label}, {protocol} impostors, seed {seed}"
                noisy = evaluate_set_pairs(embed_fn, set_pairs, thresholds,
                                           batch_size=args.batch_size, flip=args.flip,
                                           embedding_cache=cache, name=f"noisy sets {title}")
                clean_frames = [f[k == FACE] for f, k in zip(noisy.frame_embeddings, kinds)]
                clean = evaluate_set_embeddings(
                    clean_frames, set_pairs.pairs, set_pairs.issame, set_pairs.folds, thresholds,
                    name=f"clean sets (injected frames left out) {title}",
                )
                clean_kinds = [k[k == FACE] for k in kinds]
                noisy_dict, clean_dict = noisy.to_dict(), clean.to_dict()
                for row, kept in zip(noisy_dict["rows"], noisy.kept):
                    row["removal"] = removal_stats(kinds, kept)
                for row, kept in zip(clean_dict["rows"], clean.kept):
                    row["removal"] = removal_stats(clean_kinds, kept)
                runs.setdefault(label, {}).setdefault(protocol, {})[str(seed)] = {
                    "noisy": noisy_dict, "clean": clean_dict,
                }
                print(f"\n== {judge_name}: {title}")
                print(noisy.summary())
                print(_removal_table(noisy_dict))
                print(clean.summary())
        _save_cache(disk_cache, cache)
        seconds = time.perf_counter() - judge_started
        means = {label: {protocol: _means(per_seed) for protocol, per_seed in protocols.items()}
                 for label, protocols in runs.items()}
        figures["judges"][judge_name] = {
            "frames_embedded": len(cache), "seconds": round(seconds, 1),
            "mean_over_seeds": means,
        }
        for label, protocols in means.items():
            for protocol, protocol_means in protocols.items():
                print(f"\n== {judge_name}: {label}, {protocol} impostors, mean over seeds "
                      f"{args.seeds}")
                print(_means_table(protocol_means))
        print(f"{judge_name}: {len(cache)} distinct frames, {seconds:.0f} s")

    figures["wall_seconds"] = round(time.perf_counter() - started, 1)
    print(f"\ntotal {figures['wall_seconds']:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(figures, f, indent=1)
        print(f"figures written to {args.json}")
    if temporary is not None:
        temporary.cleanup()
    return 0


def _parse_config(parser, text):
    try:
        frames, noise = text.split(":")
        return text, int(frames), float(noise)
    except ValueError:
        parser.error(f"--configs: expected FRAMES:NOISE such as 8:0.25, got {text!r}")


def _open_cache(folder, judge_name, flip, benchmarks):
    """``({real path: embedding}, disk state)`` prefilled from ``folder`` by file content hash."""
    if not folder:
        return {}, None
    import hashlib

    slug = "".join(c if c.isalnum() else "_" for c in judge_name) + ("_flip" if flip else "")
    path = os.path.join(folder, f"{slug}.npz")
    stored = {}
    if os.path.isfile(path):
        with np.load(path) as data:
            stored = dict(zip(data["keys"].tolist(), data["embeddings"]))
    digests = {}
    for _, _, _, protocols in benchmarks:
        for set_pairs, _ in protocols.values():
            for frames in set_pairs.frame_paths:
                for frame in frames:
                    real = os.path.realpath(frame)
                    if real not in digests:
                        with open(real, "rb") as f:
                            digests[real] = hashlib.sha1(f.read()).hexdigest()
    cache = {real: stored[digest] for real, digest in digests.items() if digest in stored}
    print(f"{judge_name}: {len(cache)} of {len(digests)} frame embeddings from {path}")
    return cache, (path, stored, digests)


def _save_cache(disk_cache, cache):
    if disk_cache is None:
        return
    path, stored, digests = disk_cache
    stored.update({digests[real]: embedding for real, embedding in cache.items()})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    keys = sorted(stored)
    np.savez(path, keys=np.array(keys), embeddings=np.stack([stored[k] for k in keys]))


def _keras_embedder(path):
    from kerasface.models import load_embedding_model

    return load_embedding_model(path)


def _sface_embedder(onnx_path):
    """OpenCV SFace as an ``embed_fn`` over kerasface-normalised batches."""
    try:
        import cv2
    except ImportError:
        # A private OpenCV install kept out of the project's environment.
        sys.path.insert(0, _OPENCV_FALLBACK)
        try:
            import cv2
        except ImportError:
            raise SystemExit(
                f"--sface needs OpenCV (pip install opencv-python-headless==4.14.0.94, or put it "
                f"in {_OPENCV_FALLBACK})"
            ) from None
    from kerasface.data.preprocessing import PIXEL_MEAN, PIXEL_SCALE

    recognizer = cv2.FaceRecognizerSF.create(onnx_path, "")

    def embed(batch):
        # Exact inverse of (x - 127.5) / 128 on uint8 pixels; SFace wants BGR 0-255.
        pixels = np.clip(np.rint(np.asarray(batch) * PIXEL_SCALE + PIXEL_MEAN), 0, 255)
        bgr = np.ascontiguousarray(pixels.astype(np.uint8)[..., ::-1])
        return np.stack([recognizer.feature(image)[0] for image in bgr]).astype(np.float32)

    return embed


def _means(per_seed):
    """Per variant (noisy/clean) and cluster threshold: figures averaged over seeds.

    Each entry holds the mean accuracy (and the per-seed values), AUC, TAR at each FAR, the
    fraction of frames kept, the removal precision and recall against the manifest, and the
    fraction of each frame kind that was removed.
    """
    means = {}
    for variant in ("noisy", "clean"):
        rows = {}
        for seed_figures in per_seed.values():
            for row in seed_figures[variant]["rows"]:
                threshold = row["cluster_threshold"]
                key = "none" if threshold is None else f"{threshold:g}"
                entry = rows.setdefault(key, {})
                values = {
                    "accuracy": row["accuracy"],
                    "auc": row["auc"],
                    **{f"tar@far={far}": point["tar"] for far, point in row["tar_at_far"].items()},
                    "kept": row["frames_kept"] / row["frames_total"],
                    "precision": row["removal"]["precision"],
                    "recall": row["removal"]["recall"],
                    **{f"removed[{kind}]": stats["removed_fraction"]
                       for kind, stats in row["removal"]["per_kind"].items()},
                }
                for name, value in values.items():
                    entry.setdefault(name, []).append(value)
        means[variant] = {}
        for key, entry in rows.items():
            means[variant][key] = {name: _mean(values) for name, values in entry.items()}
            means[variant][key]["accuracy_per_seed"] = [round(a, 4) for a in entry["accuracy"]]
    return means


def _mean(values):
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 4) if values else None


def _pct(value):
    return "   -  " if value is None else f"{100 * value:5.1f}%"


def _removal_table(figures):
    lines = ["threshold  removed  noise removed  precision  recall   per kind removed"]
    for row in figures["rows"]:
        removal = row["removal"]
        kinds = ", ".join(f"{kind} {s['removed']}/{s['frames']}"
                          for kind, s in removal["per_kind"].items())
        label = ("none" if row["cluster_threshold"] is None
                 else f"{row['cluster_threshold']:g}")
        lines.append(f"{label:<11}{removal['removed']:<9}{removal['noise_removed']:<15}"
                     f"{_pct(removal['precision']):<11}{_pct(removal['recall']):<9}{kinds}")
    return "\n".join(lines)


def _means_table(means):
    lines = ["threshold  noisy acc  noisy AUC  kept    precision  recall   "
             "| clean acc  clean AUC  kept"]
    for key, noisy in means["noisy"].items():
        clean = means["clean"][key]
        lines.append(
            f"{key:<11}{_pct(noisy['accuracy']):<11}{noisy['auc']:<11.4f}{_pct(noisy['kept']):<8}"
            f"{_pct(noisy['precision']):<11}{_pct(noisy['recall']):<9}| "
            f"{_pct(clean['accuracy']):<11}{clean['auc']:<11.4f}{_pct(clean['kept'])}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
