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
    embedded synthetic identities (generated once into ``synthetic_dir``). A tuple of roots
    trains on several datasets at once, each keeping its own label range (see
    :class:`DAILConfig`); ``dataset_weights`` then sets how often each is drawn (None: in
    proportion to its size); ``synthetic_datasets=2`` splits the synthetic identities into
    two such datasets that share a third of their identities. ``augmentation``
    is a ``FaceAugmentation.from_string`` spec (``augment=False`` turns it off); ``sampler``
    is ``"shuffle"`` or ``"pk:PxK"`` (P identities x K images per batch, LFRC's "batch id=K").
    ``min_images_per_class`` cuts the long tail: identities with fewer images are left out
    (:func:`kerasface.data.cut_long_tail`, LFRC Fig. 5).
    """

    root: Optional[str] = dataclasses.field(default=None, metadata={"many": True})
    batch_size: int = 128
    augment: bool = True
    augmentation: str = "flip=0.5"
    sampler: str = "shuffle"
    synthetic_identities: int = 200
    synthetic_images_per_identity: int = 24
    synthetic_dir: str = "~/.cache/kerasface/synthetic"
    synthetic_datasets: int = 1
    dataset_weights: Optional[tuple] = None
    min_images_per_class: Optional[int] = None

    def __post_init__(self):
        if isinstance(self.root, list):
            object.__setattr__(self, "root", tuple(self.root))
        if isinstance(self.root, tuple) and len(self.root) == 1:
            object.__setattr__(self, "root", self.root[0])
        if isinstance(self.dataset_weights, list):
            object.__setattr__(self, "dataset_weights", tuple(self.dataset_weights))

    @property
    def roots(self):
        """The dataset roots as a tuple: ``()`` for the synthetic faces, else one per dataset."""
        if self.root is None:
            return ()
        return self.root if isinstance(self.root, tuple) else (self.root,)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A registered backbone; ``backbone_kwargs`` go to its constructor (e.g. width_multiplier).

    ``budget`` holds limits for :func:`kerasface.budget.check` (``max_macs``, ``max_flops``,
    ``max_params``, ``max_size_mb``, e.g. ``{'max_macs': '500M', 'max_size_mb': 20}``),
    counted on the backbone at batch 1 before training: a backbone over budget stops the run.
    """

    backbone: str = "mobilefacenet"
    embedding_size: int = 512
    backbone_kwargs: dict = dataclasses.field(default_factory=dict)
    budget: dict = dataclasses.field(default_factory=dict)


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
    # Partial FC: sample this fraction of the class centres per step (None: the dense head).
    sample_rate: Optional[float] = None
    # Shard the class centres over the replicas (ShardedHead; with sample_rate, per shard).
    sharded: bool = False


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """SGD with momentum and weight decay, and its learning-rate schedule.

    ``schedule`` is "cosine" (to 0 over the run, after ``warmup_epochs`` linear warm-up)
    or "piecewise" (multiply by ``decay_factor`` at each of ``decay_epochs``).
    ``weight_decay_multipliers`` scales the weight decay of the variables whose path matches
    a regular expression (``{'neck_linear': 10.0}``: AirFace's x10 on the layer into the
    embedding; 0 turns decay off); see :class:`kerasface.training.MultipliedDecaySGD`.
    """

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    decay_epochs: tuple = (10, 16, 18)
    decay_factor: float = 0.1
    weight_decay_multipliers: dict = dataclasses.field(default_factory=dict)
    # The batch `lr` is tuned for: the run's lr is lr * data.batch_size / this (linear scaling
    # rule, Goyal et al. 2017). None: `lr` is used as written.
    lr_reference_batch: Optional[int] = None
    # With Partial FC: update only the sampled centres and their momentum (LazySGD); False
    # gives Keras' SGD, which moves every centre each step (insightface v2's behaviour).
    sparse_updates: bool = True


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training loop. ``init_from`` starts the backbone from a trained model (a ``.keras``
    file or run directory with the same backbone), as DAIL fine-tunes a pre-trained ArcFace
    model, and with ``init_head`` the head's class centres too when their shape matches (a
    progressive stage continues its predecessor); ignored when a run resumes from its own
    backup. ``loss`` is "crossentropy" or "class_balanced"
    (:class:`kerasface.losses.ClassBalancedCrossentropy`, LFRC eq. 9, with the training set's
    class counts; ``loss_kwargs`` e.g. ``{'beta': 0.999}``)."""

    epochs: int = 20
    steps_per_epoch: Optional[int] = None
    seed: int = 0
    precision: str = "float32"
    strategy: str = "auto"
    jit_compile: bool = False
    init_from: Optional[str] = None
    init_head: bool = False
    loss: str = "crossentropy"
    loss_kwargs: dict = dataclasses.field(default_factory=dict)


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
class DAILConfig:
    """What happens when ``data.root`` names several datasets (DAIL, Wang et al., ICPR 2020).

    ``dataset_aware`` wraps the head in :class:`kerasface.heads.DatasetAwareHead` (eq. 3-4)
    with Crossing Dropout ``crossing_dropout_p`` (paper: 1e-4); False is the naive
    combination (one softmax over every dataset's classes). ``dataset_classifier`` adds
    DAIL's G_d, an MLP with ``classifier_units`` hidden units on the embedding, trained on
    the dataset index with weight ``dataset_loss_weight``. ``gradient_reversal`` is the
    stage-2 lambda (paper: 0.1): from optimizer step ``switch_step`` (None: the first step
    after ``switch_fraction`` of the run; paper: 80k of 240k) the dataset loss is reversed
    into the embedding, before it G_d trains on a stop-gradient view (eq. 9-10).
    ``ramp="ganin"`` raises lambda smoothly after the switch instead of in one step.
    With ``gradient_reversal=0`` the dataset classifier is only a probe of how much dataset
    information the embedding holds. With a single dataset the section is ignored, except that
    ``gradient_reversal > 0`` is an error (there is no dataset to be invariant to).
    """

    dataset_aware: bool = True
    crossing_dropout_p: float = 0.0
    dataset_classifier: bool = True
    classifier_units: tuple = (256,)
    dataset_loss_weight: float = 1.0
    gradient_reversal: float = 0.0
    switch_step: Optional[int] = None
    switch_fraction: float = 1.0 / 3.0
    ramp: str = "step"

    def __post_init__(self):
        if isinstance(self.classifier_units, list):
            object.__setattr__(self, "classifier_units", tuple(self.classifier_units))

    def resolved_switch_step(self, total_steps):
        """The first stage-2 step of a run of ``total_steps`` optimizer steps."""
        if self.switch_step is not None:
            return int(self.switch_step)
        return int(round(self.switch_fraction * total_steps))


@dataclasses.dataclass(frozen=True)
class LATSEConfig:
    """LATSE's generative decoder and teacher-student filter (Huang et al., ICML 2020).

    ``decoder=True`` adds the reversed ResNet-18 (:class:`kerasface.backbones.ResNetDecoder`,
    ``decoder_kwargs`` e.g. ``stage_channels``) that restores a face from the embedding,
    trained with ``generative_weight * GLoss`` (eq. 13-15; ``l1_weight``/``ssim_weight`` weigh
    its two terms) against each identity's momentum-mean image (eq. 12, ``target_momentum``),
    stored per class at ``target_resolution`` in ``target_dtype`` ("uint8", "float16" or
    "float32"). ``teacher`` turns on Algorithm 1's filter: a trained kerasface model (run
    directory or ``.keras``), a peer ``.onnx``/``.tflite`` face model (``teacher_kwargs`` go
    to its runner, e.g. ``{'runtime': 'opencv'}``), or ``"train"``: stage 1 trains the teacher
    into ``<out>/teacher`` with the recipe's head alone for ``teacher_epochs`` (None: as many
    as the student) before stage 2. A sample's gradient reaches the student only when its
    label is in the teacher's top ``teacher_k``; ``filter_mode="embedding"`` blocks only the
    gradient into the embedding, as Algorithm 1 does (head, decoder and mean image still learn
    from every sample); ``"sample"`` drops the sample from every loss and from the mean image.
    """

    decoder: bool = False
    decoder_kwargs: dict = dataclasses.field(default_factory=dict)
    generative_weight: float = 1.0
    l1_weight: float = 1.0
    ssim_weight: float = 1.0
    target_momentum: float = 0.9
    target_resolution: int = 112
    # Split the mean images over the replicas (IdentityMeanImages(sharded=True)): C/N per replica.
    shard_mean_images: bool = False
    target_dtype: str = "uint8"
    teacher: Optional[str] = None
    teacher_k: int = 1
    teacher_epochs: Optional[int] = None
    teacher_kwargs: dict = dataclasses.field(default_factory=dict)
    filter_mode: str = "embedding"

    @property
    def enabled(self):
        """True when the recipe trains a LATSE model (a decoder, a teacher filter or both)."""
        return self.decoder or self.teacher is not None


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Distillation from a teacher's embeddings (:class:`kerasface.models.Distiller`).

    ``teacher`` turns it on: a kerasface run directory or ``.keras`` file, a kerasface
    SavedModel directory, or a third-party ``.onnx``/``.tflite`` face model
    (``teacher_kwargs`` go to :class:`kerasface.evaluation.PeerModel`, e.g.
    ``{'runtime': 'opencv'}``). The student learns ``feature_weight`` x the ``feature_loss``
    ("cosine" or "l2") to the teacher's embedding of each face, plus ``similarity_weight`` x
    the batch similarity-matrix term, plus ``margin_weight`` x the recipe's margin head
    (0: no head at all, the labels are not needed by the loss). ``precompute=True`` embeds
    the training set (and its mirror images) once into ``cache_dir`` (None:
    ``<out>/teacher_embeddings``), resumable; False runs the teacher on every batch, which
    sees the augmented faces but costs a teacher forward pass per step. The pipeline's flip
    probability (``data.augmentation``) is applied in the model's step so that a mirrored
    face meets its mirror image's teacher embedding.
    """

    teacher: Optional[str] = None
    teacher_kwargs: dict = dataclasses.field(default_factory=dict)
    precompute: bool = True
    cache_dir: Optional[str] = None
    feature_loss: str = "cosine"
    feature_weight: float = 1.0
    margin_weight: float = 0.0
    similarity_weight: float = 0.0

    @property
    def enabled(self):
        """True when the recipe distils from a teacher."""
        return self.teacher is not None


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
    dail: DAILConfig = DAILConfig()
    latse: LATSEConfig = LATSEConfig()
    distill: DistillConfig = DistillConfig()

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def load_recipe(path_or_name=None):
    """The ``RECIPE`` object of a recipe file (``recipes/arcface.py``), or the default."""
    if path_or_name is None:
        return Recipe()
    module = _load_module(path_or_name)
    recipe = getattr(module, "RECIPE", None)
    if not isinstance(recipe, Recipe):
        raise ValueError(f"{module.__file__}: must define RECIPE = kerasface.recipe.Recipe(...), got {type(recipe).__name__}")
    return recipe


def load_schedule(path_or_name=None):
    """The recipe file's ``SCHEDULE`` (a :class:`kerasface.training.ProgressiveSchedule`), or None."""
    if path_or_name is None:
        return None
    schedule = getattr(_load_module(path_or_name), "SCHEDULE", None)
    if schedule is None:
        return None
    from kerasface.training.progressive_schedule import ProgressiveSchedule

    if not isinstance(schedule, ProgressiveSchedule):
        raise ValueError(f"{path_or_name}: SCHEDULE must be a ProgressiveSchedule, got {type(schedule).__name__}")
    return schedule


def _load_module(path_or_name):
    path = Path(path_or_name)
    if not path.is_file():
        candidate = Path(__file__).resolve().parents[1] / "recipes" / f"{path_or_name}.py"
        if not candidate.is_file():
            raise FileNotFoundError(f"recipe {path_or_name!r}: no such file (nor {candidate})")
        path = candidate
    spec = importlib.util.spec_from_file_location(f"kerasface_recipe_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# What ``--smoke`` changes in every recipe: a couple of short epochs on small batches and
# few synthetic faces; a recipe file adds its own in ``SMOKE = [...]``.
SMOKE_OVERRIDES = (
    "train.epochs=2",
    "train.steps_per_epoch=3",
    "data.batch_size=16",
    "data.synthetic_identities=12",
    "data.synthetic_images_per_identity=6",
    "eval.sets=()",
)


def smoke_overrides(path_or_name=None):
    """``SMOKE_OVERRIDES`` followed by the recipe file's own ``SMOKE`` list, if it has one."""
    if path_or_name is None:
        return list(SMOKE_OVERRIDES)
    module = _load_module(path_or_name)
    return [*SMOKE_OVERRIDES, *_override_list(getattr(module, "SMOKE", ()), f"{path_or_name}: SMOKE")]


def preset_overrides(path_or_name, preset):
    """The overrides of a recipe file's named preset: its ``PRESETS = {name: [...]}`` entry."""
    presets = getattr(_load_module(path_or_name), "PRESETS", {}) if path_or_name is not None else {}
    if preset not in presets:
        raise ValueError(
            f"recipe {path_or_name or '(default)'} has no preset {preset!r}; presets: {', '.join(presets) or 'none'}"
        )
    return _override_list(presets[preset], f"{path_or_name}: PRESETS[{preset!r}]")


def _override_list(value, what):
    """``value`` as a list of override strings, or an error naming ``what``."""
    if isinstance(value, str) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{what} must be a list of 'section.field=value' strings, got {value!r}")
    return list(value)


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
    elif _takes_many(obj, keys[0]) and isinstance(value, (list, tuple)):
        value = tuple(value)
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


def _takes_many(obj, name):
    return any(field.name == name and field.metadata.get("many") for field in dataclasses.fields(obj))


def _parse_value(raw):
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    if raw.lower() in ("none", "null"):
        return None
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw
