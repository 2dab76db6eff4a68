"""LFRC: SE-MobileFaceNet under the 1G FLOPs / 20M budget, losses wrapped on progressively.

Chai et al., "A Progressive Learning Framework for Unconstrained Face Recognition" (LFRC),
2019. The backbone is the Table 1 network (``lfrc_se_mobilefacenet``, Table 2 step 5,
282-d embedding) and the recipe checks it against the Lightweight Face Recognition
Challenge's limits before training: 1G FLOPs, counted as the paper's Table 2 counts them
(2 x MACs, so ``max_macs=500M``), and a 20M model, read as 20 MiB of float32 weights. The
run stops when the backbone exceeds either. The SE reduction is not published: r = 16 on the
expanded channels (the zoo preset) is 21.47 MB, over the limit, and the check refuses it;
r = 32 (20.78 MB, 494M MACs) fits, and is what this recipe trains.

``SCHEDULE`` trains the stages of Tables 3 and 4 one after another, each warm-started from
the previous stage's best model (backbone and class centres; :class:`ProgressiveSchedule`):

    0 arcface          ArcFace, s = 64, m = 0.5, to convergence
    1 combined         combined margin (eq. 3-4): m1 = 1, m2 = 0.3, m3 = 0.2
    2 svgs             + hard negatives re-weighted (eq. 5-6), t = 1.2 (LFRCHead)
    3 intra_inter      + L_intra (eq. 7) and L_inter (eq. 8), weight 1 each (not published)
    4 class_balanced   + class-balanced cross-entropy (eq. 9), beta = 0.999
    5 pk               + PK batches, 4 images per identity ("batch id=4", Table 4)
    6 long_tail        + long-tail cutting: identities with fewer than 10 images left out (Fig. 5)

Paper settings the text does not give (batch, LR, epochs per stage) follow insightface's
MobileFaceNet defaults: batch 512, SGD 0.1 momentum 0.9, weight decay 5e-4, cosine decay
restarting at each stage, 21 epochs for ArcFace and a third of that (7) for each stage
after. ``--preset small_cpu`` is the 2-core setting of ``bench/progressive.py``
(docs/progressive.md): the same network at a quarter width, 128-d, s = 32, batch 64, 2
epochs of ArcFace and 1 per later stage.

Run: ``kerasface train recipes/progressive.py --data FACES --out runs/progressive``; rerun
the same command to continue an interrupted schedule. Your own sequence:
``ProgressiveSchedule([("a", [...]), ("b", [...])])`` as ``SCHEDULE`` in a recipe file.
"""

from kerasface.recipe import DataConfig, HeadConfig, ModelConfig, OptimizerConfig, Recipe, TrainConfig
from kerasface.training.progressive_schedule import ProgressiveSchedule, ProgressiveStage

LFRC_BUDGET = {"max_macs": "500M", "max_size_mb": 20 * 1.048576}

RECIPE = Recipe(
    name="progressive",
    data=DataConfig(batch_size=512),
    model=ModelConfig(
        backbone="lfrc_se_mobilefacenet",
        embedding_size=282,
        backbone_kwargs={"attention_reduction": 32},
        budget=LFRC_BUDGET,
    ),
    head=HeadConfig(name="arcface", scale=64.0, margin=0.5),
    optimizer=OptimizerConfig(lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine", warmup_epochs=1.0),
    train=TrainConfig(epochs=21),
)

_COMBINED = "'m1': 1.0, 'm2': 0.3, 'm3': 0.2"

# Each added loss fine-tunes for a third of the first stage's epochs.
_THIRD = 1.0 / 3.0

SCHEDULE = ProgressiveSchedule([
    ProgressiveStage("arcface"),
    ProgressiveStage(
        "combined", ["head.name=lfrc", "head.margin=None", f"head.kwargs={{{_COMBINED}, 't': 1.0}}"], _THIRD
    ),
    ProgressiveStage("svgs", [f"head.kwargs={{{_COMBINED}, 't': 1.2}}"], _THIRD),
    ProgressiveStage(
        "intra_inter", [f"head.kwargs={{{_COMBINED}, 't': 1.2, 'intra_weight': 1.0, 'inter_weight': 1.0}}"], _THIRD
    ),
    ProgressiveStage("class_balanced", ["train.loss=class_balanced", "train.loss_kwargs={'beta': 0.999}"], _THIRD),
    ProgressiveStage("pk", ["data.sampler=pk:4"], _THIRD),
    ProgressiveStage("long_tail", ["data.min_images_per_class=10"], _THIRD),
])

PRESETS = {
    "small_cpu": [
        "model.backbone_kwargs={'attention_reduction': 32, 'width_multiplier': 0.25}",
        "model.embedding_size=128",
        "head.scale=32.0",
        "data.batch_size=64",
        "train.epochs=2",
        "optimizer.warmup_epochs=0.5",
    ],
}

# Ten synthetic faces per identity, so that the long-tail stage (>= 10) keeps the smoke
# run's identities; PK batches of 4 x 4 fill its batch of 16.
SMOKE = [
    "model.backbone_kwargs={'attention_reduction': 32, 'width_multiplier': 0.25}",
    "model.embedding_size=64",
    "data.synthetic_images_per_identity=10",
]

if __name__ == "__main__":
    import sys

    from kerasface.cli.main import main

    sys.exit(main(["train", __file__, *sys.argv[1:]]))
