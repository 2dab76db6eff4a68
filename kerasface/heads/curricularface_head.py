"""CurricularFace: ArcFace target, hard negatives modulated by a running curriculum t."""

from keras import ops

from kerasface.heads.arcface_head import ArcFaceHead
from kerasface.heads.head_registry import HEADS
from kerasface.heads.margin_head import replace_target, sum_over_replicas


@HEADS.register("curricularface")
class CurricularFaceHead(ArcFaceHead):
    """ArcFace target with hard negatives ``s * cos(theta_j) * (t + cos(theta_j))``.

    Huang et al., "CurricularFace: Adaptive Curriculum Learning Loss for Deep Face
    Recognition", CVPR 2020, eq. 7-10. Target ``T(cos theta_y) = cos(theta_y + m)``
    (eq. 8; ``ArcFaceHead``'s monotonic continuation past ``theta + m > pi``). A negative
    is hard when ``cos(theta_j) > T(cos theta_y)``; its logit becomes
    ``N = cos(theta_j) * (t + cos(theta_j))`` (eq. 9), easy ones keep ``cos(theta_j)``.
    ``t`` is a non-trainable weight following the batch mean of the target cosines,
    ``t <- alpha * mean(cos theta_y) + (1 - alpha) * t`` from ``t = 0`` (eq. 10); with
    ``alpha = 0.01`` as in the authors' code (0.01 is the weight of the new batch mean).
    Early in training t ~ 0 makes hard negatives *easier* (``cos^2 < cos``); as the
    model improves t grows toward 1 and they are emphasised.

    Each training call updates t once, before computing the logits, and the logits use
    the updated t (as the authors' code does); calls with ``training`` falsy use the
    stored t and leave it unchanged. Under ``tf.distribute`` the batch mean is summed
    across replicas, so every replica holds the one-device value. The mask compares
    against the target logit actually used (the authors' code compares against the raw
    ``cos(theta_y + m)``; the two differ only for ``theta_y > pi - m``).

    Args:
        num_classes: number of identities C.
        margin: the angular margin m in radians, 0 <= m < pi/2.
        scale: feature scale s.
        alpha: weight of the new batch mean in the running t, in (0, 1].
        easy_margin: apply the margin only where ``cos(theta_y) > 0`` (see ``ArcFaceHead``).
        **kwargs: see ``MarginHead``.

    Call arguments:
        inputs: ``[embeddings, labels]`` for margin logits, or ``embeddings``.
        training: update t (once per call) only when truthy.

    Returns:
        float32 (B, C) logits.
    """

    def __init__(self, num_classes, margin=0.5, scale=64.0, alpha=0.01, easy_margin=False, **kwargs):
        super().__init__(num_classes, margin=margin, scale=scale, easy_margin=easy_margin, **kwargs)
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"`alpha` must be in (0, 1], got {alpha}")
        self.alpha = float(alpha)

    def build(self, input_shape):
        super().build(input_shape)
        self.t = self.add_weight(
            name="t", shape=(), initializer="zeros", trainable=False, aggregation="mean"
        )

    def margin_logits(self, cos, cos_target, labels, embeddings=None, training=None):
        t = ops.cast(self.t, "float32")
        if training:
            total, count = sum_over_replicas(
                ops.sum(ops.stop_gradient(cos_target)), ops.sum(ops.ones_like(cos_target))
            )
            updated = self.alpha * total / ops.maximum(count, 1.0) + (1.0 - self.alpha) * t
            # An empty global batch carries no statistic: keep t.
            t = ops.where(count > 0, updated, t)
            self.t.assign(t)
        target = self.target_logit(cos_target)
        hard = cos > ops.expand_dims(target, 1)
        return replace_target(ops.where(hard, cos * (t + cos), cos), labels, target)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}
