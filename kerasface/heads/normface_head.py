"""NormFace / normalised softmax: scaled cosine logits, no margin."""

from kerasface.heads.head_registry import HEADS
from kerasface.heads.margin_head import MarginHead


@HEADS.register("normface")
class NormFaceHead(MarginHead):
    """Normalised softmax (NormFace): logits ``s * cos(theta_j)`` for every class.

    Wang et al., "NormFace: L2 Hypersphere Embedding for Face Verification", 2017,
    eq. 5 (normalised features and weights) with the scale of Sec. 3.3.

    Args:
        num_classes: number of identities C.
        scale: feature scale s.
        **kwargs: see ``MarginHead``.

    Call arguments:
        inputs: ``[embeddings, labels]`` or ``embeddings``; both give the same logits.

    Returns:
        float32 (B, C) logits.
    """
