"""MV-Softmax: mis-classified vector guided softmax (AM or Arc target)."""

import math

from keras import ops

from kerasface.heads.arcface_head import additive_angular_margin
from kerasface.heads.head_registry import HEADS
from kerasface.heads.margin_head import MarginHead

_MARGIN_TYPES = ("am", "arc")


@HEADS.register("mv_softmax")
class MVSoftmaxHead(MarginHead):
    """Margin head that also raises the logits of mis-classified negatives.

    Wang et al., "Mis-classified Vector Guided Softmax Loss for Face Recognition",
    AAAI 2020. The target logit is ``s * f(m, theta_y)`` with ``f = cos(theta_y) - m``
    (``margin_type="am"``, MV-AM-Softmax) or ``f = cos(theta_y + m)`` (``"arc"``,
    MV-Arc-Softmax; past ``theta + m > pi`` it continues as ``cos(theta) - m*sin(m)``,
    as in ``ArcFaceHead``). A negative ``j`` is mis-classified when
    ``cos(theta_j) > f(m, theta_y)`` (``I_k = 1``); its logit becomes
    ``s * (t*cos(theta_j) + t - 1)``, the paper's adaptive weight
    ``h = exp(s*(t - 1)*(cos(theta_j) + 1))`` folded into the logit (NPCFace eq. 8 writes
    the same). Other negatives keep ``s * cos(theta_j)``. Defaults s=32, t=1.2 (the
    authors' code writes it as ``(1 + 0.2)*cos + 0.2``), m=0.35 (AM) or 0.5 (Arc).

    Args:
        num_classes: number of identities C.
        margin_type: ``"am"`` (additive cosine margin) or ``"arc"`` (additive angular).
        margin: the margin m; None picks 0.35 for ``"am"`` and 0.5 for ``"arc"``.
        t: weight of the mis-classified negatives, >= 1 (t = 1 is plain AM/ArcFace).
        scale: feature scale s.
        **kwargs: see ``MarginHead``.

    Call arguments:
        inputs: ``[embeddings, labels]`` for margin logits, or ``embeddings``.

    Returns:
        float32 (B, C) logits.
    """

    def __init__(self, num_classes, margin_type="am", margin=None, t=1.2, scale=32.0, **kwargs):
        super().__init__(num_classes, scale=scale, **kwargs)
        if margin_type not in _MARGIN_TYPES:
            raise ValueError(f"`margin_type` must be one of {list(_MARGIN_TYPES)}, got {margin_type!r}")
        if margin is None:
            margin = 0.35 if margin_type == "am" else 0.5
        if margin_type == "am" and margin < 0:
            raise ValueError(f"`margin` must be >= 0 for margin_type='am', got {margin}")
        if margin_type == "arc" and not 0.0 <= margin < math.pi / 2:
            raise ValueError(f"`margin` must be in [0, pi/2) for margin_type='arc', got {margin}")
        if t < 1:
            raise ValueError(f"`t` must be >= 1, got {t}")
        self.margin_type = margin_type
        # Stored resolved, so the config states the margin actually used.
        self.margin = float(margin)
        self.t = float(t)

    def target_logit(self, cos_target):
        if self.margin_type == "am":
            return cos_target - self.margin
        return additive_angular_margin(cos_target, self.margin)

    def negative_logits(self, cos, cos_target, target_logit):
        misclassified = cos > ops.expand_dims(target_logit, 1)
        return ops.where(misclassified, self.t * cos + (self.t - 1.0), cos)

    def get_config(self):
        return {**super().get_config(), "margin_type": self.margin_type, "margin": self.margin, "t": self.t}
