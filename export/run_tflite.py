#!/usr/bin/env python3
"""Compare two aligned faces with a kerasface .tflite embedding model (LiteRT, no TensorFlow).

Usage:
    python run_tflite.py model.tflite face_a.jpg face_b.jpg [--threads N]

Needs numpy, pillow and ai-edge-litert only. The faces must be aligned 112x112 RGB crops;
the pixel normalisation is read from the model's sidecar ``model.tflite.json`` written by
``kerasface export``, or from the copy embedded in the file when the sidecar is missing. Prints the cosine similarity of the two L2-normalised embeddings
(higher: more likely the same person). Self-contained on purpose: copy it next to the model.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def load_metadata(model_path):
    """The sidecar JSON, else the copy ``kerasface export`` embeds in the file ("kerasface" entry)."""
    sidecar = Path(f"{model_path}.json")
    if sidecar.is_file():
        return json.loads(sidecar.read_text())
    from ai_edge_litert import schema_py_generated as schema

    data = Path(model_path).read_bytes()
    if not schema.Model.ModelBufferHasIdentifier(data, 0):
        raise SystemExit(f"error: {model_path}: not a valid TFLite file")
    root = schema.Model.GetRootAs(data, 0)
    for i in range(root.MetadataLength()):
        entry = root.Metadata(i)
        if entry.Name() == b"kerasface":
            return json.loads(bytes(root.Buffers(entry.Buffer()).DataAsNumpy()).decode("utf-8"))
    raise SystemExit(
        f"error: {model_path} carries no kerasface metadata and {sidecar} is missing; they hold the "
        f"input normalisation (export the model with `kerasface export`)"
    )


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


def embed(interpreter, images):
    """Normalised float32 (B, H, W, 3) -> (B, D) L2-normalised embeddings."""
    source = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(source["index"], list(images.shape))
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]
    if source["dtype"] != np.float32:  # int8 I/O export: quantise with the file's parameters
        scale, zero_point = source["quantization"]
        info = np.iinfo(source["dtype"])
        images = np.clip(np.round(images / scale + zero_point), info.min, info.max).astype(
            source["dtype"]
        )
    interpreter.set_tensor(source["index"], images)
    interpreter.invoke()
    target = interpreter.get_output_details()[0]
    embeddings = interpreter.get_tensor(target["index"])
    if target["dtype"] != np.float32:
        scale, zero_point = target["quantization"]
        embeddings = (embeddings.astype(np.float32) - zero_point) * scale
    embeddings = embeddings.astype(np.float32)
    return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help=".tflite file written by `kerasface export --format tflite`")
    parser.add_argument("face_a", help="first aligned 112x112 face image")
    parser.add_argument("face_b", help="second aligned 112x112 face image")
    parser.add_argument(
        "--threads", type=int, default=None, help="interpreter threads (default: LiteRT's)"
    )
    args = parser.parse_args(argv)

    from ai_edge_litert.interpreter import Interpreter

    metadata = load_metadata(args.model)
    _, height, width, _ = metadata["input"]["shape"]
    norm = metadata["input"]["normalization"]
    faces = load_faces([args.face_a, args.face_b], height, width)
    images = (faces.astype(np.float32) - norm["mean"]) / norm["scale"]
    kwargs = {} if args.threads is None else {"num_threads": args.threads}
    interpreter = Interpreter(model_path=args.model, **kwargs)
    a, b = embed(interpreter, images)
    print(f"cosine similarity: {float(np.dot(a, b)):.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
