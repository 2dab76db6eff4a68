"""Progressive loss wrapping: train stage after stage, each warm-started from the one before."""

import dataclasses
import json
import re
from pathlib import Path

_STAGE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclasses.dataclass(frozen=True)
class ProgressiveStage:
    """One stage: a name (its run directory), the recipe overrides it adds, its length.

    Args:
        name: letters, digits, ``_``, ``-`` or ``.``.
        overrides: ``"section.field=value"`` strings (``kerasface.recipe.apply_overrides``).
        epochs_scale: the stage trains ``round(epochs_scale * train.epochs)`` epochs (at least
            1), of the recipe as finally set, so that a preset or ``--epochs`` keeps the
            stages' proportions (e.g. a fine-tuning stage at 0.2 of the run).
    """

    name: str
    overrides: tuple = ()
    epochs_scale: float = 1.0

    def __post_init__(self):
        if not isinstance(self.name, str) or not _STAGE_NAME.match(self.name):
            raise ValueError(f"a stage name must be letters, digits, '_', '-' or '.', got {self.name!r}")
        overrides = (self.overrides,) if isinstance(self.overrides, str) else tuple(self.overrides)
        if not all(isinstance(item, str) for item in overrides):
            raise ValueError(f"stage {self.name}: overrides must be 'section.field=value' strings, got {overrides!r}")
        object.__setattr__(self, "overrides", overrides)
        if not self.epochs_scale > 0:
            raise ValueError(f"stage {self.name}: `epochs_scale` must be > 0, got {self.epochs_scale}")


class ProgressiveSchedule:
    """A sequence of losses trained one stage at a time (LFRC, Chai et al. 2019, Sec. 3.2).

    LFRC trains its backbone with ArcFace to convergence, then "adds one of the following loss
    functions at each time ... till all the loss functions are added", each stage starting
    from the current best model (Table 3: ArcFace, combined margin, + svgs, + intra + inter;
    Table 4: + class-balanced CE, + PK batches). Any recipe can be wrapped this way: a stage
    is a set of overrides of the recipe (a head, its kwargs, ``train.loss``,
    ``data.sampler``, ...). Stage k trains into ``<out>/<k>_<name>`` with
    ``train.init_from`` set to stage k-1's best model (``best.keras`` when the recipe
    evaluates, else ``model.keras``) and ``train.init_head=True``, so the class centres carry
    over whenever the classes do. A finished stage (its ``summary.json``) is not trained again
    and an interrupted one resumes from its last epoch, so rerunning the same command
    continues the schedule. ``<out>/progressive.json`` lists every stage's recipe changes
    and results.

    Args:
        stages: :class:`ProgressiveStage` objects, or ``(name, [overrides])`` pairs.
        cumulative: a stage keeps the overrides of the stages before it (LFRC "wraps" losses);
            False applies each stage's own overrides to the base recipe only.
        warm_start: "best" (the stage's ``best.keras`` when there is one) or "last".
    """

    def __init__(self, stages, cumulative=True, warm_start="best"):
        stages = [stage if isinstance(stage, ProgressiveStage) else ProgressiveStage(*stage) for stage in stages]
        if not stages:
            raise ValueError("a ProgressiveSchedule needs at least one stage, got none")
        names = [stage.name for stage in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        if warm_start not in ("best", "last"):
            raise ValueError(f"`warm_start` must be 'best' or 'last', got {warm_start!r}")
        self.stages = stages
        self.cumulative = bool(cumulative)
        self.warm_start = warm_start

    def stage_overrides(self, index):
        """The overrides stage ``index`` applies to the base recipe."""
        if self.cumulative:
            return [item for stage in self.stages[: index + 1] for item in stage.overrides]
        return list(self.stages[index].overrides)

    def stage_recipes(self, recipe, finalize=None):
        """``[(stage, recipe)]``: the base recipe with each stage's overrides, then ``finalize``.

        ``finalize(recipe) -> recipe`` applies what must come last (``--smoke``, ``--set``,
        ``--data``), so a command-line override wins over every stage.
        """
        from kerasface.recipe import apply_overrides

        recipes = []
        for index, stage in enumerate(self.stages):
            staged = apply_overrides(recipe, self.stage_overrides(index))
            staged = dataclasses.replace(staged, name=f"{recipe.name}_{stage.name}")
            if finalize is not None:
                staged = finalize(staged)
            if stage.epochs_scale != 1.0:
                epochs = max(1, round(stage.epochs_scale * staged.train.epochs))
                staged = dataclasses.replace(staged, train=dataclasses.replace(staged.train, epochs=epochs))
            recipes.append((stage, staged))
        return recipes

    def stage_dir(self, out_dir, index):
        return Path(out_dir) / f"{index}_{self.stages[index].name}"

    def run(self, recipe, out_dir, finalize=None, verbose=1, print_fn=print, train_fn=None):
        """Train every stage in order into ``out_dir``; returns the per-stage records.

        Args:
            recipe: the base recipe (what every stage starts from).
            out_dir: the schedule's directory.
            finalize: see :meth:`stage_recipes`.
            verbose, print_fn: passed to ``train``.
            train_fn: the training function (default :func:`kerasface.training.train`).
        """
        if train_fn is None:
            from kerasface.training.train_model import train as train_fn
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        records = []
        previous = None
        for index, (stage, staged) in enumerate(self.stage_recipes(recipe, finalize)):
            stage_dir = self.stage_dir(out_dir, index)
            if previous is not None:
                staged = dataclasses.replace(
                    staged, train=dataclasses.replace(staged.train, init_from=str(previous), init_head=True)
                )
            summary_path = stage_dir / "summary.json"
            if summary_path.is_file() and (stage_dir / "model.keras").is_file():
                print_fn(f"stage {index} {stage.name}: already trained in {stage_dir}")
            else:
                print_fn(f"stage {index} {stage.name}: {', '.join(stage.overrides) or 'the base recipe'}"
                         + (f", warm-started from {previous}" if previous else ""))
                train_fn(staged, stage_dir, verbose=verbose, print_fn=print_fn)
            summary = json.loads(summary_path.read_text())
            best = stage_dir / "best.keras"
            previous = best if self.warm_start == "best" and best.is_file() else stage_dir / "model.keras"
            records.append({
                "stage": stage.name,
                "dir": str(stage_dir),
                "overrides": list(stage.overrides),
                "warm_start": records[-1]["next_from"] if records else None,
                "next_from": str(previous),
                "epochs": summary.get("epochs"),
                "final_history": {key: values[-1] for key, values in summary.get("history", {}).items() if values},
                "verification": summary.get("verification"),
            })
            (out_dir / "progressive.json").write_text(json.dumps({"stages": records}, indent=2))
        return records
