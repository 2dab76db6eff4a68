"""`kerasface align`: detect and align the faces of raw photos into 112x112 ArcFace crops."""

import json
import os
import sys

from kerasface.cli.argument_types import integer_at_least


def _confidence(text):
    try:
        value = float(text)
    except ValueError:
        raise _argument_error(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise _argument_error(f"expected a number in [0, 1], got {value}")
    return value


def _argument_error(message):
    import argparse

    return argparse.ArgumentTypeError(message)


def add_arguments(parser):
    """Add the `align` options to an argparse parser."""
    parser.add_argument(
        "src",
        metavar="SRC",
        help="folder of raw photos: SRC/*.jpg (flat) and/or SRC/<identity>/*.jpg; "
             "jpg, jpeg, png and bmp files are read, other files are counted and named",
    )
    parser.add_argument(
        "dst",
        metavar="DST",
        help="output folder (created, must not be inside SRC): DST/<identity>/<photo>.jpg crops "
             "(112x112 RGB JPEG, quality 95), DST/failed.txt (photos without a crop and why) and "
             "DST/multi_face.txt (photos with several faces). Crops already in DST are skipped, "
             "so re-running a stopped job continues it",
    )
    parser.add_argument(
        "--identities", default=None, metavar="FILE",
        help="text file of `file identity` lines (file relative to SRC): align only those photos, "
             "into DST/<identity>/; without it identity sub-folders of SRC are kept and flat "
             "photos go to DST/<photo>.jpg",
    )
    parser.add_argument(
        "--select", choices=("largest", "central", "largest_central"), default="largest",
        help="face kept when a photo holds several: the largest box, the one nearest the photo "
             "centre, or the largest after a penalty for distance from the centre "
             "(default: %(default)s)",
    )
    parser.add_argument(
        "--min-confidence", type=_confidence, default=0.9,
        help="MTCNN score a face needs, in [0, 1] (default: %(default)s). MTCNN itself stops at "
             "0.8; running again into the same DST with a lower value retries only the photos "
             "without a crop (those in DST/failed.txt)",
    )
    parser.add_argument(
        "--min-face-size", type=integer_at_least(12), default=20,
        help="smallest face side in pixels searched for, after --max-side shrinking "
             "(default: %(default)s)",
    )
    parser.add_argument(
        "--max-side", type=integer_at_least(64), default=1024,
        help="photos with a longer side are shrunk to it for detection only (crops are cut from "
             "the full photo); detection time grows with pixel count (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size", type=integer_at_least(1), default=16,
        help="photos per detector call; photos of similar shape are batched together "
             "(default: %(default)s)",
    )
    parser.add_argument(
        "--limit", type=integer_at_least(1), default=None,
        help="align at most this many photos (the first in sorted or identities-file order), "
             "for a quick try",
    )
    parser.add_argument(
        "--image-size", type=integer_at_least(16), default=112,
        help="side of the square crops; the ArcFace template is scaled to it (default: %(default)s)",
    )
    parser.add_argument(
        "--json", default=None, help="also write the summary counts to this JSON file"
    )
    return parser


def run(args):
    """Align ``args.src`` into ``args.dst``; returns the exit code (1 when no photo was aligned)."""
    from kerasface.data.face_aligner import FaceAligner
    from kerasface.data.face_detector import FaceDetector

    detector = FaceDetector(
        min_confidence=args.min_confidence,
        min_face_size=args.min_face_size,
        max_side=args.max_side,
        batch_size=args.batch_size,
    )
    aligner = FaceAligner(detector, image_size=args.image_size, select=args.select)
    try:
        summary = aligner.align_folder(
            args.src, args.dst, identities=args.identities, limit=args.limit,
            progress=lambda line: print(line, flush=True),
        )
    except ImportError as error:
        print(f"kerasface align: error: {error}", file=sys.stderr)
        return 1
    print(summary)
    if args.json:
        parent = os.path.dirname(os.fspath(args.json))
        if parent:
            os.makedirs(parent, exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(summary.to_dict(), f, indent=2)
        print(f"summary written to {args.json}")
    if summary.photos and summary.aligned + summary.skipped_existing == 0:
        return 1
    return 0
