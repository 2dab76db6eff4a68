#!/usr/bin/env python3
"""Compare two aligned faces with a kerasface .onnx embedding model (ONNX Runtime, no TensorFlow).

Usage:
    python run_onnx.py model.onnx face_a.jpg face_b.jpg [--threads N]

Needs numpy, pillow and onnxruntime only. The faces must be aligned 112x112 RGB crops; the
pixel normalisation is read from the model's sidecar ``model.onnx.json`` written by
``kerasface export``. Input is NHWC float32 named ``image``, output ``embedding``. Prints the
cosine similarity of the two L2-normalised embeddings (higher: more likely the same person).
Self-contained on purpose: copy it next to the model.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def load_metadata(model_path):
    sidecar = Path(f"{model_path}.json")
    if not sidecar.is_file():
        raise SystemExit(
            f"error: {sidecar} not found; it holds the input normalisation (write it with `kerasface export`)"
        )
    return json.loads(sidecar.read_text())


def load_faces(paths, height, width):
    faces = []
    for path in paths:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
        if pixels.shape != (height, width, 3):
            raise SystemExit(
                f"error: {path}: expected an aligned {width}x{height} face, got {pixels.shape[1]}x{pixels.shape[0]}"
            )
        faces.append(pixels)
    return np.stack(faces)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help=".onnx file written by `kerasface export --format onnx`")
    parser.add_argument("face_a", help="first aligned 112x112 face image")
    parser.add_argument("face_b", help="second aligned 112x112 face image")
    parser.add_argument(
        "--threads", type=int, default=None, help="intra-op threads (default: ONNX Runtime's)"
    )
    args = parser.parse_args(argv)

    import onnxruntime

    metadata = load_metadata(args.model)
    _, height, width, _ = metadata["input"]["shape"]
    norm = metadata["input"]["normalization"]
    faces = load_faces([args.face_a, args.face_b], height, width)
    images = (faces.astype(np.float32) - norm["mean"]) / norm["scale"]
    options = onnxruntime.SessionOptions()
    if args.threads is not None:
        options.intra_op_num_threads = args.threads
    session = onnxruntime.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    embeddings = session.run([metadata["output"]["name"]], {metadata["input"]["name"]: images})[0]
    a, b = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    print(f"cosine similarity: {float(np.dot(a, b)):.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
