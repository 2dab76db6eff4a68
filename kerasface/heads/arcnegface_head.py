"""ArcNegFace: ArcFace target with Gaussian-reweighted negatives."""

from keras import ops

from kerasface.heads.arcface_head import ArcFaceHead
from kerasface.heads.head_registry import HEADS


@HEADS.register("arcnegface")
class ArcNegFaceHead(ArcFaceHead):
    """ArcFace target ``s * cos(theta_y + m)`` and margin-aware reweighted negatives.

    Liu et al., "Towards Flops-constrained Face Recognition" (ArcNegFace), ICCV 2019
    workshops (LFR challenge). Every negative ``j`` gets the logit
    ``s * (t_j*cos(theta_j) + t_j - 1)`` with
    ``t_j = alpha * exp(-(cos(theta_j) - T)^2 / sigma)`` and ``T`` the target logit
    ``cos(theta_y + m)`` (with ``ArcFaceHead``'s monotonic continuation past
    ``theta + m > pi``). Negatives whose cosine is near the target logit (the
    confusable ones) get ``t_j`` near ``alpha`` and are emphasised; far ones get
    ``t_j < 1`` and are damped. As in the authors' code, ``t_j`` is measured in cosine
    space and is a constant for the gradient (``stop_gradient``). Defaults m=0.5,
    s=64, alpha=1.2, sigma=2 follow the authors' code.

    Args:
        num_classes: number of identities C.
        margin: the angular margin m in radians, 0 <= m < pi/2.
        scale: feature scale s.
        alpha: peak weight of a negative, > 0.
        sigma: width of the Gaussian in squared cosine units, > 0.
        easy_margin: apply the margin only where ``cos(theta_y) > 0`` (see ``ArcFaceHead``).
        **kwargs: see ``MarginHead``.

    Call arguments:
        inputs: ``[embeddings, labels]`` for margin logits, or ``embeddings``.

    Returns:
        float32 (B, C) logits.
    """

    def __init__(self, num_classes, margin=0.5, scale=64.0, alpha=1.2, sigma=2.0, easy_margin=False, **kwargs):
        super().__init__(num_classes, margin=margin, scale=scale, easy_margin=easy_margin, **kwargs)
        if alpha <= 0:
            raise ValueError(f"`alpha` must be > 0, got {alpha}")
        if sigma <= 0:
            raise ValueError(f"`sigma` must be > 0, got {sigma}")
        self.alpha = float(alpha)
        self.sigma = float(sigma)

    def negative_logits(self, cos, cos_target, target_logit):
        distance = cos - ops.expand_dims(target_logit, 1)
        weight = ops.stop_gradient(self.alpha * ops.exp(-ops.square(distance) / self.sigma))
        return weight * cos + (weight - 1.0)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "sigma": self.sigma}
