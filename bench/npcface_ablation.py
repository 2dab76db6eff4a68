"""NPCFace's Table I ablation on celeba_dev: ArcFace, +Neg, +Pos, both (docs/npcface.md).

All rows are ``recipes/npcface.py --preset small_cpu`` (MobileFaceNet at a quarter width,
128-d, s = 32, batch 64, 6 epochs) and share m0 = 0.4, so each row adds exactly one part:

    arcface   ArcFace with m = 0.4 (NPCFace with t = 1, alpha = 0, m1 = 0 is the same loss)
    neg       + hard-negative emphasis: t = 1.1, alpha = 0.25 (eq. 10), fixed margin m0
    pos       + cooperative margin: m1 = 0.2 (eq. 11-12), negatives untouched (t = 1, alpha = 0)
    npcface   both (eq. 13)

Each row reports val_pairs accuracy (10-fold) and TAR at FAR 1e-2 and at 1e-3, the lowest
FAR its 1500 impostor pairs support (one false accept in 1500 is 6.7e-4).

Run (resumable): python bench/npcface_ablation.py --json docs/npcface_ablation.json --runs-dir /work/runs/npcface
"""

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

METHODS = {
    "arcface": ["head.name=arcface", "head.margin=0.4", "head.kwargs={}"],
    "neg": ["head.kwargs={'t': 1.1, 'alpha': 0.25, 'm0': 0.4, 'm1': 0.0}"],
    "pos": ["head.kwargs={'t': 1.0, 'alpha': 0.0, 'm0': 0.4, 'm1': 0.2}"],
    "npcface": ["head.kwargs={'t': 1.1, 'alpha': 0.25, 'm0': 0.4, 'm1': 0.2}"],
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/celeba_dev", help="folder with train/, val/ and val_pairs.txt")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--runs-dir", default="runs/npcface", help="one run directory per method")
    parser.add_argument("--json", default="docs/npcface_ablation.json", help="results (methods in it are skipped)")
    parser.add_argument("--seed", type=int, default=0, help="train.seed of every run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra recipe override for every method (repeatable)")
    args = parser.parse_args(argv)

    from kerasface.benchmark.method_runs import format_results_table, run_methods
    from kerasface.recipe import preset_overrides

    recipe_path = REPO / "recipes" / "npcface.py"
    base = [*preset_overrides(recipe_path, "small_cpu"), f"train.seed={args.seed}", *args.overrides]
    command = "python bench/npcface_ablation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results = run_methods(recipe_path, METHODS, args.methods, Path(args.runs_dir), args.json, args.data, base, command)
    print(format_results_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
