"""SFace distilled into a half-width MobileFaceNet on celeba_dev/train, against ArcFace from scratch.

The issue's experiment (docs/distillation.md): the student sees only ``celeba_dev/train``
(150 identities, 3151 faces) and is evaluated on ``val_pairs.txt`` (50 other identities).
Methods, all ``recipes/distill.py --preset small_cpu`` (MobileFaceNet at half width, 128-d,
batch 64, 10 epochs, SGD 0.1 cosine):

    arcface_scratch   no teacher: the recipe's ArcFace head (s=32, m=0.3) on the labels
    distill           cosine feature loss to SFace's embeddings (precomputed, with mirrors)
    distill_arcface   both: the feature loss plus ArcFace on the labels

The teacher's own accuracy on the same pairs is evaluated with the same code (``teacher``).

Run (resumable; each method is skipped once in the JSON):
    python bench/distillation.py --json docs/distillation.json --runs-dir /work/runs/distill
"""

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

METHODS = {
    "arcface_scratch": ["distill.teacher=None"],
    "distill": [],
    "distill_arcface": ["distill.margin_weight=1.0"],
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/celeba_dev", help="folder with train/, val/ and val_pairs.txt")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--runs-dir", default="runs/distill", help="one run directory per method")
    parser.add_argument("--json", default="docs/distillation.json", help="results file (methods already in it are skipped)")
    parser.add_argument("--cache-dir", default=None,
                        help="teacher-embedding cache shared by the methods (default: <runs-dir>/teacher_embeddings)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra recipe override for every method (repeatable)")
    parser.add_argument("--no-teacher-eval", action="store_true", help="skip evaluating the teacher on the pairs")
    args = parser.parse_args(argv)

    from kerasface.benchmark.method_runs import evaluate_embedding, format_results_table, run_methods
    from kerasface.recipe import load_recipe, preset_overrides

    data = Path(args.data)
    recipe_path = REPO / "recipes" / "distill.py"
    cache = args.cache_dir or str(Path(args.runs_dir) / "teacher_embeddings")
    eval_set = f"{data / 'val_pairs.txt'}:{data / 'val'}"
    base = [*preset_overrides(recipe_path, "small_cpu"), f"distill.cache_dir={cache!r}",
            f"eval.sets=[{eval_set!r}]", "eval.every_epochs=2", *args.overrides]
    command = "python bench/distillation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results = run_methods(recipe_path, METHODS, args.methods, args.runs_dir, args.json, data, base, command)
    if not args.no_teacher_eval and "teacher" not in results:
        from kerasface.evaluation.peer_model import PeerModel

        distill = load_recipe(recipe_path).distill
        results["teacher"] = {"path": distill.teacher, **evaluate_embedding(PeerModel(distill.teacher, **distill.teacher_kwargs), data)}
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(format_results_table(results))
    if "teacher" in results:
        teacher = results["teacher"]
        print(f"teacher {teacher['path']}: {100 * teacher['accuracy']:.2f}% ± {100 * teacher['accuracy_std']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
