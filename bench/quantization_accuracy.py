"""float32 vs post-training int8 (PTQ) vs quantisation-aware int8 (QAT) TFLite on real faces.

For each model: cosine of each int8 file's embeddings to the Keras float32 model on val faces
(mean / min), 10-fold val_pairs accuracy, TAR@FAR and file size. QAT is measured twice: with
the fake-quant ranges calibrated only (epochs 0) and after distillation fine-tuning.

    python bench/quantization_accuracy.py --model /work/runs/qat_mfn025 --name mfn025 \
        --out /work/runs/qat_bench --json docs/quantization.json --epochs 2 --train-images 1024

Results are merged into the JSON under the model's ``--name`` (rerun per model).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "celeba_dev"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help=".keras embedding model or kerasface train run dir")
    parser.add_argument("--name", required=True, help="key of this model in the JSON")
    parser.add_argument("--out", required=True, help="folder for the .tflite files (outside the repo)")
    parser.add_argument("--json", required=True, help="results JSON, merged per --name")
    parser.add_argument("--train", default=str(SHARED / "train"), help="aligned faces for calibration and fine-tuning")
    parser.add_argument("--val", default=str(SHARED / "val"), help="aligned faces for cosine-to-fp32")
    parser.add_argument("--pairs", default=str(SHARED / "val_pairs.txt"), help="pairs file (paths relative to --val)")
    parser.add_argument("--num-calibration", type=int, default=200, help="calibration faces (PTQ and QAT ranges)")
    parser.add_argument("--num-parity", type=int, default=512, help="val faces for cosine-to-fp32")
    parser.add_argument("--train-images", type=int, default=1024, help="faces used for QAT fine-tuning")
    parser.add_argument("--epochs", type=int, default=2, help="QAT fine-tuning epochs (0: calibration only)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-5, help="peak Adam learning rate of QAT fine-tuning")
    parser.add_argument("--skip-calibration-only", action="store_true", help="do not convert the epoch-0 QAT model")
    parser.add_argument("--qat-only", action="store_true", help="skip the fp32 and PTQ rows (e.g. another --lr)")
    args = parser.parse_args(argv)

    from kerasface.evaluation import VerificationSet
    from kerasface.export.saved_model_export import float32_compute_model
    from kerasface.export.runtimes import TFLiteRunner
    from kerasface.export.tflite_export import export_tflite, load_face_images
    from kerasface.models import load_embedding_model
    from kerasface.quantization import calibrate_ranges, export_qat_tflite, fine_tune, quantize_model
    from kerasface.quantization.quantization_comparison import describe_variant, keras_embed_function
    from kerasface.data.preprocessing import normalize_numpy

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = float32_compute_model(load_embedding_model(args.model))
    calibration = load_face_images(args.train, args.num_calibration, seed=0)
    parity = load_face_images(args.val, args.num_parity, seed=1)
    vset = VerificationSet.load(args.pairs, root=args.val)
    keras_fn = keras_embed_function(model)
    reference = keras_fn(normalize_numpy(parity))
    record = {"model": str(args.model), "settings": vars(args), "variants": []}

    def add(row):
        record["variants"].append(row)
        print(json.dumps(row), flush=True)
        _merge(args.json, args.name, record)

    if not args.qat_only:
        add(describe_variant("keras_fp32", keras_fn, reference, parity, vset))
        start = time.perf_counter()
        ptq_path = export_tflite(model, out / f"{args.name}_ptq_int8.tflite", quantize="int8", calibration=calibration)
        row = describe_variant("tflite_ptq_int8", TFLiteRunner(ptq_path), reference, parity, vset, ptq_path)
        row["build_seconds"] = round(time.perf_counter() - start, 1)
        add(row)

    start = time.perf_counter()
    qat = quantize_model(model)
    calibrate_ranges(qat, calibration)
    if not args.skip_calibration_only or args.epochs == 0:
        path = export_qat_tflite(qat, out / f"{args.name}_qat0_int8.tflite", model_name=model.name)
        row = describe_variant("tflite_qat_int8_calibrated_only", TFLiteRunner(path), reference, parity, vset, path)
        row["build_seconds"] = round(time.perf_counter() - start, 1)
        add(row)
    if args.epochs > 0:
        start = time.perf_counter()
        train = load_face_images(args.train, args.train_images, seed=2)
        history = fine_tune(
            qat, model, train, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, verbose=2
        )
        tuned_seconds = time.perf_counter() - start
        path = export_qat_tflite(qat, out / f"{args.name}_qat_int8.tflite", model_name=model.name)
        row = describe_variant(f"tflite_qat_int8_{args.epochs}ep", TFLiteRunner(path), reference, parity, vset, path)
        row["fine_tune"] = {
            "epochs": args.epochs,
            "images": int(len(train)),
            "loss": [float(v) for v in history.history["loss"]],
            "seconds": round(tuned_seconds, 1),
        }
        row["build_seconds"] = round(time.perf_counter() - start, 1)
        add(row)
    return 0


def _merge(json_path, name, record):
    path = Path(json_path)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[name] = record
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    sys.exit(main())
