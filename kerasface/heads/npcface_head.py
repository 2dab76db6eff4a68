"""NPCFace: hard-negative emphasis and a cooperative, per-sample positive margin."""

import math

from keras import ops

from kerasface.heads.arcface_head import additive_angular_margin
from kerasface.heads.head_registry import HEADS
from kerasface.heads.margin_head import MarginHead, gather_target, replace_target


@HEADS.register("npcface")
class NPCFaceHead(MarginHead):
    """Negative-positive cooperation head: hard negatives raise the sample's own margin.

    Zeng et al., "NPCFace: Negative-Positive Cooperation Supervision for Training
    Large-scale Face Recognition", 2020, eq. 10-13. ``M_ij = 1`` when sample i is
    mis-classified against class j (MV-Softmax's criterion, which the paper adopts):
    ``cos(theta_j) > cos(theta_y + hard_margin)``. Negatives (eq. 10):
    ``s * cos(theta_j)`` if ``M_ij = 0``, ``s * (t*cos(theta_j) + alpha)`` if
    ``M_ij = 1``. Cooperative margin (eq. 11): ``m_i = m0 + m1 * mean of cos(theta_j)
    over the hard negatives j != y``, or ``m0`` when there is none. Target (eq. 12):
    ``s * cos(theta_y + m_i)``, continued monotonically as ``cos(theta_y) - m_i*sin(m_i)``
    past ``theta_y + m_i > pi`` (as ``ArcFaceHead``).

    The paper leaves the margin of the mis-classification test open (the cooperative
    margin cannot be used: it depends on M); the default tests against the basic
    margin m0. FaceX-Zoo's NPCFace tests against 0.5 (pass ``hard_margin=0.5``). As
    there, ``m_i`` is a constant for the gradient (``stop_gradient``). The mean over
    hard negatives is a row sum minus the target column's share, no (B, C) label mask.
    Defaults t=1.1, alpha=0.25, m0=0.4, m1=0.2, s=64 (Sec. V-A).

    ``target_logit``/``target_curve`` give the target with no hard negative (``m0``).

    Args:
        num_classes: number of identities C.
        scale: feature scale s.
        t: multiplicative (scale) modulation of hard negatives, > 0.
        alpha: additive (shift) modulation of hard negatives, >= 0.
        m0: basic positive margin in radians.
        m1: weight of the mean hard-negative cosine in the margin, 0 <= m1 <= m0 (so
            the margin stays >= 0) and m0 + m1 < pi/2.
        hard_margin: angular margin of the mis-classification test, in [0, pi/2); None
            uses m0.
        **kwargs: see ``MarginHead``.

    Call arguments:
        inputs: ``[embeddings, labels]`` for margin logits, or ``embeddings``.

    Returns:
        float32 (B, C) logits.
    """

    def __init__(self, num_classes, scale=64.0, t=1.1, alpha=0.25, m0=0.4, m1=0.2, hard_margin=None, **kwargs):
        super().__init__(num_classes, scale=scale, **kwargs)
        if t <= 0:
            raise ValueError(f"`t` must be > 0, got {t}")
        if alpha < 0:
            raise ValueError(f"`alpha` must be >= 0, got {alpha}")
        if not 0.0 <= m1 <= m0:
            raise ValueError(
                f"`m1` must be in [0, m0] so the margin m0 + m1*cos stays >= 0, got m0={m0}, m1={m1}"
            )
        if m0 + m1 >= math.pi / 2:
            raise ValueError(f"`m0 + m1` must be < pi/2, got m0={m0}, m1={m1}")
        if hard_margin is not None and not 0.0 <= hard_margin < math.pi / 2:
            raise ValueError(f"`hard_margin` must be in [0, pi/2) or None, got {hard_margin}")
        self.t = float(t)
        self.alpha = float(alpha)
        self.m0 = float(m0)
        self.m1 = float(m1)
        self.hard_margin = None if hard_margin is None else float(hard_margin)

    def target_logit(self, cos_target):
        return additive_angular_margin(cos_target, self.m0)

    def margin_logits(self, cos, cos_target, labels, embeddings=None, training=None):
        hard_margin = self.m0 if self.hard_margin is None else self.hard_margin
        threshold = ops.expand_dims(additive_angular_margin(cos_target, hard_margin), 1)
        hard = cos > threshold
        # Row sums over all classes, then the target column's own share taken out.
        target_is_hard = ops.cast(gather_target(hard, labels), "float32")
        hard_count = ops.sum(ops.cast(hard, "float32"), axis=1) - target_is_hard
        hard_sum = ops.sum(ops.where(hard, cos, 0.0), axis=1) - target_is_hard * cos_target
        mean_hard = hard_sum / ops.maximum(hard_count, 1.0)
        margin = ops.stop_gradient(ops.where(hard_count > 0.5, self.m0 + self.m1 * mean_hard, self.m0))
        negatives = ops.where(hard, self.t * cos + self.alpha, cos)
        return replace_target(negatives, labels, additive_angular_margin(cos_target, margin))

    def get_config(self):
        return {
            **super().get_config(),
            "t": self.t,
            "alpha": self.alpha,
            "m0": self.m0,
            "m1": self.m1,
            "hard_margin": self.hard_margin,
        }
