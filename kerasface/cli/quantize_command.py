"""`kerasface quantize`: quantisation-aware fine-tuning to a full-integer int8 TFLite file."""

import sys
import time
from pathlib import Path


def add_arguments(parser):
    """Add the `quantize` options to an argparse parser."""
    parser.add_argument(
        "--model", required=True, help="float embedding model: a .keras file or a `kerasface train` run directory"
    )
    parser.add_argument(
        "--data",
        required=True,
        metavar="DIR",
        help="folder of aligned 112x112 faces (searched recursively) to fine-tune on; no labels needed: "
        "the int8-simulating model learns the float model's embeddings",
    )
    parser.add_argument("--out", required=True, metavar="FILE", help="output .tflite file (full-integer int8, float I/O)")
    parser.add_argument(
        "--epochs", type=int, default=1, help="fine-tuning epochs; 0 only calibrates the ranges (default: %(default)s)"
    )
    parser.add_argument(
        "--max-images",
        type=int,
        default=None,
        help="fine-tune on at most this many faces of --data, sampled deterministically (default: all)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="fine-tuning batch size (default: %(default)s)")
    parser.add_argument(
        "--lr", type=float, default=1e-5, help="peak Adam learning rate, cosine-decayed; keep it small: 2e-4 degraded a MobileFaceNet (docs/quantization.md) (default: %(default)s)"
    )
    parser.add_argument(
        "--calibration",
        default=None,
        metavar="DIR",
        help="faces that initialise the activation ranges before fine-tuning (default: --data)",
    )
    parser.add_argument(
        "--num-calibration", type=int, default=200, help="calibration faces sampled (default: %(default)s)"
    )
    parser.add_argument(
        "--parity-images",
        default=None,
        metavar="DIR",
        help="faces on which the int8 file's cosine to the float model is printed (default: --root, else none)",
    )
    parser.add_argument(
        "--num-parity", type=int, default=512, help="faces sampled from --parity-images (default: %(default)s)"
    )
    parser.add_argument(
        "--verify-pairs",
        default=None,
        metavar="FILE",
        help="pairs file (`a b issame` lines); prints 10-fold accuracy and TAR@FAR for Keras fp32, "
        "post-training int8 and the QAT int8 file",
    )
    parser.add_argument("--root", default=None, metavar="DIR", help="folder the --verify-pairs paths are relative to")
    parser.add_argument(
        "--compare-ptq",
        action="store_true",
        help="also write <out>_ptq.tflite (post-training int8 from the same calibration faces) and compare "
        "(implied by --verify-pairs)",
    )
    parser.add_argument("--save-qat", default=None, metavar="FILE", help="also save the fine-tuned QAT Keras model (.keras)")
    parser.add_argument("--seed", type=int, default=0, help="sampling and shuffling seed (default: %(default)s)")


def run(args):
    """Fine-tune, convert, report; returns the exit code."""
    from kerasface.data.preprocessing import normalize_numpy
    from kerasface.export.runtimes import TFLiteRunner
    from kerasface.export.saved_model_export import float32_compute_model
    from kerasface.export.tflite_export import export_tflite, load_face_images
    from kerasface.models import load_embedding_model
    from kerasface.quantization import calibrate_ranges, export_qat_tflite, fake_quant_layers, fine_tune, quantize_model
    from kerasface.quantization.quantization_comparison import describe_variant, keras_embed_function

    out = Path(args.out)
    if out.suffix != ".tflite":
        print(f"error: --out must end in .tflite, got {out}", file=sys.stderr)
        return 2
    if args.epochs < 0:
        print(f"error: --epochs must be >= 0, got {args.epochs}", file=sys.stderr)
        return 2
    if args.verify_pairs and not Path(args.verify_pairs).is_file():
        print(f"error: --verify-pairs {args.verify_pairs}: no such file", file=sys.stderr)
        return 2
    try:
        model = float32_compute_model(load_embedding_model(args.model))
        calibration = load_face_images(args.calibration or args.data, args.num_calibration, seed=args.seed)
        train = load_face_images(args.data, args.max_images, seed=args.seed + 1) if args.epochs else None
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    start = time.perf_counter()
    qat = quantize_model(model)
    calibrate_ranges(qat, calibration, batch_size=args.batch_size)
    print(f"calibrated {len(fake_quant_layers(qat))} activation ranges on {len(calibration)} faces")
    if args.epochs:
        fine_tune(
            qat, model, train, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
            seed=args.seed, verbose=2,
        )
    if args.save_qat:
        qat.save(args.save_qat)
    extra = {"qat": {"epochs": args.epochs, "images": 0 if train is None else int(len(train)), "lr": args.lr,
                     "data": str(args.data), "calibration_images": int(len(calibration))}}
    path = export_qat_tflite(qat, out, model_name=model.name, extra_metadata=extra)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB) in {time.perf_counter() - start:.1f} s")

    parity_dir = args.parity_images or args.root or (Path(args.verify_pairs).parent if args.verify_pairs else None)
    if not parity_dir:
        return 0
    variants = [("keras fp32", keras_embed_function(model), None)]
    if args.compare_ptq or args.verify_pairs:
        ptq_path = export_tflite(model, out.with_name(out.stem + "_ptq.tflite"), quantize="int8", calibration=calibration)
        variants.append(("tflite int8 PTQ", TFLiteRunner(ptq_path), ptq_path))
    variants.append(("tflite int8 QAT", TFLiteRunner(path), path))
    vset = None
    if args.verify_pairs:
        from kerasface.evaluation import VerificationSet

        vset = VerificationSet.load(args.verify_pairs, root=args.root)
    parity = load_face_images(parity_dir, args.num_parity, seed=args.seed + 2)
    reference = variants[0][1](normalize_numpy(parity))
    print(f"{'variant':<18} {'cos mean':>9} {'cos min':>9} {'accuracy':>15} {'TAR@FAR=1e-2':>13} {'MB':>6}")
    for name, embed_fn, file in variants:
        row = describe_variant(name, embed_fn, reference, parity, vset, file)
        cosine = row["cosine_to_fp32"]
        pairs = row.get("pairs")
        accuracy = f"{100 * pairs['accuracy']:.2f}+-{100 * pairs['accuracy_std']:.2f}%" if pairs else "-"
        tar = f"{pairs['tar_at_far'].get('0.01', float('nan')):.4f}" if pairs else "-"
        size = f"{row['size_bytes'] / 1e6:.2f}" if file else "-"
        print(f"{name:<18} {cosine['mean']:>9.4f} {cosine['min']:>9.4f} {accuracy:>15} {tar:>13} {size:>6}")
    return 0
