"""`kerasface eval`: verification, TAR@FAR at scale, identification and video-set evaluation."""

import argparse
import json
import os
import pickle
import sys

from kerasface.cli.argument_types import far_value, integer_at_least

DEFAULT_CACHE_DIR = "~/.cache/kerasface/embeddings"
DEFAULT_FARS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def add_arguments(parser):
    """Add the `eval` options to an argparse parser."""
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model", required=True,
        help="model to evaluate: a kerasface .keras file or run directory (float32 (B,112,112,3) "
             "images normalised as (x - 127.5) / 128 -> (B, D)), or a third-party face model "
             ".onnx/.tflite (see --runtime, --channel-order, --pixel-range, --layout)",
    )
    add_peer_arguments(model)

    sets = parser.add_argument_group("verification sets")
    sets.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="[NAME=]FILE[:ROOT]",
        help="a verification set, repeatable: an insightface .bin (lfw.bin, cfp_fp.bin, ...), a "
             "kerasface `a b issame` pairs file or the official LFW pairs.txt, with the folder its "
             "image paths are relative to after a colon (val_pairs.txt:/data/val)",
    )
    sets.add_argument(
        "--pairs", default=None,
        help="one pairs file or .bin (same as --set; kept for older command lines)",
    )
    sets.add_argument(
        "--root", default=None,
        help="image folder for --pairs (default: the current directory)",
    )
    sets.add_argument(
        "--flip", action="store_true",
        help="flip test: add the embedding of the horizontally mirrored image before normalising",
    )
    sets.add_argument(
        "--far", type=far_value, nargs="+", default=list(DEFAULT_FARS), metavar="FAR",
        help="false-accept rates at which to report TAR (default: 1e-1 down to 1e-6); a rate "
             "needs at least 1/FAR impostor pairs and is reported n/a, with the reason, otherwise",
    )
    sets.add_argument(
        "--all-pairs", action="append", default=[], metavar="FOLDER",
        help="IJB-style TAR@FAR over every pair of images of an identity-folder tree "
             "(FOLDER/<identity>/*.jpg): M images give M(M-1)/2 scores; repeatable",
    )

    identification = parser.add_argument_group("identification")
    identification.add_argument(
        "--identify", default=None, metavar="PROBE_ROOT",
        help="rank-k identification of the faces of an identity-folder tree (PROBE_ROOT/<id>/*.jpg)",
    )
    identification.add_argument(
        "--distractors", default=None, metavar="FOLDER|NPY",
        help="distractor gallery for --identify: a folder of face images (their embeddings are "
             "cached as <folder>-distractors-*.npy in --cache-dir, reusable here) or a .npy file "
             "of L2-normalised embeddings (memory-mapped, read in chunks)",
    )
    identification.add_argument(
        "--protocol", choices=("megaface", "closed-set"), default="megaface",
        help="megaface: every (gallery, probe) pair of an identity is one search among the "
             "distractors; closed-set: the first image of each identity is the gallery, the rest "
             "probes (default: %(default)s)",
    )
    identification.add_argument(
        "--max-rank", type=integer_at_least(1), default=10,
        help="longest rank of the CMC curve (default: %(default)s)",
    )
    identification.add_argument("--cmc-png", default=None, help="write the CMC curve to this PNG")

    video = parser.add_argument_group("set (video) verification")
    video.add_argument(
        "--set-pairs", action="append", default=[], metavar="FILE:ROOT",
        help="set-to-set verification: `set_a set_b issame` lines, each set a folder of frames "
             "under ROOT; each set is the mean of its frame embeddings; repeatable",
    )
    video.add_argument(
        "--cluster-threshold", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6],
        metavar="COS",
        help="LFRC outlier removal: link frames whose cosine exceeds COS (Union-Find) and keep "
             "the largest cluster; each threshold is reported next to plain averaging "
             "(default: 0.3 0.4 0.5 0.6)",
    )

    run_group = parser.add_argument_group("running and output")
    run_group.add_argument(
        "--batch-size", type=integer_at_least(1), default=64,
        help="images per model call (default: %(default)s)",
    )
    run_group.add_argument(
        "--cache-dir", default=DEFAULT_CACHE_DIR,
        help="embeddings of each (model, set, flip) are kept here as .npy, so evaluating again "
             "only re-scores (default: %(default)s)",
    )
    run_group.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    run_group.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="show a progress bar while embedding (default: when stdout is a terminal)",
    )
    run_group.add_argument(
        "--roc-png", default=None, help="write the ROC curves of every set (log FAR axis) to this PNG"
    )
    run_group.add_argument("--json", default=None, help="write all metrics to this JSON file")
    return parser


def add_peer_arguments(parser):
    """Preprocessing options of third-party .onnx/.tflite models (a kerasface model takes none)."""
    from kerasface.evaluation.peer_model import CHANNEL_ORDERS, LAYOUTS, PIXEL_RANGES, RUNTIMES

    parser.add_argument(
        "--runtime", choices=RUNTIMES, default=None,
        help="how to run a third-party model: auto = onnxruntime for .onnx (OpenCV zoo's "
             "block-quantised files such as SFace are repaired in memory), LiteRT for .tflite; "
             "opencv = OpenCV's DNN module (default: auto)",
    )
    parser.add_argument(
        "--channel-order", choices=CHANNEL_ORDERS, default=None,
        help="colour order the third-party model expects (default: rgb)",
    )
    parser.add_argument(
        "--pixel-range", choices=(*PIXEL_RANGES, "symmetric"), default=None,
        help="pixel values the third-party model expects: 0-255, 0-1, symmetric (= -1-1, "
             "(x-127.5)/127.5; write --pixel-range=-1-1) or kerasface ((x-127.5)/128) "
             "(default: 0-255)",
    )
    parser.add_argument(
        "--layout", choices=LAYOUTS, default=None,
        help="input layout of the third-party model (default: read from its input shape)",
    )
    parser.add_argument(
        "--input-size", type=integer_at_least(16), default=None,
        help="input side of the third-party model when its file leaves it free (default: 112)",
    )


def run(args):
    """Open the model named by ``args.model`` and evaluate it; returns the exit code."""
    from kerasface.evaluation.peer_model import model_fingerprint, open_embedder

    peer_options = _peer_options(args)
    try:
        model = open_embedder(args.model, **peer_options)
        model_id = model_fingerprint(args.model, **peer_options)
    except (OSError, ValueError, ImportError, RuntimeError) as error:
        print(f"kerasface eval: error: cannot load model {args.model}: {error}", file=sys.stderr)
        return 1
    return run_with_model(model, args, model_id=model_id)


def run_with_model(model, args, model_id=None):
    """Evaluate an already opened embedding model (or embedding callable); returns the exit code."""
    try:
        return _evaluate(model, args, model_id)
    except (OSError, ValueError, pickle.UnpicklingError) as error:
        print(f"kerasface eval: error: {error}", file=sys.stderr)
        return 1


def _evaluate(model, args, model_id):
    from kerasface.evaluation.set_evaluation import evaluate_set
    from kerasface.evaluation.verification_set import VerificationSet

    specs = list(args.sets)
    if args.pairs:
        specs.append(f"{args.pairs}:{args.root or '.'}" if not args.pairs.endswith(".bin")
                     else args.pairs)
    elif args.root:
        raise ValueError("--root only applies to --pairs; give a set as --set FILE:ROOT")
    if not (specs or args.all_pairs or args.identify or args.set_pairs):
        raise ValueError("nothing to evaluate: give --set (or --pairs), --all-pairs, --identify "
                         "or --set-pairs")
    cache_dir = None if args.no_cache else os.path.expanduser(args.cache_dir)
    if cache_dir is not None and model_id is None:
        model_id = _model_id_or_none(model)
        cache_dir = cache_dir if model_id is not None else None
    progress = sys.stdout.isatty() if args.progress is None else args.progress
    fars = tuple(args.far)
    cache = None
    if cache_dir is not None:
        from kerasface.evaluation.embedding_cache import EmbeddingCache

        cache = EmbeddingCache(cache_dir, model_id)
    # Load every set first: a typo in the last --set must not cost the embedding of the others.
    vsets = [VerificationSet.load(spec) for spec in specs]

    report = {"model": str(args.model), "flip": bool(args.flip)}
    description = getattr(model, "describe", None)
    if callable(description):
        report["model_description"] = description()
        print(f"model: {report['model_description']}")
    results = {}
    report["verification"] = []
    for vset in vsets:
        evaluation = evaluate_set(model, vset, flip=args.flip, batch_size=args.batch_size, fars=fars,
                                  cache_dir=cache_dir, model_id=model_id, progress=progress)
        print(evaluation.result.summary())
        if evaluation.from_cache:
            print(f"  (embeddings read from {evaluation.cache_path})")
        results[evaluation.result.name] = evaluation.result
        report["verification"].append(
            {"set": vset.name, "source": vset.source, **evaluation.result.to_dict()}
        )

    if args.all_pairs:
        report["all_pairs"] = []
        for folder in args.all_pairs:
            result = _all_pairs(model, folder, args, fars, progress, cache)
            # Nearly all pairs are impostors: "always different" would score ~100% accuracy.
            print(result.summary(include_accuracy=False))
            results[result.name] = result
            entry = result.to_dict()
            for key in ("accuracy", "accuracy_std", "threshold", "fold_accuracies"):
                entry.pop(key)
            report["all_pairs"].append({"folder": folder, **entry})

    if args.identify:
        from kerasface.evaluation.identification import identify_folder

        identification = identify_folder(
            model, args.identify, distractors=args.distractors, protocol=args.protocol,
            max_rank=args.max_rank, batch_size=args.batch_size, flip=args.flip, cache=cache,
            progress=progress,
        )
        print(identification.summary())
        report["identification"] = identification.to_dict()
        if args.cmc_png:
            from kerasface.evaluation.cmc_plot import plot_cmc

            plot_cmc(identification, args.cmc_png)
            print(f"CMC curve written to {args.cmc_png}")
    elif args.distractors or args.cmc_png:
        raise ValueError("--distractors and --cmc-png need --identify PROBE_ROOT")

    if args.set_pairs:
        from kerasface.evaluation.set_pairs import read_set_pairs
        from kerasface.evaluation.set_verification import evaluate_set_pairs

        report["set_verification"] = []
        for spec in args.set_pairs:
            path, sep, root = spec.rpartition(":")
            if not sep or not path:
                raise ValueError(f"--set-pairs must be FILE:ROOT, got {spec!r}")
            set_pairs = read_set_pairs(path, root)
            result = evaluate_set_pairs(
                model, set_pairs, thresholds=(None, *args.cluster_threshold),
                batch_size=args.batch_size, flip=args.flip, fars=fars,
            )
            print(result.summary())
            report["set_verification"].append({"set_pairs": spec, **result.to_dict()})

    if args.json:
        _make_parent(args.json)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        print(f"metrics written to {args.json}")
    if args.roc_png:
        if not results:
            raise ValueError("--roc-png needs a verification set (--set) or --all-pairs")
        from kerasface.evaluation.roc_plot import plot_roc

        plot_roc(results, args.roc_png)
        print(f"ROC curves written to {args.roc_png}")
    return 0


def _all_pairs(model, folder, args, fars, progress, cache):
    import numpy as np

    from kerasface.data.folder_source import FolderSource
    from kerasface.evaluation.all_pair_scores import all_pair_scores
    from kerasface.evaluation.embed_images import embed_images
    from kerasface.evaluation.verification import evaluate_scores

    source = FolderSource(folder)
    if source.skipped_files:
        print(f"{folder}: skipped {len(source.skipped_files)} files that are not images",
              file=sys.stderr)
    if cache is None:
        embeddings = embed_images(model, source.file_paths, batch_size=args.batch_size,
                                  flip=args.flip, progress=progress)
    else:
        # The same key as --identify's probes: one embedding pass serves both.
        embeddings, _, _ = cache.embed(model, source.file_paths, f"{source.name}-probes",
                                       flip=args.flip, batch_size=args.batch_size,
                                       progress=progress)
    scores, issame = all_pair_scores(embeddings, np.asarray(source.labels))
    # Only AUC and TAR@FAR are reported; the folds just satisfy evaluate_scores.
    folds = np.arange(len(scores)) % 2
    name = f"{os.path.basename(os.path.normpath(folder))} all pairs"
    return evaluate_scores(scores, issame, folds, fars, name=name + (" (flip)" if args.flip else ""))


def _peer_options(args):
    return {
        "runtime": args.runtime,
        "channel_order": args.channel_order,
        "pixel_range": args.pixel_range,
        "layout": args.layout,
        "input_size": args.input_size,
    }


def _model_id_or_none(model):
    from kerasface.evaluation.set_evaluation import keras_model_id

    try:
        return keras_model_id(model)
    except ValueError:
        return None  # an arbitrary callable: evaluate without a cache


def _make_parent(path):
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)
