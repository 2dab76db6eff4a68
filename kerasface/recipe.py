"""Training recipes: small frozen dataclasses, loaded from a file and overridden from the CLI."""

import ast
import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Optional


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the faces come from and how batches are made.

    ``root`` is a folder with one sub-folder per identity, a TFRecord directory from
    ``kerasface data convert`` or an insightface RecordIO (``train.rec``); None means the
    embedded synthetic identities (generated once into ``synthetic_dir``). ``augmentation``
    is a ``FaceAugmentation.from_string`` spec (``augment=False`` turns it off); ``sampler``
    is ``"shuffle"`` or ``"pk:PxK"``.
    """

    root: Optional[str] = None
    batch_size: int = 128
    augment: bool = True
    augmentation: str = "flip=0.5"
    sampler: str = "shuffle"
    synthetic_identities: int = 200
    synthetic_images_per_identity: int = 24
    synthetic_dir: str = "~/.cache/kerasface/synthetic"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A registered backbone; ``backbone_kwargs`` go to its constructor (e.g. width_multiplier)."""

    backbone: str = "mobilefacenet"
    embedding_size: int = 512
    backbone_kwargs: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """A registered head and its hyper-parameters.

    ``scale=None``/``margin=None`` keep the head's paper default; ``kwargs`` go to the head's
    constructor as well (e.g. ``--set head.kwargs={'t':1.1}`` for NPCFace).
    """

    name: str = "arcface"
    scale: Optional[float] = 64.0
    margin: Optional[float] = None
    kwargs: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """SGD with momentum and weight decay, and its learning-rate schedule.

    ``schedule`` is "cosine" (to 0 over the run, after ``warmup_epochs`` linear warm-up)
    or "piecewise" (multiply by ``decay_factor`` at each of ``decay_epochs``).
    """

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    decay_epochs: tuple = (10, 16, 18)
    decay_factor: float = 0.1


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    steps_per_epoch: Optional[int] = None
    seed: int = 0
    precision: str = "float32"
    strategy: str = "auto"
    jit_compile: bool = False


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Verification sets evaluated during training, choosing the kept ``best.keras``.

    ``sets`` are ``VerificationSet.load`` specs: ``"lfw.bin"``, ``"val_pairs.txt:ROOT"`` or
    ``"NAME=FILE:ROOT"`` (e.g. ``--set eval.sets="['val_pairs.txt:/data/val']"``); empty
    means no evaluation. They are evaluated every ``every_epochs`` epochs, or every
    ``every_steps`` training steps when that is set. ``metric`` (``"accuracy"``, ``"auc"``,
    ``"tar@far=1e-3"``, or ``"SET/NAME"`` for one set instead of the mean over sets) picks the
    best checkpoint; ``flip`` adds the mirrored image to each embedding.
    """

    sets: tuple = ()
    every_epochs: int = 1
    every_steps: Optional[int] = None
    metric: str = "accuracy"
    flip: bool = False

    def __post_init__(self):
        # A recipe file may well write a list, or a single spec.
        if isinstance(self.sets, str):
            object.__setattr__(self, "sets", (self.sets,))
        elif isinstance(self.sets, list):
            object.__setattr__(self, "sets", tuple(self.sets))


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A complete training configuration: data, model, head, optimizer, training loop, evaluation."""

    name: str = "arcface"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    head: HeadConfig = HeadConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def load_recipe(path_or_name=None):
    """The ``RECIPE`` object of a recipe file (``recipes/arcface.py``), or the default."""
    if path_or_name is None:
        return Recipe()
    path = Path(path_or_name)
    if not path.is_file():
        candidate = Path(__file__).resolve().parents[1] / "recipes" / f"{path_or_name}.py"
        if not candidate.is_file():
            raise FileNotFoundError(f"recipe {path_or_name!r}: no such file (nor {candidate})")
        path = candidate
    spec = importlib.util.spec_from_file_location(f"kerasface_recipe_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    recipe = getattr(module, "RECIPE", None)
    if not isinstance(recipe, Recipe):
        raise ValueError(f"{path}: must define RECIPE = kerasface.recipe.Recipe(...), got {type(recipe).__name__}")
    return recipe


def apply_overrides(recipe, overrides):
    """Apply ``["optimizer.lr=0.2", "train.epochs=3"]``; values parse as Python literals."""
    for override in overrides or ():
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ValueError(f"override must look like section.field=value, got {override!r}")
        recipe = _replace_path(recipe, key.strip().split("."), _parse_value(raw.strip()), override)
    return recipe


def _replace_path(obj, keys, value, override):
    names = [field.name for field in dataclasses.fields(obj)]
    if keys[0] not in names:
        raise ValueError(f"{override!r}: {type(obj).__name__} has no field {keys[0]!r}; fields: {', '.join(names)}")
    current = getattr(obj, keys[0])
    if len(keys) > 1:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"{override!r}: {keys[0]!r} is a value, not a section")
        value = _replace_path(current, keys[1:], value, override)
    elif dataclasses.is_dataclass(current):
        raise ValueError(f"{override!r}: {keys[0]!r} is a section; set one of its fields")
    elif isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    elif isinstance(current, tuple) and isinstance(value, str) and all(isinstance(item, str) for item in current):
        # `eval.sets=lfw.bin`: one item of a tuple of strings needs no list brackets.
        value = (value,)
    elif current is not None and value is not None and not isinstance(value, type(current)) and not (
        isinstance(current, float) and isinstance(value, (int, float)) and not isinstance(value, bool)
    ):
        raise ValueError(f"{override!r}: expected {type(current).__name__}, got {type(value).__name__} {value!r}")
    return dataclasses.replace(obj, **{keys[0]: value})


def _parse_value(raw):
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    if raw.lower() in ("none", "null"):
        return None
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw
