"""LinearFace: a target logit linear in the angle, cosine negatives."""

from keras import ops

from kerasface.heads.head_registry import HEADS
from kerasface.heads.margin_head import MarginHead, acos


@HEADS.register("linearface")
class LinearFaceHead(MarginHead):
    """Linear target head: target logit ``s * (-a theta_y + b)``, negatives ``s * cos(theta_j)``.

    Huang et al., "More Information Supervised Probabilistic Deep Face Embedding
    Learning" (LATSE), ICML 2020, eq. 10. Defaults from the paper: a = b = 0.88, its
    best setting on LFW and CFP-FP (Table 1, against (0.88, 1) and (1, 1)), and s=64
    (Sec. 4.1). With a > 0 the target decreases monotonically over ``[0, pi]`` (the
    paper's second principle); at the defaults it also stays below ``cos(theta)``
    everywhere (eq. 8, the margin penalises the target), which this head does not
    enforce for other values.

    Args:
        num_classes: number of identities C.
        a: slope of the target logit in theta, > 0.
        b: intercept of the target logit (its value at theta = 0).
        scale: feature scale s.
        **kwargs: see ``MarginHead``.

    Call arguments:
        inputs: ``[embeddings, labels]`` for margin logits, or ``embeddings``.

    Returns:
        float32 (B, C) logits.
    """

    def __init__(self, num_classes, a=0.88, b=0.88, scale=64.0, **kwargs):
        super().__init__(num_classes, scale=scale, **kwargs)
        if not a > 0:
            raise ValueError(f"`a` must be > 0 so the target decreases with the angle, got {a}")
        if not abs(b) < float("inf"):
            raise ValueError(f"`b` must be a finite number, got {b}")
        self.a = float(a)
        self.b = float(b)

    def target_logit(self, cos_target):
        return self.b - self.a * acos(ops.cast(cos_target, "float32"))

    def get_config(self):
        return {**super().get_config(), "a": self.a, "b": self.b}
