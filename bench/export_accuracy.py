"""Verification accuracy of every exported format of one model, next to the Keras model, in one run.

Evaluates the Keras model once on a verification set and then each exported file in a folder
(``kerasface.export.verify_export`` with the Keras evaluation reused): 10-fold accuracy,
TAR@FAR and the per-image cosine between exported and Keras embeddings. The folder is the
one ``bench/export_latency.py`` fills, so accuracy and latency describe the same files.

    python bench/export_accuracy.py --model /work/runs/celeba_arcface/embedding.keras \
        --exports /work/runs/celeba_arcface/export_latency \
        --set ../shared/data/celeba_dev/val_pairs.txt:../shared/data/celeba_dev/val \
        --json docs/export_accuracy.json
"""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# file or folder name in --exports -> label, in table order
FILES = {
    "saved_model": "SavedModel (uint8 in)",
    "model_fp32.tflite": "TFLite float32",
    "model_fp16.tflite": "TFLite float16",
    "model_dynamic.tflite": "TFLite dynamic-range int8",
    "model_int8.tflite": "TFLite int8, PReLU in abs form (default)",
    "model_int8_native_prelu.tflite": "TFLite int8, native PRELU op",
    "model.onnx": "ONNX float32",
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the Keras embedding model (.keras or run dir)")
    parser.add_argument("--exports", required=True, help="folder holding the exported files")
    parser.add_argument("--set", required=True, help="verification set, [NAME=]FILE[:ROOT]")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)

    from kerasface.evaluation import VerificationSet, evaluate_set
    from kerasface.export.export_verification import VERIFY_FARS, format_verification_table, verify_export
    from kerasface.models import load_embedding_model

    exports = Path(args.exports)
    present = {name: label for name, label in FILES.items() if (exports / name).exists()}
    if not present:
        parser.error(f"{exports}: none of {', '.join(FILES)} found")
    began = time.perf_counter()
    model = load_embedding_model(args.model)
    vset = VerificationSet.load(args.set)
    keras_evaluation = evaluate_set(model, vset, fars=VERIFY_FARS)
    rows = {}
    for name, label in present.items():
        result = verify_export(model, exports / name, vset, keras_evaluation=keras_evaluation)
        rows[name] = {"label": label, **result}
        print(f"== {label} ({exports / name})")
        print(format_verification_table(result), flush=True)
    report = {
        "command": "python " + shlex.join(["bench/export_accuracy.py", *(sys.argv[1:] if argv is None else argv)]),
        "model": args.model,
        "set": args.set,
        "seconds": time.perf_counter() - began,
        "results": rows,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
