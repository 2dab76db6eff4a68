"""LATSE: LinearFace + a generative decoder (GLoss) + a teacher-student gradient filter.

Huang et al., "More Information Supervised Probabilistic Deep Face Embedding Learning",
ICML 2020. Algorithm 1 in two stages, both run by one command:

1. the teacher trains with DLoss alone (LinearFace, eq. 10-11) into ``<out>/teacher``;
2. the student trains from scratch with DLoss + GLoss (eq. 15): a reversed ResNet-18 decodes
   its embedding into a face, compared (L1 + (1 - SSIM)/2, eq. 13-14) with the identity's
   momentum-mean image (eq. 12); a sample's gradient reaches the student only when its label
   is in the frozen teacher's top-k. Only the student embedding is kept for testing.

Paper settings (Sec. 4.1), kept here: ResNet-50 (IResNet) student and teacher with the
BN-Dropout-FC-BN 512-d neck (dropout 0.4, insightface's CASIA value; the paper gives none),
LinearFace a = b = 0.88 with s = 64, SGD momentum 0.9, weight decay 5e-4, LR 0.1 divided by
10 at 10k, 16k, 20k and 22k iterations (epochs stand in for them: 24 epochs, decays at 11,
17, 21 and 23), batch 768 (here 256, one GPU's worth; raise it with --batch-size), k = 3 (its
best in Table 2). The paper does not give the mean image's momentum: 0.9 averages about the
last 10 images of each identity.

Run: ``kerasface train recipes/latse.py --data FACES --out runs/latse``; a trained teacher
instead of stage 1: ``--set latse.teacher=runs/linearface`` (or a peer ``.onnx``/``.tflite``
face model). ``--preset small_cpu`` is the 2-core setting of bench/latse_ablation.py
(MobileNetV1-0.5, 128-d, an eighth-width decoder; docs/latse.md has its results).
"""

from kerasface.recipe import DataConfig, HeadConfig, LATSEConfig, ModelConfig, OptimizerConfig, Recipe, TrainConfig

RECIPE = Recipe(
    name="latse",
    data=DataConfig(batch_size=256),
    model=ModelConfig(backbone="iresnet50", embedding_size=512, backbone_kwargs={"neck": "e", "dropout": 0.4}),
    head=HeadConfig(name="linearface", scale=64.0, kwargs={"a": 0.88, "b": 0.88}),
    optimizer=OptimizerConfig(
        lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="piecewise", decay_epochs=(11, 17, 21, 23), decay_factor=0.1
    ),
    train=TrainConfig(epochs=24),
    latse=LATSEConfig(
        decoder=True,
        generative_weight=1.0,
        target_momentum=0.9,
        target_resolution=112,
        target_dtype="uint8",
        teacher="train",
        teacher_k=3,
        filter_mode="embedding",
    ),
)

PRESETS = {
    # Two CPU cores: a small encoder, a decoder with one block per stage at an eighth of the
    # width, and a softer LinearFace (a=0.7, b=0.8: about ArcFace m=0.3's penalty at 90
    # degrees, still below cos(theta) everywhere and decreasing, LATSE's two principles)
    # at s=32, which converges from scratch in a few epochs.
    "small_cpu": [
        "model.backbone=mobilenet_v1",
        "model.embedding_size=128",
        "model.backbone_kwargs={'width_multiplier': 0.5}",
        "head.scale=32.0",
        "head.kwargs={'a': 0.7, 'b': 0.8}",
        "data.batch_size=64",
        "optimizer.lr=0.1",
        "optimizer.schedule=cosine",
        "optimizer.warmup_epochs=1.0",
        "train.epochs=8",
        "latse.decoder_kwargs={'stage_blocks': (1, 1, 1, 1), 'stage_channels': (64, 32, 16, 8)}",
    ],
}

# `--smoke`: a tiny decoder and a one-epoch teacher on top of the generic few-step settings.
SMOKE = [
    "model.backbone=mobilenet_v1",
    "model.embedding_size=64",
    "model.backbone_kwargs={'width_multiplier': 0.25}",
    "latse.decoder_kwargs={'stage_blocks': (1, 1, 1, 1), 'stage_channels': (32, 16, 8, 8)}",
    "latse.target_resolution=56",
    "latse.teacher_epochs=1",
]

if __name__ == "__main__":
    import sys

    from kerasface.cli.main import main

    sys.exit(main(["train", __file__, *sys.argv[1:]]))
