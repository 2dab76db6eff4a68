"""Distillation: a MobileFaceNet student learns a teacher's embedding of every training face.

AirFace (Li et al., 2019, Sec. 3.3) guides its 128-d MobileFaceNet with a large model's
features ("use some large models to guide the feature distribution of lightweight models",
after Luo et al., AAAI 2016); LATSE relies on a stronger teacher too. The teacher here is any
face model: a kerasface run or ``.keras`` file, a kerasface SavedModel, or a third-party
``.onnx``/``.tflite`` file. By default it is OpenCV's SFace (128-d, trained on MS1M), run
through OpenCV as the model zoo ships it, and its embeddings of the training set and of
its mirror images are computed once and cached (``distill.precompute``), since it runs at
about 22 faces/s on two cores.

Defaults: MobileFaceNet with a 128-d embedding (the teacher's size, so no projection),
cosine feature loss with weight 32 (about the pull of a softmax at s = 32 on the cosine;
1 - cos alone gives gradients too small for SGD at LR 0.1), no margin head
(``--set distill.margin_weight=1.0`` adds the recipe's ArcFace on the labels), SGD LR 0.1
cosine-decayed over 20 epochs, batch 128, weight decay 5e-4.

Run: ``kerasface train recipes/distill.py --data FACES --out runs/distill``; another
teacher: ``--set distill.teacher=runs/iresnet50`` (and ``--set distill.teacher_kwargs={}``).
``--preset small_cpu`` is the 2-core setting of ``bench/distillation.py`` (results in
docs/distillation.md): MobileFaceNet at half width (full width trains at 4.5 faces/s on
this machine's two cores, half width at 24), batch 64, 10 epochs.
"""

from kerasface.recipe import DataConfig, DistillConfig, HeadConfig, ModelConfig, OptimizerConfig, Recipe, TrainConfig

TEACHER = "../shared/models/opencv_zoo/face_recognition_sface_2021dec_int8bq.onnx"

RECIPE = Recipe(
    name="distill",
    data=DataConfig(batch_size=128),
    model=ModelConfig(backbone="mobilefacenet", embedding_size=128),
    head=HeadConfig(name="arcface", scale=32.0, margin=0.3),
    optimizer=OptimizerConfig(lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine", warmup_epochs=1.0),
    train=TrainConfig(epochs=20),
    distill=DistillConfig(
        teacher=TEACHER,
        teacher_kwargs={"runtime": "opencv"},
        precompute=True,
        feature_loss="cosine",
        feature_weight=32.0,
        margin_weight=0.0,
    ),
)

PRESETS = {
    "small_cpu": [
        "model.backbone_kwargs={'width_multiplier': 0.5}",
        "data.batch_size=64",
        "train.epochs=10",
    ],
}

# `--smoke`: a tiny student; the teacher stays SFace (../shared must be there: without it the run
# stops naming the missing file; give another with --set distill.teacher=...).
SMOKE = [
    "model.backbone=mobilenet_v1",
    "model.backbone_kwargs={'width_multiplier': 0.25}",
]

if __name__ == "__main__":
    import sys

    from kerasface.cli.main import main

    sys.exit(main(["train", __file__, *sys.argv[1:]]))
