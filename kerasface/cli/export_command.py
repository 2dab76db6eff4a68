"""`kerasface export`: write an embedding model as SavedModel, TFLite or ONNX and check parity with Keras."""

import sys
from pathlib import Path

from kerasface.cli.model_argument import load_model_argument

FORMATS = ("savedmodel", "tflite", "onnx")
QUANTIZATIONS = ("float16", "dynamic", "int8")


def add_arguments(parser):
    """Add the `export` options to an argparse parser."""
    parser.add_argument(
        "--model",
        required=True,
        help="embedding model to export: a .keras file or a `kerasface train` run directory",
    )
    parser.add_argument(
        "--format",
        required=True,
        choices=FORMATS,
        help="savedmodel: TF Serving directory taking uint8 RGB faces (normalisation inside); "
        "tflite: LiteRT flatbuffer; onnx: ONNX (opset 17, NHWC). tflite and onnx take float32 "
        "faces normalised as (x - 127.5) / 128",
    )
    parser.add_argument(
        "--quantize",
        choices=QUANTIZATIONS,
        default=None,
        help="tflite only: float16 weights, dynamic-range int8 weights, or full-integer int8 "
        "(calibrated; float32 input/output unless --int8-io). Default: float32",
    )
    parser.add_argument(
        "--calibration",
        default=None,
        metavar="DIR",
        help="--quantize int8 only: folder of aligned 112x112 faces (searched recursively) for "
        "activation ranges; %(metavar)s defaults to synthetic faces, real faces calibrate better",
    )
    parser.add_argument(
        "--num-calibration",
        type=int,
        default=200,
        help="calibration faces sampled deterministically from --calibration (default: %(default)s)",
    )
    parser.add_argument(
        "--int8-io",
        action="store_true",
        help="--quantize int8 only: int8 input and output tensors instead of float32 (for "
        "integer-only accelerators; the caller applies the file's scale and zero point)",
    )
    parser.add_argument(
        "--int8-prelu",
        choices=("abs", "native"),
        default="abs",
        help="--quantize int8 only: abs (default) converts PReLU as x(1+a)/2 + |x|(1-a)/2, which "
        "LiteRT's XNNPACK runs in int8 (MobileFaceNet: ~5x faster per face, mean cosine to Keras "
        "0.996); native keeps TFLite's PRELU op, which XNNPACK cannot run in int8 (cosine 0.999)",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="PATH",
        help="output file (.tflite/.onnx) or SavedModel directory; default: beside the model, "
        "named <model>[_<quantize>].tflite, <model>.onnx or <model>_savedmodel",
    )
    parser.add_argument(
        "--parity-images",
        default=None,
        metavar="DIR",
        help="folder of aligned faces for the parity check against the Keras model (default: "
        "synthetic faces)",
    )
    parser.add_argument(
        "--num-parity",
        type=int,
        default=64,
        help="faces used for the parity check (default: %(default)s)",
    )
    parser.add_argument(
        "--min-cosine",
        type=float,
        default=None,
        help="parity threshold on the cosine between exported and Keras embeddings: every face "
        "must reach it for float formats, the mean over faces for dynamic and int8 "
        "(default: 0.9999 float32, 0.999 float16, 0.99 dynamic and int8)",
    )
    parser.add_argument(
        "--opset", type=int, default=17, help="ONNX opset, 13-18 (default: %(default)s)"
    )
    verify = parser.add_argument_group(
        "accuracy after export",
        "evaluate the exported file and the Keras model on real verification pairs after the "
        "parity check, print their metrics side by side and store them in the sidecar JSON "
        "under 'verification'",
    )
    verify.add_argument(
        "--verify-pairs",
        default=None,
        metavar="FILE",
        help="pairs file (lines `a b issame`, paths relative to --root) or insightface .bin",
    )
    verify.add_argument(
        "--root",
        default=None,
        metavar="DIR",
        help="--verify-pairs only: folder the pairs' image paths are relative to (default: the "
        "pairs file's folder)",
    )
    verify.add_argument(
        "--verify-set",
        action="append",
        default=[],
        metavar="[NAME=]FILE[:ROOT]",
        help="a verification set as `kerasface eval` takes it; repeat for several sets",
    )
    verify.add_argument(
        "--verify-flip",
        action="store_true",
        help="flip test for both models: fuse each face's embedding with its mirror's",
    )
    verify.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=None,
        metavar="POINTS",
        help="exit with status 1 when the exported file's accuracy is more than POINTS "
        "percentage points below the Keras model's on any set (default: report only)",
    )
    return parser


def run(args):
    """Load the model named by ``args.model`` and export it; returns the exit code."""
    problem = _argument_problem(args)
    if problem:  # before the (slow) model load
        print(f"kerasface export: error: {problem}", file=sys.stderr)
        return 2
    model = load_model_argument(args.model, "export")
    if model is None:
        return 1
    return run_with_model(model, args)


def run_with_model(model, args):
    """Export an already loaded embedding model as ``args`` say; returns the exit code (0, 1 or 2).

    Exit code 1: parity failed, or an exported file lost more than ``--max-accuracy-drop``
    points on a verification set (the file is kept for inspection either way).
    """
    from kerasface.export.parity import export_model
    from kerasface.export.tflite_export import UnsupportedOpsError

    problem = _argument_problem(args)
    if problem:
        print(f"kerasface export: error: {problem}", file=sys.stderr)
        return 2
    try:  # read the pairs before the (slow) conversion so a bad file fails fast
        sets = verification_sets(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"kerasface export: error: {error}", file=sys.stderr)
        return 2
    out = args.out or default_output_path(args.model, args.format, args.quantize)
    try:
        report = export_model(
            model,
            out,
            args.format,
            quantize=args.quantize,
            calibration=args.calibration,
            parity_images=args.parity_images,
            int8_io=args.int8_io,
            int8_prelu=args.int8_prelu,
            opset=args.opset,
            min_cosine=args.min_cosine,
            num_parity_images=args.num_parity,
            num_calibration_images=args.num_calibration,
            raise_on_failure=False,
        )
    except (UnsupportedOpsError, ValueError, FileNotFoundError) as error:
        print(f"kerasface export: error: {error}", file=sys.stderr)
        return 1
    status = 0
    if not report.passed:  # export_model already printed the numbers
        print(
            f"kerasface export: parity check failed; {report.path} is kept for inspection",
            file=sys.stderr,
        )
        status = 1
    if sets:
        status = max(status, verify_sets(model, report.path, sets, args))
    return status


def verification_sets(args):
    """The ``VerificationSet``s named by --verify-pairs/--root and --verify-set (may be empty)."""
    from kerasface.evaluation import VerificationSet

    sets = []
    if args.verify_pairs:
        sets.append(VerificationSet.load(args.verify_pairs, root=args.root))
    sets.extend(VerificationSet.load(spec) for spec in args.verify_set)
    names = [vset.name for vset in sets]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(
            f"verification sets share the name(s) {duplicates}; name them with NAME=FILE"
        )
    return sets


def verify_sets(model, exported, sets, args):
    """Evaluate ``exported`` and ``model`` on ``sets``, print, store in the sidecar; exit code."""
    from kerasface.export.export_verification import format_verification_table, verify_export
    from kerasface.export.exported_metadata import update_metadata

    results, status = {}, 0
    for vset in sets:
        result = verify_export(
            model, exported, vset, flip=args.verify_flip, max_accuracy_drop=args.max_accuracy_drop
        )
        print(format_verification_table(result), flush=True)
        results[vset.name] = result
        if result["passed"] is False:
            print(
                f"kerasface export: {exported} loses {result['accuracy_drop_points']:.2f} accuracy "
                f"points on {vset.name}, more than --max-accuracy-drop {args.max_accuracy_drop}",
                file=sys.stderr,
            )
            status = 1
    update_metadata(exported, verification=results)
    return status


def default_output_path(model_path, export_format, quantize=None):
    """Output path beside ``model_path``: <stem>[_<quantize>].tflite, <stem>.onnx or <stem>_savedmodel."""
    model_path = Path(model_path)
    stem = model_path.name if model_path.is_dir() else model_path.stem
    folder = model_path if model_path.is_dir() else model_path.parent
    suffix = f"_{quantize}" if quantize else ""
    if export_format == "savedmodel":
        return folder / f"{stem}_savedmodel"
    return folder / f"{stem}{suffix}.{export_format}"


def _argument_problem(args):
    if args.quantize and args.format != "tflite":
        return f"--quantize {args.quantize} applies to --format tflite only, got --format {args.format}"
    if args.calibration and args.quantize != "int8":
        return f"--calibration needs --quantize int8, got --quantize {args.quantize}"
    if args.int8_io and args.quantize != "int8":
        return f"--int8-io needs --quantize int8, got --quantize {args.quantize}"
    if getattr(args, "int8_prelu", "abs") != "abs" and args.quantize != "int8":
        return f"--int8-prelu needs --quantize int8, got --quantize {args.quantize}"
    if args.calibration and not Path(args.calibration).is_dir():
        return f"--calibration {args.calibration}: not a directory"
    if args.parity_images and not Path(args.parity_images).is_dir():
        return f"--parity-images {args.parity_images}: not a directory"
    suffix = {"tflite": ".tflite", "onnx": ".onnx"}.get(args.format)
    if args.out and suffix and Path(args.out).suffix != suffix:
        return f"--out {args.out}: a --format {args.format} file must end in {suffix}"
    verify_pairs = args.verify_pairs
    if args.root and not verify_pairs:
        return "--root needs --verify-pairs (a --verify-set takes FILE:ROOT)"
    if args.root and not Path(args.root).is_dir():
        return f"--root {args.root}: not a directory"
    if verify_pairs and not Path(verify_pairs).is_file():
        return f"--verify-pairs {verify_pairs}: no such file"
    max_drop = args.max_accuracy_drop
    if max_drop is not None and not (verify_pairs or args.verify_set):
        return "--max-accuracy-drop needs --verify-pairs or --verify-set"
    if max_drop is not None and not max_drop >= 0:
        return f"--max-accuracy-drop must be >= 0 points, got {max_drop}"
    if args.num_parity < 1 or args.num_calibration < 1:
        return f"--num-parity and --num-calibration must be >= 1, got {args.num_parity} and {args.num_calibration}"
    return None
