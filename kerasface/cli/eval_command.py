"""`kerasface eval`: verification accuracy, ROC and TAR@FAR of an embedding model on pairs."""

import json
import os
import pickle
import sys

from kerasface.cli.model_argument import load_model_argument


def add_arguments(parser):
    """Add the `eval` options to an argparse parser."""
    parser.add_argument(
        "--model", required=True,
        help="embedding model to evaluate (.keras file): float32 (B,112,112,3) images normalised "
             "as (x - 127.5) / 128 -> (B, D) embeddings",
    )
    parser.add_argument(
        "--pairs", required=True,
        help="pairs list: a text file with `a b issame` lines (10 contiguous folds), the official "
             "LFW pairs.txt, or an insightface verification .bin file (lfw.bin, cfp_fp.bin, ...)",
    )
    parser.add_argument(
        "--root", default=None,
        help="folder the image paths of a text pairs file are relative to (default: the current "
             "directory); ignored for .bin files",
    )
    parser.add_argument(
        "--flip", action="store_true",
        help="flip test: add the embedding of the horizontally mirrored image before normalising",
    )
    parser.add_argument(
        "--batch-size", type=int, default=64,
        help="images per model call (default: %(default)s)",
    )
    parser.add_argument(
        "--far", type=float, nargs="+", default=[1e-1, 1e-2, 1e-3], metavar="FAR",
        help="false-accept rates at which to report TAR (default: 1e-1 1e-2 1e-3); a rate needs at "
             "least 1/FAR impostor pairs",
    )
    parser.add_argument(
        "--roc-png", default=None, help="write the ROC curve (log FAR axis) to this PNG file"
    )
    parser.add_argument("--json", default=None, help="write all metrics to this JSON file")
    return parser


def run(args):
    """Load the model named by ``args.model`` and evaluate it; returns the exit code."""
    model = load_model_argument(args.model, "eval")
    if model is None:
        return 1
    return run_with_model(model, args)


def run_with_model(model, args):
    """Evaluate an already loaded embedding model (or embedding callable) on ``args.pairs``."""
    from kerasface.evaluation.roc_plot import plot_roc
    from kerasface.evaluation.verification import verify_pairs

    if args.batch_size < 1:
        print(
            f"kerasface eval: error: --batch-size must be >= 1, got {args.batch_size}",
            file=sys.stderr,
        )
        return 2
    try:
        result = verify_pairs(
            model, args.pairs, root=args.root, flip=args.flip, batch_size=args.batch_size,
            fars=tuple(args.far),
        )
    except (OSError, ValueError, pickle.UnpicklingError) as error:
        print(f"kerasface eval: error: {error}", file=sys.stderr)
        return 1
    if args.flip:
        result.name = f"{result.name} (flip)"
    print(result.summary())
    if args.json:
        _make_parent(args.json)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"model": str(args.model), "pairs": str(args.pairs), "flip": bool(args.flip),
                       **result.to_dict()}, f, indent=2)
        print(f"metrics written to {args.json}")
    if args.roc_png:
        plot_roc(result, args.roc_png)
        print(f"ROC curve written to {args.roc_png}")
    return 0


def _make_parent(path):
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)
