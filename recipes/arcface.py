"""MobileFaceNet + ArcFace (m=0.5, s=64), SGD 0.1 momentum 0.9, weight decay 5e-4, cosine LR.

Run: ``kerasface train recipes/arcface.py --data DIR --out runs/arcface``
(or ``python recipes/arcface.py --data DIR``). Override any field: ``--set optimizer.lr=0.05``.
"""

from kerasface.recipe import DataConfig, HeadConfig, ModelConfig, OptimizerConfig, Recipe, TrainConfig

RECIPE = Recipe(
    name="arcface",
    data=DataConfig(batch_size=128),
    model=ModelConfig(backbone="mobilefacenet", embedding_size=512),
    head=HeadConfig(name="arcface", scale=64.0, margin=0.5),
    optimizer=OptimizerConfig(lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine", warmup_epochs=1.0),
    train=TrainConfig(epochs=20),
)

if __name__ == "__main__":
    import sys

    from kerasface.cli.main import main

    sys.exit(main(["train", __file__, *sys.argv[1:]]))
