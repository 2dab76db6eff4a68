"""The SE-MobileFaceNet of the LFRC paper (Table 1) and the Table 2 design steps, as presets."""

from kerasface.backbones.backbone_registry import BACKBONES

# Table 2 of Zhang et al., "A Progressive Learning Framework for Unconstrained Face Recognition"
# (LFRC, ICCV 2019 workshops): per step, (C, N) of conv1..conv5 and the embedding dimension, and
# the published FLOPs and size. conv1 is the stem conv; conv_k (k = 2..5) is N stride-1 SEResidual
# blocks at conv_{k-1}'s width, and conv2..conv4 end in the stride-2 SEDResidual block to width C;
# conv5's C is the 1x1 conv before the GDC. (That reading reproduces Table 1 from step 5's row.)
TABLE2_STEPS = {
    0: {"convs": ((64, 1), (64, 2), (128, 8), (256, 16), (512, 4)), "dim": 256, "flops": 933.3e6, "size": 18e6},
    1: {"convs": ((30, 1), (62, 2), (128, 8), (256, 18), (512, 16)), "dim": 256, "flops": 1e9, "size": 18e6},
    2: {"convs": ((28, 1), (60, 2), (128, 8), (256, 16), (512, 19)), "dim": 256, "flops": 1e9, "size": 18e6},
    3: {"convs": ((26, 1), (58, 2), (128, 6), (256, 16), (512, 21)), "dim": 256, "flops": 1e9, "size": 19e6},
    4: {"convs": ((24, 1), (56, 2), (124, 6), (256, 16), (512, 23)), "dim": 256, "flops": 998.4e6, "size": 20e6},
    5: {"convs": ((24, 1), (56, 2), (124, 6), (256, 15), (512, 24)), "dim": 282, "flops": 976.6e6, "size": 20e6},
}

# Table 1 (the step-5 network) as (depthwise channels t, output channels c, repeats n, stride s).
TABLE1_STAGES = (
    (56, 24, 2, 1),
    (116, 56, 1, 2),
    (116, 56, 6, 1),
    (248, 124, 1, 2),
    (248, 124, 15, 1),
    (512, 256, 1, 2),
    (256, 256, 24, 1),
)

# LFRC adds SE "inspired by MobileNetV3" without giving its reduction. r = 16 on the expanded
# channels keeps step 5 at 5.37M parameters (21.5 MB, 20.5 MiB), near the challenge's 20M size
# limit the paper's model meets; MobileNetV3's r = 4 would be 25.9 MB.
SE_REDUCTION = 16


def lfrc_stages(step):
    """Bottleneck stages (t, c, n, s), stem and neck widths and embedding size of a Table 2 step.

    Only step 5 has its expansion (depthwise) widths published (Table 1). For steps 0-4 they
    follow Table 1's pattern: C2 in the first group, 2 x C_k in and into group k for k = 2,
    3, 4, and C4 in the last group (Table 1 has 116 where this rule gives 112).

    Returns:
        dict of MobileFaceNet keyword arguments.
    """
    if step not in TABLE2_STEPS:
        raise ValueError(f"LFRC Table 2 `step` must be one of {sorted(TABLE2_STEPS)}, got {step!r}")
    (c1, _), (c2, n2), (c3, n3), (c4, n4), (c5, n5) = TABLE2_STEPS[step]["convs"]
    if step == 5:
        stages = TABLE1_STAGES
    else:
        stages = (
            (c2, c1, n2, 1),
            (2 * c2, c2, 1, 2),
            (2 * c2, c2, n3, 1),
            (2 * c3, c3, 1, 2),
            (2 * c3, c3, n4, 1),
            (2 * c4, c4, 1, 2),
            (c4, c4, n5, 1),
        )
    return {
        "embedding_size": TABLE2_STEPS[step]["dim"],
        "stages": stages,
        "expansion": "channels",
        "stem_channels": c1,
        # Table 1 goes from the stem conv straight into the bottlenecks.
        "stem_groups": None,
        "neck_channels": c5,
        "neck": "gdc",
        "attention": "se",
        "attention_reduction": SE_REDUCTION,
        "attention_gate": "sigmoid",
    }


BACKBONES.add_preset("lfrc_se_mobilefacenet", "mobilefacenet", **lfrc_stages(5))
for _step in range(5):
    BACKBONES.add_preset(f"lfrc_se_mobilefacenet_step{_step}", "mobilefacenet", **lfrc_stages(_step))
