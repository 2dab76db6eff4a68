"""AirFace: Li-ArcFace on a deeper MobileFaceNet with CBAM, from scratch at 128-d, then fine-tuning.

Li et al., "AirFace: Lightweight and Efficient Model for Face Recognition", 2019.
Paper settings (Sec. 3 and 4), kept here:

- the AirFace backbone (Table 1: MobileFaceNet deepened, CBAM with a 1 + tanh gate),
  128-d embedding;
- Li-ArcFace (eq. 5), m = 0.45, s = 64, trained from scratch: no softmax pre-training (the
  paper's ArcFace at 128-d "diverged after about 1600 iterations" from scratch);
- SGD momentum 0.9, weight decay 5e-4, ten times that on the last layer into the embedding
  (Table 2's "wdml10": ``optimizer.weight_decay_multipliers={'neck_linear': 10.0}``, matched
  on variable paths, see :class:`kerasface.training.MultipliedDecaySGD`);
- LR 0.1, divided by 10 at 18k, 26k and 29k of 30k iterations at batch 1024: epochs stand in
  for thousands of iterations (30 epochs, decays at 18, 26 and 29), which keeps the paper's
  proportions on any dataset;
- then "a variety of loss functions to fine-tune the model" (Sec. 3.3): ArcFace (m = 0.5)
  and the combined margin (insightface's m1 = 1, m2 = 0.3, m3 = 0.2), each stage
  warm-started from the one before (``SCHEDULE``, a :class:`ProgressiveSchedule`). The paper
  gives no fine-tuning schedule: each runs a fifth of the first stage's epochs (6 of 30),
  cosine-decayed from LR 0.01 (our choice).

The paper also guides the student with a large model; that is ``recipes/distill.py`` (any
teacher, e.g. ``--set distill.teacher=runs/iresnet50``).

``--preset small_cpu`` is the 2-core setting of ``bench/airface.py`` (docs/airface.md): the
AirFace network at a quarter width, batch 64, 8 epochs of Li-ArcFace then 2 of each
fine-tuning stage.

Run: ``kerasface train recipes/airface.py --data FACES --out runs/airface`` (rerun to continue).
"""

from kerasface.recipe import DataConfig, HeadConfig, ModelConfig, OptimizerConfig, Recipe, TrainConfig
from kerasface.training.progressive_schedule import ProgressiveSchedule, ProgressiveStage

RECIPE = Recipe(
    name="airface",
    data=DataConfig(batch_size=1024),
    model=ModelConfig(backbone="airface", embedding_size=128),
    head=HeadConfig(name="li_arcface", scale=64.0, margin=0.45),
    optimizer=OptimizerConfig(
        lr=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        weight_decay_multipliers={"neck_linear": 10.0},
        schedule="piecewise",
        decay_epochs=(18, 26, 29),
        decay_factor=0.1,
        warmup_epochs=0.0,
    ),
    train=TrainConfig(epochs=30),
)

_FINE_TUNE = ["optimizer.lr=0.01", "optimizer.schedule=cosine", "optimizer.warmup_epochs=0.0"]

SCHEDULE = ProgressiveSchedule(
    [
        ProgressiveStage("li_arcface"),
        ProgressiveStage("arcface", ["head.name=arcface", "head.margin=0.5", *_FINE_TUNE], epochs_scale=0.2),
        ProgressiveStage(
            "combined", ["head.name=combined", "head.margin=None", "head.kwargs={'m1': 1.0, 'm2': 0.3, 'm3': 0.2}"],
            epochs_scale=0.2,
        ),
    ]
)

PRESETS = {
    "small_cpu": [
        "model.backbone_kwargs={'width_multiplier': 0.25}",
        "data.batch_size=64",
        "train.epochs=8",
        "optimizer.decay_epochs=(5, 7)",
    ],
}

SMOKE = ["model.backbone_kwargs={'width_multiplier': 0.25}", "model.embedding_size=64"]

if __name__ == "__main__":
    import sys

    from kerasface.cli.main import main

    sys.exit(main(["train", __file__, *sys.argv[1:]]))
