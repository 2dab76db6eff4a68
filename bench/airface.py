"""AirFace on celeba_dev: Li-ArcFace from scratch at 128-d, then ArcFace and combined fine-tuning.

``recipes/airface.py --preset small_cpu`` (the AirFace network at a quarter width, batch 64,
8 epochs of Li-ArcFace, 2 of each fine-tuning stage; weight decay 5e-4 with x10 on the
layer into the embedding). Results in docs/airface.md.

Extra single runs on the same preset (``--extras``), for the paper's two claims:

    arcface_scratch   ArcFace (m = 0.5, s = 64) from scratch instead of Li-ArcFace (Sec. 4.1:
                      "diverged after about 1600 iterations" at 128-d)
    wd_mult1          Li-ArcFace with the same weight decay on every layer (Table 2's 5e-4 row)

Run (resumable): python bench/airface.py --json docs/airface.json --runs-dir /work/runs/airface [--extras ...]
"""

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

EXTRAS = {
    "arcface_scratch": ["head.name=arcface", "head.margin=0.5"],
    "wd_mult1": ["optimizer.weight_decay_multipliers={}"],
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/celeba_dev", help="folder with train/, val/ and val_pairs.txt")
    parser.add_argument("--runs-dir", default="runs/airface", help="the schedule's directory; extras go beside it")
    parser.add_argument("--json", default="docs/airface.json", help="results file")
    parser.add_argument("--extras", nargs="*", choices=list(EXTRAS), default=[], help="extra single runs")
    parser.add_argument("--no-schedule", action="store_true", help="only the extras")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra recipe override for every stage and extra (repeatable)")
    args = parser.parse_args(argv)

    from kerasface.benchmark.method_runs import format_results_table, run_methods, run_schedule
    from kerasface.recipe import preset_overrides

    recipe = REPO / "recipes" / "airface.py"
    command = "python bench/airface.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if not args.no_schedule:
        run_schedule(recipe, "small_cpu", args.data, args.runs_dir, args.json, command, args.overrides)
    if args.extras:
        data = Path(args.data)
        eval_set = f"{data / 'val_pairs.txt'}:{data / 'val'}"
        base = [*preset_overrides(recipe, "small_cpu"), f"eval.sets=[{eval_set!r}]", "eval.every_epochs=2",
                *args.overrides]
        run_methods(recipe, EXTRAS, args.extras, Path(args.runs_dir) / "extras", args.json, data, base, command)
    import json

    print(format_results_table(json.loads(Path(args.json).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
