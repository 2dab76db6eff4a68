"""`kerasface compare`: cosine similarity of two face images, and same/different at a threshold."""

import argparse
import sys


def _cosine_threshold(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a cosine in [-1, 1], got {text!r}") from None
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a cosine in [-1, 1], got {value}")
    return value


def add_arguments(parser):
    """Add the `compare` options to an argparse parser."""
    from kerasface.cli.embed_command import add_model_arguments

    parser.add_argument("image1", metavar="IMG1", help="first face image (aligned 112x112 crop "
                                                       "unless --align)")
    parser.add_argument("image2", metavar="IMG2", help="second face image")
    parser.add_argument(
        "--threshold", type=_cosine_threshold, default=None,
        help="decision threshold on the cosine: print 'same person' at or above it, 'different "
             "people' below (e.g. the threshold `kerasface eval` reports for the model)",
    )
    parser.add_argument(
        "--align", action="store_true",
        help="the images are raw photos: detect and align the largest face of each first",
    )
    add_model_arguments(parser)
    return parser


def run(args):
    """Print the cosine of the two faces (and the decision); returns the exit code."""
    from kerasface.cli.embed_command import load_face, make_aligner, open_embedder

    embedder = open_embedder(args, "compare")
    if embedder is None:
        return 1
    aligner = make_aligner() if args.align else None
    faces = []
    for path in (args.image1, args.image2):
        face, reason = load_face(path, embedder, aligner)
        if face is None:
            print(f"kerasface compare: error: {path}: {reason}", file=sys.stderr)
            return 1
        faces.append(face)
    score = embedder.compare(faces[0], faces[1])
    print(f"cosine similarity: {score:.4f}")
    if args.threshold is not None:
        if score >= args.threshold:
            print(f"same person (cosine {score:.4f} >= threshold {args.threshold:g})")
        else:
            print(f"different people (cosine {score:.4f} < threshold {args.threshold:g})")
    return 0
