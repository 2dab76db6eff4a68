"""NPCFace: hard negatives emphasised (t, alpha) and a cooperative positive margin (m0, m1).

Zeng et al., "NPCFace: Negative-Positive Cooperation Supervision for Training Large-scale
Face Recognition", 2020; the head is :class:`kerasface.heads.NPCFaceHead` (eq. 10-13).
Paper settings (Sec. V-A), kept here: t = 1.1, alpha = 0.25, m0 = 0.4, m1 = 0.2, s = 64,
SGD momentum 0.9, weight decay 5e-4, LR 0.1; MobileFaceNet with a 512-d embedding for the
ablation (Table I), trained from scratch.

The schedule of Sec. V-A comes as a preset per training set (``--preset``, alias ``--scale``):

- ``casia`` (CASIA-WebFace, the ablation's set): batch 128, LR divided by 10 at epochs 16,
  24 and 28, 30 epochs (the default below);
- ``ms1m`` (MS1M-v1c): batch 512, LR divided by 10 at epochs 8, 14 and 18, 20 epochs;
- ``large``: the comparison experiments' bigger network; the paper uses Attention-56, which
  kerasface does not ship, so IResNet-50 stands in (512-d, batch 128);
- ``small_cpu``: the 2-core setting of ``bench/npcface_ablation.py`` (docs/npcface.md):
  MobileFaceNet at a quarter width, 128-d, s = 32, batch 64, 6 epochs, cosine LR.

The ablation rows of Table I are overrides of this recipe (``bench/npcface_ablation.py``):
ArcFace (``head.name=arcface``, ``head.margin=0.4``), +Neg (``head.kwargs`` with m1 = 0),
+Pos (t = 1, alpha = 0) and both (the defaults).

Run: ``kerasface train recipes/npcface.py --data FACES --out runs/npcface [--preset ms1m]``.
"""

from kerasface.recipe import DataConfig, HeadConfig, ModelConfig, OptimizerConfig, Recipe, TrainConfig

RECIPE = Recipe(
    name="npcface",
    data=DataConfig(batch_size=128),
    model=ModelConfig(backbone="mobilefacenet", embedding_size=512),
    head=HeadConfig(name="npcface", scale=64.0, kwargs={"t": 1.1, "alpha": 0.25, "m0": 0.4, "m1": 0.2}),
    optimizer=OptimizerConfig(
        lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="piecewise", decay_epochs=(16, 24, 28), decay_factor=0.1,
        warmup_epochs=0.0,
    ),
    train=TrainConfig(epochs=30),
)

PRESETS = {
    "casia": ["data.batch_size=128", "optimizer.decay_epochs=(16, 24, 28)", "train.epochs=30"],
    "ms1m": ["data.batch_size=512", "optimizer.decay_epochs=(8, 14, 18)", "train.epochs=20"],
    "large": ["model.backbone=iresnet50", "model.embedding_size=512", "data.batch_size=128"],
    "small_cpu": [
        "model.backbone_kwargs={'width_multiplier': 0.25}",
        "model.embedding_size=128",
        "head.scale=32.0",
        "data.batch_size=64",
        "optimizer.schedule=cosine",
        "optimizer.warmup_epochs=1.0",
        "train.epochs=6",
    ],
}

SMOKE = ["model.backbone_kwargs={'width_multiplier': 0.25}", "model.embedding_size=64"]

if __name__ == "__main__":
    import sys

    from kerasface.cli.main import main

    sys.exit(main(["train", __file__, *sys.argv[1:]]))
