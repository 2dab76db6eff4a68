"""ArcFace: additive angular margin."""

import math

from keras import ops

from kerasface.heads.head_registry import HEADS
from kerasface.heads.margin_head import MarginHead


@HEADS.register("arcface")
class ArcFaceHead(MarginHead):
    """Additive angular margin head: target logit ``s * cos(theta_y + m)``.

    Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition",
    CVPR 2019, eq. 3. Where ``theta + m > pi`` the margin would make the logit *rise*
    again, so past that point the target logit continues monotonically as
    ``cos(theta) - m * sin(m)`` (the insightface fallback: monotone but not continuous,
    it steps down by ``cos(m) + m sin(m) - 1`` at theta = pi - m, 0.12 at m=0.5; ``easy_margin`` keeps
    ``cos(theta)`` whenever ``cos(theta) <= 0``). ``cos(theta + m)`` is expanded as
    ``cos*cos(m) - sin*sin(m)`` with ``sin`` floored away from 0, so no ``acos`` and no
    infinite gradient at ``cos = +-1``.

    Args:
        num_classes: number of identities C.
        margin: the angular margin m in radians, 0 <= m < pi/2.
        scale: feature scale s.
        easy_margin: apply the margin only where ``cos(theta) > 0``.
        **kwargs: see ``MarginHead``.

    Call arguments:
        inputs: ``[embeddings, labels]`` for margin logits, or ``embeddings``.

    Returns:
        float32 (B, C) logits.
    """

    def __init__(self, num_classes, margin=0.5, scale=64.0, easy_margin=False, **kwargs):
        super().__init__(num_classes, scale=scale, **kwargs)
        if not 0.0 <= margin < math.pi / 2:
            raise ValueError(f"`margin` must be in [0, pi/2), got {margin}")
        self.margin = float(margin)
        self.easy_margin = bool(easy_margin)

    def target_logit(self, cos_target):
        if self.easy_margin:
            return ops.where(cos_target > 0.0, additive_angular_margin(cos_target, self.margin, fallback=False),
                             cos_target)
        return additive_angular_margin(cos_target, self.margin)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "easy_margin": self.easy_margin}


def additive_angular_margin(cos_target, margin, fallback=True):
    """``cos(theta + m)`` for a scalar or per-sample (B,) margin m, without ``acos``.

    ``cos(theta + m)`` is ``cos*cos(m) - sin*sin(m)`` with ``sin`` floored away from 0 (finite
    gradient at ``cos = +-1``). With ``fallback``, where ``theta + m > pi`` (i.e.
    ``cos(theta) < cos(pi - m) = -cos(m)``) the value continues as ``cos(theta) - m sin(m)``
    so it keeps decreasing in theta (insightface's continuation).
    """
    sin_target = ops.sqrt(ops.clip(1.0 - ops.square(cos_target), 1e-7, 1.0))
    cos_m, sin_m = ops.cos(margin), ops.sin(margin)
    cos_with_margin = cos_target * cos_m - sin_target * sin_m
    if not fallback:
        return cos_with_margin
    return ops.where(cos_target > -cos_m, cos_with_margin, cos_target - margin * sin_m)
