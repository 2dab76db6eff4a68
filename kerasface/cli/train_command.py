"""``kerasface train``: run a recipe with ``model.fit``."""

import dataclasses

from kerasface.recipe import apply_overrides, load_recipe, preset_overrides, smoke_overrides


def add_arguments(parser):
    parser.add_argument(
        "recipe",
        nargs="?",
        help="recipe file (e.g. recipes/arcface.py) or name of one in recipes/; default: the ArcFace recipe",
    )
    parser.add_argument("--data", action="append", default=None, metavar="DIR",
                        help="folder of aligned 112x112 faces, one sub-folder per identity (or TFRecord/RecordIO); "
                        "repeat it to train on several datasets, each with its own label range (DAIL: see the "
                        "recipe's dail section). Default: the embedded synthetic identities")
    parser.add_argument("--smoke", action="store_true",
                        help="a few steps on small batches to check that the recipe runs end to end "
                        "(the recipe file's SMOKE overrides, then your --set)")
    parser.add_argument("--preset", "--scale", dest="preset", default=None, metavar="NAME",
                        help="apply the recipe file's named preset (its PRESETS dict, e.g. small_cpu, or a "
                        "training-set scale such as ms1m) before --smoke and --set")
    parser.add_argument("--out", default=None, help="run directory (default: runs/<recipe name>); "
                        "rerunning with the same --out resumes from the last finished epoch")
    parser.add_argument("--epochs", type=int, help="shortcut for --set train.epochs=N")
    parser.add_argument("--batch-size", type=int, help="shortcut for --set data.batch_size=N")
    parser.add_argument("--strategy", choices=("auto", "mirrored", "multiworker", "onedevice"),
                        help="shortcut for --set train.strategy=... (multiworker: one process per worker, "
                        "each with its TF_CONFIG; see docs/scale.md)")
    parser.add_argument("--partial-fc", type=float, metavar="RATE", dest="sample_rate",
                        help="shortcut for --set head.sample_rate=RATE (Partial FC, e.g. 0.1)")
    parser.add_argument("--sharded", action="store_true", default=None,
                        help="shortcut for --set head.sharded=True: class centres split over the replicas")
    parser.add_argument("--precision", choices=("float32", "mixed_float16", "mixed_bfloat16"),
                        help="shortcut for --set train.precision=...")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe field, e.g. --set optimizer.lr=0.2 (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")


def recipe_from_args(args):
    return finalize_recipe(base_recipe_from_args(args), args)


def base_recipe_from_args(args):
    """The recipe file's recipe with its preset: what a progressive schedule's stages start from."""
    recipe = load_recipe(args.recipe)
    if getattr(args, "preset", None):
        recipe = apply_overrides(recipe, preset_overrides(args.recipe, args.preset))
    return recipe


def finalize_recipe(recipe, args):
    """--smoke, --set, --data and the shortcuts, applied last."""
    if args.smoke:
        recipe = apply_overrides(recipe, smoke_overrides(args.recipe))
    recipe = apply_overrides(recipe, args.overrides)
    if args.data:
        root = args.data[0] if len(args.data) == 1 else tuple(args.data)
        recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, root=root))
    shortcuts = {
        ("train", "epochs"): args.epochs,
        ("data", "batch_size"): args.batch_size,
        ("train", "strategy"): args.strategy,
        ("train", "precision"): args.precision,
        ("head", "sample_rate"): getattr(args, "sample_rate", None),
        ("head", "sharded"): getattr(args, "sharded", None),
    }
    for (section, field), value in shortcuts.items():
        if value is not None:
            recipe = dataclasses.replace(recipe, **{section: dataclasses.replace(getattr(recipe, section), **{field: value})})
    return recipe


def run(args):
    from kerasface.recipe import load_schedule
    from kerasface.training import train

    schedule = load_schedule(args.recipe)
    if schedule is not None:
        base = base_recipe_from_args(args)
        out_dir = args.out or f"runs/{base.name}"
        records = schedule.run(base, out_dir, finalize=lambda recipe: finalize_recipe(recipe, args),
                               verbose=2 if args.quiet else 1)
        for record in records:
            best = (record.get("verification") or {}).get("best") or {}
            shown = f"best {best.get('value'):.4f} at epoch {best.get('epoch')}" if best.get("value") is not None else ""
            print(f"stage {record['stage']}: {record['dir']} {shown}")
        print(f"done: {len(records)} stages in {out_dir} (progressive.json)")
        return 0
    recipe = recipe_from_args(args)
    out_dir = args.out or f"runs/{recipe.name}"
    result = train(recipe, out_dir, verbose=2 if args.quiet else 1)
    print(f"done: {result.out_dir}/model.keras, {result.out_dir}/embedding.keras; "
          f"{result.images_per_second:.1f} images/s (median over epochs)")
    if result.bad_records:
        print(f"{len(result.bad_records)} unreadable files were skipped; see {result.out_dir}/bad_records.txt")
    return 0
