"""DAIL: dataset-aware ArcFace over several datasets, gradient reversal in a second stage.

Wang et al., "DAIL: Dataset-Aware and Invariant Learning for Face Recognition", ICPR 2020.
Paper settings (Sec. IV-A), kept here: MobileNetV1 with a 128-d embedding, ArcFace
(s=64, m=0.5) made dataset-aware (eq. 3-4) with Crossing Dropout p=1e-4, a dataset classifier
of one fully connected layer behind a gradient reversal layer with lambda=0.1, batch 512,
LR 0.005 divided by 10 at steps 80k, 140k and 200k of 240k, and the switch to stage 2 at
step 80k (a third of the run). The paper fine-tunes a pre-trained ArcFace model, hence the
small LR: give one with ``--set train.init_from=runs/arcface``. The paper's ResNet50 variant:
``--set model.backbone=iresnet50 --set model.embedding_size=512 --batch-size 256`` (and twice
the steps). Epochs stand in for steps: 24 epochs with decays at 8, 14 and 20 keep the
paper's proportions on any dataset size.

Run: ``kerasface train recipes/dail.py --data A --data B [--data C ...] --out runs/dail``.
Without ``--data`` it trains on the embedded synthetic identities split into two datasets
that share a third of their identities (``data.synthetic_datasets=2``). The ablation of the
paper's Table IV on real faces, with its small-CPU settings, is ``bench/dail_ablation.py``
(results in docs/dail.md).
"""

from kerasface.recipe import DAILConfig, DataConfig, HeadConfig, ModelConfig, OptimizerConfig, Recipe, TrainConfig

RECIPE = Recipe(
    name="dail",
    data=DataConfig(batch_size=512, synthetic_datasets=2),
    model=ModelConfig(backbone="mobilenet_v1", embedding_size=128),
    head=HeadConfig(name="arcface", scale=64.0, margin=0.5),
    optimizer=OptimizerConfig(
        lr=0.005, momentum=0.9, weight_decay=5e-4, schedule="piecewise", decay_epochs=(8, 14, 20), decay_factor=0.1
    ),
    train=TrainConfig(epochs=24),
    dail=DAILConfig(
        dataset_aware=True,
        crossing_dropout_p=1e-4,
        dataset_classifier=True,
        classifier_units=(),
        gradient_reversal=0.1,
        switch_fraction=1.0 / 3.0,
        ramp="step",
    ),
)

# `--smoke`: on top of the generic few-step settings, switch to stage 2 inside the short run.
SMOKE = ["model.backbone_kwargs={'width_multiplier': 0.25}", "dail.switch_step=3"]

if __name__ == "__main__":
    import sys

    from kerasface.cli.main import main

    sys.exit(main(["train", __file__, *sys.argv[1:]]))
