"""Train a recipe under several named override sets, evaluate each on a pairs list, keep a JSON."""

import dataclasses
import json
import time
from pathlib import Path

FARS = (1e-2, 1e-3)


def evaluate_embedding(embed_fn, data, pairs="val_pairs.txt", root="val", fars=FARS):
    """Verification metrics of an embedding model on ``data/pairs`` (accuracy, TAR@FAR, AUC)."""
    from kerasface.evaluation import verify_pairs

    data = Path(data)
    result = verify_pairs(embed_fn, data / pairs, root=data / root, fars=fars)
    entry = {"accuracy": result.accuracy, "accuracy_std": result.accuracy_std, "auc": result.auc}
    for far in fars:
        point = result.tar_at_far.get(far)
        entry[f"tar_at_far_{far:g}"] = None if point is None else point.tar
    entry["num_impostors"] = int(result.num_impostor)
    return entry


def run_methods(recipe_path, methods, chosen, runs_dir, results_path, data, base_overrides=(), command="",
                evaluate=None, name_prefix=None):
    """Train each chosen method (a list of overrides on the recipe) and record its evaluation.

    Resumable: a method already in ``results_path`` is skipped, and an interrupted training
    run resumes from its last epoch (``kerasface.training.train``).

    Args:
        recipe_path: the recipe file.
        methods: ``{name: [override, ...]}``.
        chosen: names to run, in order.
        runs_dir: one run directory per method under it.
        results_path: the JSON file (``{"command", "setup", "methods": {name: entry}}``).
        data: folder with ``train/``, ``val/`` and ``val_pairs.txt``.
        base_overrides: overrides applied before each method's own.
        command: the command line, recorded.
        evaluate: ``fn(result, data) -> dict`` (default: :func:`evaluate_embedding` of the
            trained embedding model and the per-epoch training metrics).
        name_prefix: recipe name prefix of the runs (default: the recipe's name).
    """
    import keras

    from kerasface.recipe import apply_overrides, load_recipe
    from kerasface.training import train

    data, runs_dir, results_path = Path(data), Path(runs_dir), Path(results_path)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results.setdefault("methods", {})
    results["command"] = command
    results.setdefault("setup", {"recipe": str(recipe_path), "overrides": list(base_overrides),
                        "methods": {name: methods[name] for name in chosen}})
    base = apply_overrides(load_recipe(recipe_path), [f"data.root={str(data / 'train')!r}", *base_overrides])
    for method in chosen:
        if method in results["methods"]:
            print(f"{method}: already in {results_path}, skipped")
            continue
        recipe = apply_overrides(base, methods[method])
        recipe = dataclasses.replace(recipe, name=f"{name_prefix or base.name}_{method}")
        started = time.time()
        result = train(recipe, runs_dir / method, verbose=2)
        entry = (evaluate or default_evaluation)(result, data)
        entry["train_seconds"] = round(time.time() - started, 1)
        results["methods"][method] = entry
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=2))
        print(f"{method}: {json.dumps(entry)}")
        keras.backend.clear_session()
    return results


def default_evaluation(result, data):
    """:func:`evaluate_embedding` of a finished run, with its per-epoch training metrics."""
    entry = evaluate_embedding(result.model.embedding_model, data)
    for key, values in result.history.items():
        if key.endswith(("loss", "accuracy", "teacher_cosine")):
            entry[f"epoch_{key}"] = [round(float(v), 4) for v in values]
    entry["images_per_second"] = result.images_per_second
    return entry


def format_results_table(results, columns=None):
    """Markdown rows: method, val accuracy +- std, TAR at each FAR, AUC."""
    fars = columns or FARS
    header = "| method | val_pairs accuracy | " + " | ".join(f"TAR@FAR={far:g}" for far in fars) + " | AUC |"
    lines = [header, "|" + "---|" * (3 + len(fars))]
    for method, entry in results["methods"].items():
        tars = " | ".join(
            "-" if entry.get(f"tar_at_far_{far:g}") is None else f"{entry[f'tar_at_far_{far:g}']:.4f}" for far in fars
        )
        lines.append(
            f"| {method} | {100 * entry['accuracy']:.2f}% ± {100 * entry['accuracy_std']:.2f} | {tars} | "
            f"{entry['auc']:.4f} |"
        )
    return "\n".join(lines)


def run_schedule(recipe_path, preset, data, runs_dir, results_path, command="", overrides=(), evaluate=None):
    """Train a recipe file's ``SCHEDULE`` with a preset and record each stage's evaluation.

    Every stage evaluates ``data/val_pairs.txt`` at each epoch end (its ``best.keras`` warm-starts
    the next stage); afterwards each stage's final model is evaluated with
    :func:`evaluate_embedding`. Resumable, as :meth:`ProgressiveSchedule.run`.
    """
    from kerasface.models.loading import load_embedding_model
    from kerasface.recipe import apply_overrides, load_recipe, load_schedule, preset_overrides

    data, runs_dir, results_path = Path(data), Path(runs_dir), Path(results_path)
    schedule = load_schedule(recipe_path)
    base = apply_overrides(load_recipe(recipe_path), preset_overrides(recipe_path, preset) if preset else [])
    eval_set = f"{data / 'val_pairs.txt'}:{data / 'val'}"
    late = [f"eval.sets=[{eval_set!r}]", *overrides]

    def finalize(recipe):
        recipe = apply_overrides(recipe, late)
        return dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, root=str(data / "train")))

    started = time.time()
    records = schedule.run(base, runs_dir, finalize=finalize, verbose=2)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results.update({"command": command, "setup": {"recipe": str(recipe_path), "preset": preset,
                                                  "overrides": list(overrides)}})
    results.setdefault("methods", {})
    for record in records:
        if record["stage"] in results["methods"]:
            continue
        entry = (evaluate or evaluate_embedding)(load_embedding_model(Path(record["dir"]) / "model.keras"), data)
        entry["overrides"] = record["overrides"]
        entry["best_during_training"] = (record.get("verification") or {}).get("best")
        entry["final_history"] = record["final_history"]
        results["methods"][record["stage"]] = entry
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=2))
    results["schedule_seconds"] = round(time.time() - started, 1)
    results_path.write_text(json.dumps(results, indent=2))
    return results
