"""Li-ArcFace: ArcFace's additive angular margin on a linear function of the angle."""

import math

from kerasface.heads.head_registry import HEADS
from kerasface.heads.margin_head import MarginHead, acos


@HEADS.register("li_arcface")
class LiArcFaceHead(MarginHead):
    """Linear-angle ArcFace head: logits ``s * (pi - 2 theta_j) / pi``, target ``theta_y + m``.

    Li et al., "AirFace: Lightweight and Efficient Model for Face Recognition", 2019,
    eq. 5: every class's logit is ``s * (pi - 2 theta_j) / pi`` (negatives too, unlike
    ArcFace) and the target class's is ``s * (pi - 2 (theta_y + m)) / pi``. The curve is
    a straight line in theta, monotonically decreasing on the whole of ``[0, pi]``, so no
    fallback is needed. Defaults from the paper: s=64 (Sec. 4.1) and m=0.45. The paper
    puts the best m "between 0.4 and 0.45" without naming one (Table 3: trained from
    scratch, 0.4 is marginally ahead on LFW and AgeDB and 0.45 on CFP-FP; after
    N-Softmax pre-training 0.45 leads on LFW and AgeDB); 0.45 is the upper end.

    Args:
        num_classes: number of identities C.
        margin: the angular margin m in radians, >= 0.
        scale: feature scale s.
        **kwargs: see ``MarginHead``.

    Call arguments:
        inputs: ``[embeddings, labels]`` for margin logits, or ``embeddings`` for the
            plain scaled cosine of every head (same arg-max as the linear logits).

    Returns:
        float32 (B, C) logits.
    """

    def __init__(self, num_classes, margin=0.45, scale=64.0, **kwargs):
        super().__init__(num_classes, scale=scale, **kwargs)
        if not margin >= 0:
            raise ValueError(f"`margin` must be >= 0, got {margin}")
        self.margin = float(margin)

    @staticmethod
    def linear_angle(cos):
        """``(pi - 2 theta) / pi = 1 - 2 arccos(cos) / pi``, in [-1, 1]."""
        return 1.0 - (2.0 / math.pi) * acos(cos)

    def target_logit(self, cos_target):
        return self.linear_angle(cos_target) - 2.0 * self.margin / math.pi

    def negative_logits(self, cos, cos_target, target_logit):
        return self.linear_angle(cos)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}
