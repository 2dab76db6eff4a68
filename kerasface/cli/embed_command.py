"""`kerasface embed`: embeddings of face images with any model file, written as .npy plus names."""

import os
import sys
from pathlib import Path

from kerasface.cli.argument_types import integer_at_least

_MAX_SHOWN = 20


def add_arguments(parser):
    """Add the `embed` options to an argparse parser."""
    parser.add_argument(
        "inputs", nargs="+", metavar="IMAGE_OR_DIR",
        help="face images, or folders searched recursively for .jpg/.jpeg/.png/.bmp files "
             "(sorted); aligned 112x112 RGB crops unless --align",
    )
    parser.add_argument(
        "--out", required=True, metavar="FILE.npy",
        help="write the float32 (N, D) L2-normalised embeddings here; the image paths, one per "
             "line in the same order, go to FILE.txt (see --names)",
    )
    parser.add_argument(
        "--names", default=None, metavar="FILE",
        help="where to write the image paths, one per line in row order (default: --out with "
             ".txt in place of .npy)",
    )
    parser.add_argument(
        "--align", action="store_true",
        help="the inputs are raw photos: detect and align the largest face (MTCNN, ArcFace "
             "template) before embedding; photos without a face are skipped and reported",
    )
    parser.add_argument(
        "--batch-size", type=integer_at_least(1), default=64,
        help="images per model call (default: %(default)s)",
    )
    add_model_arguments(parser)
    return parser


def add_model_arguments(parser):
    """--model, --threads, --device and the third-party model options (shared with `compare`)."""
    from kerasface.cli.eval_command import add_peer_arguments

    model = parser.add_argument_group("model")
    model.add_argument(
        "--model", required=True,
        help="a kerasface export (.tflite, .onnx, SavedModel directory), a .keras file or "
             "training run directory, or a third-party face model .onnx/.tflite (see "
             "--channel-order, --pixel-range, --layout, --input-size)",
    )
    add_peer_arguments(model)
    model.add_argument(
        "--threads", type=integer_at_least(1), default=None,
        help="runtime threads for LiteRT, onnxruntime and OpenCV (default: the runtime's own)",
    )
    model.add_argument(
        "--device", choices=("cpu", "gpu", "auto"), default="cpu",
        help="cpu; gpu = onnxruntime's CUDAExecutionProvider (needs onnxruntime-gpu) or "
             "TensorFlow's GPU; auto = the GPU when there is one (LiteRT and OpenCV always run "
             "on the CPU) (default: %(default)s)",
    )


def open_embedder(args, command):
    """The FaceEmbedder the arguments name, or None after printing why it cannot be opened."""
    from kerasface.infer import FaceEmbedder

    try:
        embedder = FaceEmbedder(
            args.model, runtime=args.runtime or "auto", channel_order=args.channel_order,
            pixel_range=args.pixel_range, layout=args.layout or "auto",
            input_size=args.input_size, num_threads=args.threads, device=args.device,
        )
    except (OSError, ValueError, RuntimeError, ImportError, TypeError) as error:
        print(f"kerasface {command}: error: cannot load model {args.model}: {error}",
              file=sys.stderr)
        return None
    print(f"model: {embedder.describe()}")
    return embedder


def make_aligner():
    from kerasface.data.face_aligner import FaceAligner

    return FaceAligner()


def load_face(path, embedder, aligner=None):
    """``(uint8 (H, W, 3) face, None)`` ready for ``embedder``, or ``(None, reason)``."""
    from kerasface.infer import read_rgb_image

    if aligner is not None:
        from kerasface.data.face_aligner import read_photo

        photo, reason = read_photo(path)
        if photo is None:
            return None, reason
        try:
            aligned = aligner.align(photo)
        except ValueError as error:
            return None, str(error)
        if aligned is None:
            return None, "no face found"
        face = aligned[0]
    else:
        try:
            face = read_rgb_image(path)
        except (OSError, ValueError) as error:
            return None, str(error).removeprefix(f"{path}: ")
    try:
        embedder.check_images(face)
    except (TypeError, ValueError) as error:
        return None, str(error)
    return face, None


def run(args):
    """Embed the images named by ``args``; returns the exit code (1 when none was embedded)."""
    import numpy as np

    out = Path(args.out)
    if out.suffix != ".npy":
        print(f"kerasface embed: error: --out must end in .npy, got {args.out}", file=sys.stderr)
        return 2
    names_path = Path(args.names) if args.names else out.with_suffix(".txt")
    files, skipped, not_images = _collect(args.inputs)
    missing = len(skipped)
    if not files and not skipped:
        print(f"kerasface embed: error: no image files in {' '.join(args.inputs)}"
              + (f" ({not_images} files that are not images)" if not_images else ""),
              file=sys.stderr)
        return 1
    embedder = open_embedder(args, "embed")
    if embedder is None:
        return 1
    aligner = make_aligner() if args.align else None

    names, rows, pending = [], [], []

    def flush():
        # One model call per image size (a third-party model takes two sizes).
        sizes = {}
        for index, (_, face) in enumerate(pending):
            sizes.setdefault(face.shape, []).append(index)
        embedded = [None] * len(pending)
        for indices in sizes.values():
            batch = np.stack([pending[i][1] for i in indices])
            for i, row in zip(indices, embedder.embed(batch, batch_size=args.batch_size)):
                embedded[i] = row
        names.extend(name for name, _ in pending)
        rows.extend(embedded)
        pending.clear()

    for path in files:
        face, reason = load_face(path, embedder, aligner)
        if face is None:
            skipped.append((path, reason))
            continue
        pending.append((path, face))
        if len(pending) >= args.batch_size:
            flush()
    if pending:
        flush()

    total = len(files) + missing
    if not_images:
        print(f"{not_images} files in the folders are not images (by extension) and were left out")
    if skipped:
        _report_skipped(skipped, out)
    if not rows:
        print(f"kerasface embed: error: none of {total} images could be embedded", file=sys.stderr)
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    names_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, np.stack(rows).astype(np.float32))
    names_path.write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    print(f"embedded {len(rows)} of {total} images ({len(skipped)} skipped) -> {out} "
          f"({len(rows)}x{embedder.embedding_size} float32), names -> {names_path}")
    return 0


def _collect(inputs):
    """``(image files in order, [(missing path, reason)], number of non-image files in folders)``."""
    from kerasface.data.folder_source import IMAGE_EXTENSIONS

    files, missing, not_images = [], [], 0
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    if name.lower().endswith(IMAGE_EXTENSIONS):
                        files.append(os.path.join(root, name))
                    else:
                        not_images += 1
        elif path.is_file():
            files.append(item)
        else:
            missing.append((item, "no such file or folder"))
    return files, missing, not_images


def _report_skipped(skipped, out):
    print(f"skipped {len(skipped)} images:", file=sys.stderr)
    for path, reason in skipped[:_MAX_SHOWN]:
        print(f"  {path}: {reason}", file=sys.stderr)
    if len(skipped) > _MAX_SHOWN:
        listing = out.with_suffix(".skipped.txt")
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text("".join(f"{path}\t{reason}\n" for path, reason in skipped),
                           encoding="utf-8")
        print(f"  ... and {len(skipped) - _MAX_SHOWN} more; all are listed in {listing}",
              file=sys.stderr)
