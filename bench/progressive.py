"""LFRC's progressive loss wrapping (Tables 3 and 4 layout) on celeba_dev (docs/progressive.md).

``recipes/progressive.py --preset small_cpu``: the SE-MobileFaceNet of LFRC Table 1 at a
quarter width (budget-checked), 128-d, batch 64, 2 epochs of ArcFace then 1 per stage, every stage
warm-started from the best model of the stage before:

    arcface -> combined -> svgs -> intra_inter -> class_balanced -> pk -> long_tail

Each stage's final model is evaluated on val_pairs.txt (accuracy, TAR@FAR 1e-2 and 1e-3).

Run (resumable): python bench/progressive.py --json docs/progressive.json --runs-dir /work/runs/progressive
"""

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/celeba_dev", help="folder with train/, val/ and val_pairs.txt")
    parser.add_argument("--runs-dir", default="runs/progressive", help="the schedule's directory (one per stage inside)")
    parser.add_argument("--json", default="docs/progressive.json", help="results file")
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "progressive.py"), help="recipe file with a SCHEDULE")
    parser.add_argument("--preset", default="small_cpu", help="the recipe's preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra recipe override for every stage (repeatable)")
    args = parser.parse_args(argv)

    from kerasface.benchmark.method_runs import format_results_table, run_schedule

    command = f"python bench/{Path(__file__).name} " + " ".join(argv if argv is not None else sys.argv[1:])
    results = run_schedule(args.recipe, args.preset, args.data, args.runs_dir, args.json, command, args.overrides)
    print(format_results_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
