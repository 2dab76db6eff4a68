"""The squashing function of an attention branch: sigmoid, hard sigmoid or AirFace's 1 + tanh."""

from keras import ops

GATES = ("sigmoid", "hard_sigmoid", "one_plus_tanh")


def attention_gate(x, kind):
    """Attention weights from logits ``x``.

    ``"sigmoid"`` (SE, CBAM) weights in (0, 1); ``"hard_sigmoid"`` is MobileNetV3's
    piecewise-linear ``relu6(x + 3) / 6``; ``"one_plus_tanh"`` (AirFace Sec. 3.2) weights in
    (0, 2), so a channel or position can be amplified as well as suppressed, and 0 logits
    leave the features unchanged.
    """
    if kind == "sigmoid":
        return ops.sigmoid(x)
    if kind == "hard_sigmoid":
        return ops.relu6(x + 3.0) / 6.0
    if kind == "one_plus_tanh":
        return 1.0 + ops.tanh(x)
    raise ValueError(f"`gate` must be one of {GATES}, got {kind!r}")


def check_gate(kind):
    if kind not in GATES:
        raise ValueError(f"`gate` must be one of {GATES}, got {kind!r}")
    return kind
