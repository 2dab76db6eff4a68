"""Do `kerasface align` crops verify as well as reference crops of the same photos?

    kerasface align ../shared/data/celeba_dev/raw_val /work/runs/aligned_raw_val \\
        --identities ../shared/data/celeba_dev/raw_val_identities.txt
    python bench/alignment_check.py --model /work/runs/celeba_arcface \\
        --pairs ../shared/data/celeba_dev/val_pairs.txt \\
        --reference-root ../shared/data/celeba_dev/val --aligned-root /work/runs/aligned_raw_val \\
        --json /work/runs/alignment_check.json

Embeds every image of the pairs list twice with the same model: the reference crop
(``--reference-root``, e.g. the YuNet crops shipped in celeba_dev/val) and our crop of the same
photo (``--aligned-root``, same relative path). No pair is dropped silently: a pair whose photo
got no crop (listed in ``<aligned-root>/failed.txt``) is counted and named, and accuracy is
reported three ways:

- reference crops, all pairs;
- both crop sets on the pairs where every photo has our crop (same pairs, same folds);
- ours "strict": every pair with a missing crop counted as an error.

Also prints how alike the two crops of each photo look to the model (cosine similarity of the
two embeddings), which flags photos where another face than the reference one was kept.

``--sface ONNX`` judges with OpenCV's SFace instead of a kerasface model (a far stronger model,
~96% on celeba_dev val_pairs, so it notices small alignment differences a weak model misses);
it needs OpenCV's DNN module, which kerasface does not depend on:
``pip install opencv-python-headless==4.14.0.94`` (OpenCV 5.0 rejects that block-quantised file).

    python bench/alignment_check.py \
        --sface ../shared/models/opencv_zoo/face_recognition_sface_2021dec_int8bq.onnx \
        --pairs ../shared/data/celeba_dev/val_pairs.txt \
        --reference-root ../shared/data/celeba_dev/val --aligned-root /work/runs/aligned_raw_val
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

_SHOWN = 10


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    judge = parser.add_mutually_exclusive_group(required=True)
    judge.add_argument("--model", help="kerasface embedding model (.keras or run dir)")
    judge.add_argument("--sface", help="OpenCV SFace .onnx file (needs opencv-python-headless)")
    parser.add_argument("--pairs", required=True, help="`a b issame` pairs file (10 folds)")
    parser.add_argument("--reference-root", required=True, help="folder of the reference crops")
    parser.add_argument("--aligned-root", required=True, help="folder of `kerasface align` crops")
    parser.add_argument("--flip", action="store_true", help="flip test for both crop sets")
    parser.add_argument("--batch-size", type=int, default=64, help="images per model call")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = parser.parse_args(argv)

    from kerasface.evaluation.embed_images import embed_images
    from kerasface.evaluation.pairs_file import read_pairs
    from kerasface.evaluation.verification import evaluate_scores
    from kerasface.models import load_embedding_model

    reference_root = os.path.abspath(args.reference_root)
    aligned_root = os.path.abspath(args.aligned_root)
    pairs = read_pairs(args.pairs, root=reference_root)
    relative = sorted({os.path.relpath(p, reference_root) for p in pairs.paths_a + pairs.paths_b})
    have = {rel for rel in relative if os.path.isfile(os.path.join(aligned_root, rel))}
    missing = [rel for rel in relative if rel not in have]
    reasons = _failed_reasons(aligned_root)

    if args.sface:
        from kerasface.evaluation.peer_model import PeerModel

        try:
            # SFace: RGB 0-255 NCHW 1x3x112x112 (layout read from the file), batch 1.
            model = PeerModel(args.sface, runtime="opencv")
        except ImportError as error:
            raise SystemExit(str(error)) from None
    else:
        model = load_embedding_model(args.model)

    def embed(paths):
        return embed_images(model, paths, args.batch_size, args.flip)

    reference = dict(zip(relative, embed([os.path.join(reference_root, rel) for rel in relative])))
    ours_list = sorted(have)
    ours = dict(zip(ours_list, embed([os.path.join(aligned_root, rel) for rel in ours_list])))

    rel_a = [os.path.relpath(p, reference_root) for p in pairs.paths_a]
    rel_b = [os.path.relpath(p, reference_root) for p in pairs.paths_b]
    complete = np.array([a in have and b in have for a, b in zip(rel_a, rel_b)])

    def scores(table, keep):
        return np.array([float(np.dot(table[a], table[b])) if k else np.nan
                         for a, b, k in zip(rel_a, rel_b, keep)])

    everything = np.ones(len(pairs), bool)
    reference_scores = scores(reference, everything)
    ours_scores = scores(ours, complete)
    results = {
        "reference_all": evaluate_scores(reference_scores, pairs.issame, pairs.folds,
                                         name="reference crops, all pairs"),
        "reference_subset": evaluate_scores(reference_scores[complete], pairs.issame[complete],
                                            pairs.folds[complete],
                                            name="reference crops, pairs with our crops"),
        "ours_subset": evaluate_scores(ours_scores[complete], pairs.issame[complete],
                                       pairs.folds[complete], name="our crops, same pairs"),
    }
    # Strict: fold accuracy over every pair of the fold, pairs without our crop being errors.
    subset = results["ours_subset"]
    fold_ids = np.unique(pairs.folds)
    strict_folds = np.array([
        subset.fold_accuracies[k] * np.count_nonzero(complete & (pairs.folds == fold))
        / np.count_nonzero(pairs.folds == fold)
        for k, fold in enumerate(np.unique(pairs.folds[complete]))
    ]) if len(np.unique(pairs.folds[complete])) == len(fold_ids) else None

    same_photo = np.array([float(np.dot(reference[rel], ours[rel])) for rel in ours_list])
    order = np.argsort(same_photo)

    judge_name = args.sface or args.model
    lines = [f"{args.pairs}: {len(pairs)} pairs over {len(relative)} images; model {judge_name}"
             f"{' (flip)' if args.flip else ''}"]
    lines.append(f"our crops: {len(have)} of {len(relative)} images; {len(missing)} missing -> "
                 f"{int(np.count_nonzero(~complete))} pairs without both crops "
                 f"({int(np.count_nonzero(~complete & pairs.issame))} genuine, "
                 f"{int(np.count_nonzero(~complete & ~pairs.issame))} impostor)")
    for rel in missing[:_SHOWN]:
        lines.append(f"  missing {rel}: {reasons.get(os.path.basename(rel), 'no reason recorded')}")
    if len(missing) > _SHOWN:
        lines.append(f"  ... ({len(missing) - _SHOWN} more)")
    for key, result in results.items():
        lines.append(f"{result.name}: {result.num_pairs} pairs, accuracy "
                     f"{100 * result.accuracy:.2f}% +- {100 * result.accuracy_std:.2f}, "
                     f"AUC {result.auc:.4f}")
    if strict_folds is not None:
        lines.append(f"our crops, strict (missing = wrong): {len(pairs)} pairs, accuracy "
                     f"{100 * strict_folds.mean():.2f}% +- {100 * strict_folds.std():.2f}")
    delta = results["ours_subset"].accuracy - results["reference_subset"].accuracy
    lines.append(f"ours - reference on the same pairs: {100 * delta:+.2f} points")
    lines.append(
        f"cosine(our crop, reference crop) per image: mean {same_photo.mean():.3f}, median "
        f"{np.median(same_photo):.3f}, 5th percentile {np.percentile(same_photo, 5):.3f}, "
        f"min {same_photo.min():.3f}; below 0.5: {int(np.count_nonzero(same_photo < 0.5))}"
    )
    for index in order[:5]:
        lines.append(f"  least alike: {ours_list[index]} cos {same_photo[index]:.3f}")
    print("\n".join(lines))

    if args.json:
        figures = {
            "pairs": args.pairs, "model": str(judge_name), "flip": args.flip,
            "images": len(relative), "images_aligned": len(have), "images_missing": missing,
            "pairs_without_crops": int(np.count_nonzero(~complete)),
            **{key: result.to_dict() for key, result in results.items()},
            "ours_strict_accuracy": None if strict_folds is None else float(strict_folds.mean()),
            "ours_minus_reference_same_pairs": float(delta),
            "same_photo_cosine": {
                "mean": float(same_photo.mean()), "median": float(np.median(same_photo)),
                "p5": float(np.percentile(same_photo, 5)), "min": float(same_photo.min()),
                "below_0.5": int(np.count_nonzero(same_photo < 0.5)),
                "least_alike": [[ours_list[i], float(same_photo[i])] for i in order[:20]],
            },
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(figures, f, indent=2)
        print(f"figures written to {args.json}")
    return 0


def _failed_reasons(aligned_root):
    path = os.path.join(aligned_root, "failed.txt")
    reasons = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                name, _, reason = line.rstrip("\n").partition("\t")
                reasons[os.path.basename(name)] = reason
    return reasons


if __name__ == "__main__":
    sys.exit(main())
