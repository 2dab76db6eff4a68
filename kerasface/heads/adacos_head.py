"""AdaCos: cosine logits with an automatically chosen (fixed or per-batch adaptive) scale."""

import math

import keras
from keras import ops

from kerasface.heads.head_registry import HEADS
from kerasface.heads.margin_head import MarginHead, acos, gather_over_replicas, sum_over_replicas


@HEADS.register("adacos")
class AdaCosHead(MarginHead):
    """Margin-free cosine head whose scale s is set from the class count or the batch.

    Zhang et al., "AdaCos: Adaptively Scaling Cosine Logits for Effectively Learning Deep
    Face Representations", CVPR 2019. Logits are ``s * cos(theta_j)`` for every class, no
    margin. Fixed AdaCos (Sec. 4.1): ``s = sqrt(2) * log(C - 1)``. Dynamic AdaCos
    (Sec. 4.2, Algorithm 1): s starts at that value and every training call sets

        B_avg = mean_i sum_{j != y_i} exp(s_old * cos(theta_ij))
        s     = log(B_avg) / cos(min(pi/4, median_i theta_{i,y_i}))

    and the logits of that call use the new s (as in the paper's algorithm). The row sum
    over ``j != y`` is the full row sum minus the target's term (no (B, C) mask), floored
    at its exact lower bound ``(C - 1) * exp(-s_old)`` so float32 cancellation can never
    reach ``log(0)``. s is a non-trainable weight; calls with ``training`` falsy (and
    inference on embeddings alone) use the stored s and leave it unchanged. Under
    ``tf.distribute`` the statistics are those of the *global* batch (the row sums are
    summed and the target angles gathered across replicas before the median), so every
    replica computes the same s, equal to the one-device value; the weight's
    ``aggregation="mean"`` then only averages identical values. The median of an even
    count is the mean of the two middle angles (numpy's convention).

    Args:
        num_classes: number of identities C (>= 3 for the default scale, which is 0 at C=2).
        dynamic: adapt s every training call (Dynamic AdaCos); False keeps it fixed.
        scale: the fixed scale, and the initial scale of the dynamic variant. None (the
            default) uses the paper's ``sqrt(2) * log(C - 1)``; the resolved value is what
            ``scale`` holds and what ``get_config`` stores.
        **kwargs: see ``MarginHead``.

    Call arguments:
        inputs: ``[embeddings, labels]`` for training logits, or ``embeddings``.
        training: update the dynamic scale (once per call) only when truthy.

    Returns:
        float32 (B, C) logits.
    """

    def __init__(self, num_classes, dynamic=True, scale=None, **kwargs):
        if scale is None:
            if int(num_classes) < 3:
                raise ValueError(
                    f"`num_classes` must be >= 3 for AdaCos's default scale sqrt(2) * log(C - 1) "
                    f"(0 at C=2), got {num_classes}; pass `scale` explicitly"
                )
            scale = math.sqrt(2.0) * math.log(int(num_classes) - 1)
        super().__init__(num_classes, scale=scale, **kwargs)
        self.dynamic = bool(dynamic)

    def build(self, input_shape):
        super().build(input_shape)
        if self.dynamic:
            self.adaptive_scale = self.add_weight(
                name="adaptive_scale",
                shape=(),
                initializer=keras.initializers.Constant(self.scale),
                trainable=False,
                aggregation="mean",
            )

    def logit_scale(self):
        if self.dynamic:
            return ops.cast(self.adaptive_scale, "float32")
        return self.scale

    def margin_logits(self, cos, cos_target, labels, embeddings=None, training=None):
        if self.dynamic and training:
            self.adaptive_scale.assign(self._batch_scale(cos, cos_target))
        return cos

    def _batch_scale(self, cos, cos_target):
        """The new s from this (global, non-empty) batch."""
        cos = ops.stop_gradient(cos)
        cos_target = ops.stop_gradient(cos_target)
        old_scale = ops.cast(self.adaptive_scale, "float32")
        negatives = ops.sum(ops.exp(old_scale * cos), axis=1) - ops.exp(old_scale * cos_target)
        negatives = ops.maximum(negatives, (self.num_classes - 1) * ops.exp(-old_scale))
        total, count = sum_over_replicas(ops.sum(negatives), ops.sum(ops.ones_like(negatives)))
        b_avg = total / ops.maximum(count, 1.0)
        theta_median = ops.median(gather_over_replicas(acos(cos_target)))
        return ops.log(b_avg) / ops.cos(ops.minimum(math.pi / 4.0, theta_median))

    def get_config(self):
        return {**super().get_config(), "dynamic": self.dynamic}
