"""Combined margin: multiplicative, additive angular and additive cosine margins at once."""

import math

from keras import ops

from kerasface.heads.head_registry import HEADS
from kerasface.heads.margin_head import MarginHead, acos


@HEADS.register("combined")
class CombinedMarginHead(MarginHead):
    """Combined margin head: target logit ``s * (cos(m1 theta_y + m2) - m3)``.

    The insightface combined margin, as in LFRC (Chai et al., "A Progressive Learning
    Framework for Unconstrained Face Recognition", 2019) eq. 3-4 and LATSE (Huang et
    al., ICML 2020) eq. 5. LFRC eq. 4 typesets the exponent as ``s cos(.) - m3``; its
    eq. 6 and LATSE eq. 5 both put m3 inside the scale, which is what this head does.
    (AirFace eq. 3-4 are N-Softmax and ArcFace, not this margin.) Neither paper gives
    values; the defaults (1.0, 0.3, 0.2) are insightface's / ArcFace's (Deng et al.,
    CVPR 2019) combined setting. m1=1, m3=0 is ArcFace; m1=1, m2=0 is CosFace.

    Past ``theta* = (pi - m2) / m1``, where ``cos(m1 theta + m2)`` would rise again, the
    target continues as ``cos(theta) - m3 - delta`` with
    ``delta = max(m2 sin(m2), 1 + cos(theta*))``: ``m2 sin(m2)`` is ArcFace's fallback
    (so m1=1, m3=0 gives ``ArcFaceHead``'s curve, fallback included), and
    ``1 + cos(theta*)`` is the smallest shift that keeps the curve from jumping up at
    ``theta*`` when m1 > 1. The target is thus non-increasing over the whole of
    ``[0, pi]``.

    Args:
        num_classes: number of identities C.
        m1: multiplicative angular margin, > 0.
        m2: additive angular margin in radians, 0 <= m2 < pi/2.
        m3: additive cosine margin, >= 0.
        scale: feature scale s.
        **kwargs: see ``MarginHead``.

    Call arguments:
        inputs: ``[embeddings, labels]`` for margin logits, or ``embeddings``.

    Returns:
        float32 (B, C) logits.
    """

    def __init__(self, num_classes, m1=1.0, m2=0.3, m3=0.2, scale=64.0, **kwargs):
        super().__init__(num_classes, scale=scale, **kwargs)
        if not m1 > 0:
            raise ValueError(f"`m1` must be > 0, got {m1}")
        if not 0.0 <= m2 < math.pi / 2:
            raise ValueError(f"`m2` must be in [0, pi/2), got {m2}")
        if not m3 >= 0:
            raise ValueError(f"`m3` must be >= 0, got {m3}")
        self.m1 = float(m1)
        self.m2 = float(m2)
        self.m3 = float(m3)

    def target_logit(self, cos_target):
        cos_target = ops.cast(cos_target, "float32")
        switch = (math.pi - self.m2) / self.m1
        with_margin = ops.cos(self.m1 * acos(cos_target) + self.m2) - self.m3
        if switch >= math.pi:
            return with_margin
        delta = max(self.m2 * math.sin(self.m2), 1.0 + math.cos(switch))
        # theta < theta*  <=>  cos(theta) > cos(theta*), the strict test ArcFaceHead uses;
        # comparing cosines keeps the switch exact (acos clips its argument off +-1).
        return ops.where(cos_target > math.cos(switch), with_margin, cos_target - self.m3 - delta)

    def get_config(self):
        return {**super().get_config(), "m1": self.m1, "m2": self.m2, "m3": self.m3}
