"""Tiny configurations of every registered backbone, for the registry-wide tests.

A new backbone or preset is covered by the zoo tests once it has an entry here: the
kwargs make it small (32x32 input, one block per stage, narrow channels) while keeping
every layer type of the full network.
"""

import json

SMALL_IMAGE = (32, 32, 3)

_TINY_MOBILEFACENET = {
    "embedding_size": 16,
    "image_shape": SMALL_IMAGE,
    "width_multiplier": 0.25,
    "stages": ((2, 64, 1, 2), (4, 128, 1, 2), (2, 128, 1, 1)),
    "neck_channels": 32,
}
_TINY_LFRC = {
    "embedding_size": 16,
    "image_shape": SMALL_IMAGE,
    "stages": ((16, 8, 1, 1), (24, 16, 1, 2), (24, 16, 1, 1)),
    "stem_channels": 8,
    "neck_channels": 32,
}

SMALL_CONFIGS = {
    "mobilefacenet": _TINY_MOBILEFACENET,
    "mobilefacenet_se": _TINY_MOBILEFACENET,
    "mobilefacenet_cbam": _TINY_MOBILEFACENET,
    "mobilefacenet_mbf": {
        **_TINY_MOBILEFACENET,
        "width_multiplier": 1.0,
        "stem_channels": 16,
        "stages": ((16, 16, 1, 2), (32, 16, 1, 1)),
    },
    "airface": {**_TINY_MOBILEFACENET, "stages": ((2, 64, 1, 2), (2, 128, 1, 2), (2, 128, 1, 1))},
    "lfrc_se_mobilefacenet": _TINY_LFRC,
    "mobilenet_v1": {
        "embedding_size": 16,
        "image_shape": SMALL_IMAGE,
        "width_multiplier": 0.25,
        "blocks": ((64, 1), (128, 2), (256, 2)),
    },
    "latse_decoder": {
        "embedding_size": 16,
        "image_shape": SMALL_IMAGE,
        "stage_blocks": (1, 1, 1, 1),
        "stage_channels": (16, 16, 8, 8),
    },
    **{f"lfrc_se_mobilefacenet_step{step}": _TINY_LFRC for step in range(5)},
    **{
        # stage_blocks replaces the depth's blocks, so one tiny IResNet stands for all depths.
        f"iresnet{depth}": {
            "depth": 50,
            "embedding_size": 16,
            "image_shape": SMALL_IMAGE,
            "stage_blocks": (1, 1, 1, 1),
            "stage_channels": (8, 16, 16, 32),
            "stem_channels": 8,
        }
        for depth in (18, 34, 50, 100)
    },
}


def small_config(name):
    """The registry kwargs that make backbone ``name`` tiny (merged over its preset)."""
    if name not in SMALL_CONFIGS:
        raise KeyError(
            f"backbone {name!r} has no small test configuration: add one to SMALL_CONFIGS in "
            "kerasface/testing/backbone_cases.py so the registry-wide tests cover it"
        )
    return dict(SMALL_CONFIGS[name])


def unique_small_cases(names):
    """``names`` with those whose tiny model is identical to an earlier one's dropped.

    Presets that differ only in what the small config overrides (the LFRC Table 2 steps)
    would otherwise run the same slow checks several times.
    """
    from kerasface import backbones

    seen, unique = set(), []
    for name in names:
        config = {**backbones.preset_defaults(name), **small_config(name)}
        key = (backbones.get_class(name).__name__, json.dumps(config, sort_keys=True, default=str))
        if key not in seen:
            seen.add(key)
            unique.append(name)
    return unique
