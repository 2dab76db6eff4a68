"""CosFace / AM-Softmax: additive cosine margin."""

from kerasface.heads.head_registry import HEADS
from kerasface.heads.margin_head import MarginHead


@HEADS.register("cosface")
class CosFaceHead(MarginHead):
    """Large-margin cosine head: target logit ``s * (cos(theta_y) - m)``.

    Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition", CVPR 2018,
    eq. 4 (LMCL); same as AM-Softmax. Defaults s=64, m=0.35 follow the paper.

    Args:
        num_classes: number of identities C.
        margin: the cosine margin m >= 0.
        scale: feature scale s.
        **kwargs: see ``MarginHead``.

    Call arguments:
        inputs: ``[embeddings, labels]`` for margin logits, or ``embeddings``.

    Returns:
        float32 (B, C) logits.
    """

    def __init__(self, num_classes, margin=0.35, scale=64.0, **kwargs):
        super().__init__(num_classes, scale=scale, **kwargs)
        if margin < 0:
            raise ValueError(f"`margin` must be >= 0, got {margin}")
        self.margin = float(margin)

    def target_logit(self, cos_target):
        return cos_target - self.margin

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}
