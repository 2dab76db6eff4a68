"""Evaluate a third-party face model (default: OpenCV zoo's SFace) with kerasface's own pairs code.

    python bench/peer_models.py --json docs/peer_models.json     # from the repo root

Runs the peer file through :class:`kerasface.evaluation.peer_model.PeerModel` and
``verify_pairs`` (kerasface's TF JPEG decoder, 10-fold accuracy, TAR@FAR) on
celeba_dev ``val_pairs.txt``, and checks the accuracy against the figure published for it
(SFace: 95.97% +- 0.77, tolerance 0.1 point). Then, to show that any difference would not
come from the glue:

- decoder: kerasface's decoder (TF, accurate integer IDCT) vs ``cv2.imread`` on every image
  of the pairs list, as pixel differences;
- reference path (``--runtime opencv`` only): ``cv2.FaceRecognizerSF.feature`` on
  ``cv2.imread`` BGR images, the way OpenCV's own samples score SFace, its embeddings compared
  with PeerModel's and scored the same way.

Also the kerasface model ``--model`` on the same pairs, and CPU latency per image of both
in one run: batch 1 (calls interleaved, so machine noise hits both alike; median) and per
image when embedding batches of ``--batch-size`` (SFace files take one image per call).
"""

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

SFACE = "../shared/models/opencv_zoo/face_recognition_sface_2021dec_int8bq.onnx"
# Published by OpenCV zoo's face_recognition_sface benchmark for this very pairs list.
SFACE_REFERENCE = {"accuracy": 0.9597, "accuracy_std": 0.0077}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", default=SFACE, help="peer .onnx/.tflite file (default: SFace)")
    parser.add_argument("--runtime", default="opencv",
                        help="PeerModel runtime: auto, onnxruntime, litert, opencv")
    parser.add_argument("--channel-order", default="rgb", help="peer channel order: rgb, bgr")
    parser.add_argument("--pixel-range", default="0-255",
                        help="peer input values: 0-255, 0-1, -1-1, kerasface")
    parser.add_argument("--layout", default="auto", help="peer input layout: auto, nchw, nhwc")
    parser.add_argument("--model", default="/work/runs/celeba_arcface",
                        help="kerasface model (.keras or run dir) on the same pairs; '' to skip")
    parser.add_argument("--pairs", default="../shared/data/celeba_dev/val_pairs.txt")
    parser.add_argument("--root", default="../shared/data/celeba_dev/val",
                        help="folder the pairs' paths are relative to")
    parser.add_argument("--reference-accuracy", type=float, default=SFACE_REFERENCE["accuracy"],
                        help="published accuracy of the peer on these pairs (fraction)")
    parser.add_argument("--reference-std", type=float, default=SFACE_REFERENCE["accuracy_std"])
    parser.add_argument("--tolerance", type=float, default=0.001,
                        help="allowed |accuracy - reference| (fraction; 0.001 = 0.1 point)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per embed call")
    parser.add_argument("--latency-runs", type=int, default=200, help="timed batch-1 calls each")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for both models (TF intra/inter-op, OpenCV / "
                             "onnxruntime / LiteRT); default: each runtime's own default")
    parser.add_argument("--no-reference-path", action="store_true",
                        help="skip the cv2.FaceRecognizerSF cross-check")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args(argv)

    import keras

    if args.threads is not None:
        import tensorflow as tf  # threads must be set before TensorFlow runs its first op

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    from kerasface.benchmark.zoo_benchmark import machine_info
    from kerasface.data.preprocessing import normalize_numpy
    from kerasface.evaluation import decode_images, evaluate_scores, read_pairs, verify_pairs
    from kerasface.evaluation.peer_model import PeerModel, model_fingerprint, open_embedder

    peer_options = {"runtime": args.runtime, "channel_order": args.channel_order,
                    "pixel_range": args.pixel_range, "layout": args.layout}
    peer = PeerModel(args.peer, num_threads=args.threads, **peer_options)
    print(peer.describe())
    figures = {
        "command": "python bench/peer_models.py " + shlex.join(argv if argv is not None
                                                                else sys.argv[1:]),
        "machine": machine_info(),
        "libraries": _versions(),
        "pairs": args.pairs,
        "root": args.root,
        "peer": {"path": args.peer, "options": peer.get_config(), "describe": peer.describe(),
                 "fingerprint": model_fingerprint(args.peer, **peer_options)},
    }

    started = time.perf_counter()
    result = verify_pairs(peer, args.pairs, root=args.root, batch_size=args.batch_size)
    seconds = time.perf_counter() - started
    delta = result.accuracy - args.reference_accuracy
    within = abs(delta) <= args.tolerance + 1e-12
    print(result.summary())
    print(f"reference {100 * args.reference_accuracy:.2f}% +- {100 * args.reference_std:.2f}: "
          f"{100 * delta:+.2f} points, {'within' if within else 'OUTSIDE'} "
          f"{100 * args.tolerance:.2f} ({seconds:.0f} s)")
    figures["peer"].update({
        "result": result.to_dict(), "seconds": seconds,
        "reference": {**SFACE_REFERENCE, "accuracy": args.reference_accuracy,
                      "accuracy_std": args.reference_std, "tolerance": args.tolerance,
                      "delta": delta, "within_tolerance": within},
    })

    pairs = read_pairs(args.pairs, root=args.root)
    paths = sorted(set(pairs.paths_a + pairs.paths_b))
    figures["decoder_check"] = _decoder_check(paths, decode_images)
    print(f"decoder: kerasface (TF) vs cv2.imread on {len(paths)} images: max |diff| "
          f"{figures['decoder_check']['max_abs_pixel_diff']}, "
          f"{figures['decoder_check']['images_differing']} images differ")

    if args.runtime == "opencv" and not args.no_reference_path:
        reference = _face_recognizer_path(args.peer, paths, pairs, peer, normalize_numpy,
                                          evaluate_scores)
        figures["reference_path"] = reference
        print(f"cv2.FaceRecognizerSF on cv2.imread: accuracy "
              f"{100 * reference['result']['accuracy']:.2f}% +- "
              f"{100 * reference['result']['accuracy_std']:.2f}; embeddings vs PeerModel "
              f"max |diff| {reference['max_abs_embedding_diff']:.2e}")

    model = None
    if args.model:
        model = open_embedder(args.model)
        started = time.perf_counter()
        model_result = verify_pairs(model, args.pairs, root=args.root, batch_size=args.batch_size)
        print(model_result.summary())
        figures["kerasface_model"] = {
            "path": args.model, "fingerprint": model_fingerprint(args.model),
            "result": model_result.to_dict(), "seconds": time.perf_counter() - started,
        }

    faces = decode_images(paths[:args.batch_size])
    batch = normalize_numpy(faces)
    embedders = {"peer": peer}
    if model is not None:
        embedders["kerasface_model"] = model.predict_on_batch
    load_before = os.getloadavg()
    figures["latency"] = _latency(embedders, batch, args.latency_runs, keras)
    figures["latency"]["threads"] = args.threads or "runtime defaults"
    # 1/5/15-minute load averages: this machine is shared, the timings are only as quiet as it.
    figures["latency"]["load_average_before"] = load_before
    figures["latency"]["load_average_after"] = os.getloadavg()
    for name, timing in figures["latency"].items():
        if isinstance(timing, dict) and "batch1_median_ms" in timing:
            print(f"latency {name}: batch 1 median {timing['batch1_median_ms']:.2f} ms, "
                  f"batch {args.batch_size}: {timing['per_image_in_batch_ms']:.2f} ms per image")

    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")
    return 0 if within else 1


def _decoder_check(paths, decode_images):
    import cv2

    ours = decode_images(paths)
    differing, largest = 0, 0
    for index, path in enumerate(paths):
        theirs = cv2.imread(path, cv2.IMREAD_COLOR)[..., ::-1]
        diff = int(np.abs(ours[index].astype(np.int16) - theirs).max())
        differing += diff > 0
        largest = max(largest, diff)
    return {"images": len(paths), "max_abs_pixel_diff": largest, "images_differing": differing,
            "kerasface_decoder": "tf.io.decode_jpeg(dct_method='INTEGER_ACCURATE')",
            "opencv": "cv2.imread (libjpeg-turbo, islow IDCT)"}


def _face_recognizer_path(sface, paths, pairs, peer, normalize_numpy, evaluate_scores):
    """SFace the way OpenCV's own code runs it, against PeerModel on the same files."""
    import cv2

    recognizer = cv2.FaceRecognizerSF.create(sface, "")
    theirs, ours = {}, {}
    for path in paths:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        feature = recognizer.feature(bgr)[0].astype(np.float64)
        theirs[path] = feature / np.linalg.norm(feature)
        ours[path] = peer(normalize_numpy(bgr[None, ..., ::-1]))[0]
    scores = np.array([theirs[a] @ theirs[b] for a, b in zip(pairs.paths_a, pairs.paths_b)])
    result = evaluate_scores(scores, pairs.issame, pairs.folds, name="cv2.FaceRecognizerSF")
    diff = max(float(np.abs(theirs[path] - ours[path]).max()) for path in paths)
    return {"result": result.to_dict(), "max_abs_embedding_diff": diff,
            "how": "cv2.imread BGR -> FaceRecognizerSF.feature -> L2-normalise -> cosine"}


def _latency(embedders, batch, runs, keras):
    """Batch-1 latency, calls interleaved across embedders, and per-image time in a batch."""
    single = batch[:1]
    for embed in embedders.values():  # warm-up: graph tracing, allocations
        for _ in range(5):
            embed(single)
        embed(batch)
    times = {name: [] for name in embedders}
    for _ in range(runs):
        for name, embed in embedders.items():
            start = time.perf_counter()
            keras.ops.convert_to_numpy(embed(single))
            times[name].append((time.perf_counter() - start) * 1000)
    batch_times = {name: [] for name in embedders}
    for _ in range(10):
        for name, embed in embedders.items():
            start = time.perf_counter()
            keras.ops.convert_to_numpy(embed(batch))
            batch_times[name].append((time.perf_counter() - start) * 1000)
    figures = {
        name: {
            "batch1_median_ms": float(np.median(times[name])),
            "batch1_p90_ms": float(np.percentile(times[name], 90)),
            "batch1_runs": runs,
            "batch_size": len(batch),
            "per_image_in_batch_ms": float(np.median(batch_times[name])) / len(batch),
        }
        for name in embedders
    }
    figures["how"] = (
        "wall time of one embed call from normalised float32 input to (B, D) output on the "
        "CPU; peer = PeerModel.__call__ (pixel conversion, NCHW "
        "transpose, OpenCV forward one image at a time, L2-normalise), kerasface model = "
        "keras Model.predict_on_batch (what embed_images calls); calls interleaved between the "
        "two models (200 at batch 1, 10 at the full batch)"
    )
    return figures


def _versions():
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("opencv-python-headless", "onnxruntime", "onnx", "tensorflow-cpu", "keras",
                 "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


if __name__ == "__main__":
    sys.exit(main())
