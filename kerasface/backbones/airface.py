"""The AirFace backbone (Li et al., 2019, Table 1) as a MobileFaceNet preset."""

from kerasface.backbones.backbone_registry import BACKBONES

# AirFace Table 1 as (expansion t, output channels c, repeats n, stride s): deeper than
# MobileFaceNet (1+9, 1+16, 1+6 blocks) and, unlike it, doubling the channels (to 256) at the
# last downsampling.
AIRFACE_STAGES = ((2, 64, 1, 2), (2, 64, 9, 1), (4, 128, 1, 2), (2, 128, 16, 1), (8, 256, 1, 2), (2, 256, 6, 1))

# CBAM in every bottleneck with 1 + tanh instead of the sigmoid (Sec. 3.2); the reduction is not
# given, CBAM's default 16 is used. conv1x1 to 1024 -> linear 7x7 GDC (1024) -> linear 1x1 to 512.
BACKBONES.add_preset(
    "airface",
    "mobilefacenet",
    embedding_size=512,
    stages=AIRFACE_STAGES,
    neck_channels=1024,
    neck="gdc",
    attention="cbam",
    attention_reduction=16,
    attention_gate="one_plus_tanh",
)
