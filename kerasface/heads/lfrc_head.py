"""LFRC: combined margin with mis-classified negatives re-weighted, plus intra/inter losses."""

from keras import ops

from kerasface.heads.combined_margin_head import CombinedMarginHead
from kerasface.heads.head_registry import HEADS
from kerasface.losses.inter_class_loss import batch_inter_class_loss, inter_class_loss
from kerasface.losses.intra_class_loss import intra_class_loss

_INTER_SCOPES = ("all", "batch")


@HEADS.register("lfrc")
class LFRCHead(CombinedMarginHead):
    """Combined-margin head whose hard negatives get the SV/MV-Softmax weight (LFRC eq. 3-8).

    Chai et al., "A Progressive Learning Framework for Unconstrained Face Recognition"
    (LFRC), 2019. Target logit ``s * (cos(m1 theta_y + m2) - m3)``
    (eq. 3-4, m3 inside the scale, as eq. 6 compares it with cosines; past
    ``theta* = (pi - m2) / m1`` the monotone continuation of ``CombinedMarginHead``).
    Negatives follow eq. 5-6: ``Z3 = exp(s (t-1)(cos theta_j + 1) I_j) exp(s cos theta_j)``
    (the support-vector-guided weight of its ref. [31]; ``I_j`` sits in the exponent, so
    easy negatives keep ``s cos theta_j``), with ``I_j = 1`` exactly when
    ``target - cos theta_j < 0``, i.e. ``cos theta_j`` strictly above the unscaled target
    logit (equality is not hard; past theta* the target is the continuation, where eq. 6's
    literal ``cos(m1 theta + m2) - m3`` would rise again). A hard negative's logit is thus
    ``s * (t cos theta_j + t - 1)``. The paper gives no values: m1, m2, m3 default to
    insightface's combined margin (1.0, 0.3, 0.2), t to SV/MV-Softmax's 1.2, s to 64.

    When training, ``intra_weight * L_intra`` (eq. 7, mean angle to the own centre) and
    ``inter_weight * L_inter`` (eq. 8, mean over classes of the cosine to the nearest
    other centre) are added with ``add_loss`` (``fit`` adds them to the model loss). The
    paper adds them progressively and gives no weights, so both default to 0 (off).
    ``inter_scope="all"`` is eq. 8 over every class (C^2 * D work per step, chunked so it
    never holds a C x C matrix); ``"batch"`` averages over the batch's labels only, an
    O(B * C * D) estimate for very many classes.

    Args:
        num_classes: number of identities C.
        m1: multiplicative angular margin, > 0.
        m2: additive angular margin in radians, 0 <= m2 < pi/2.
        m3: additive cosine margin, >= 0.
        t: weight of hard negatives, >= 1 (t = 1 is the plain combined margin).
        scale: feature scale s.
        intra_weight: weight of the intra-class loss (eq. 7), >= 0.
        inter_weight: weight of the inter-class loss (eq. 8), >= 0.
        inter_scope: ``"all"`` (eq. 8, every class) or ``"batch"`` (the batch's classes).
        chunk_size: centres compared at a time by the ``"all"`` inter loss, an int >= 1.
        **kwargs: see ``MarginHead``.

    Call arguments:
        inputs: ``[embeddings, labels]`` for margin logits, or ``embeddings``.
        training: add the auxiliary losses (when their weights are > 0).

    Returns:
        float32 (B, C) logits.
    """

    def __init__(
        self,
        num_classes,
        m1=1.0,
        m2=0.3,
        m3=0.2,
        t=1.2,
        scale=64.0,
        intra_weight=0.0,
        inter_weight=0.0,
        inter_scope="all",
        chunk_size=512,
        **kwargs,
    ):
        super().__init__(num_classes, m1=m1, m2=m2, m3=m3, scale=scale, **kwargs)
        if not t >= 1:
            raise ValueError(f"`t` must be >= 1, got {t}")
        if not intra_weight >= 0:
            raise ValueError(f"`intra_weight` must be >= 0, got {intra_weight}")
        if not inter_weight >= 0:
            raise ValueError(f"`inter_weight` must be >= 0, got {inter_weight}")
        if inter_scope not in _INTER_SCOPES:
            raise ValueError(f"`inter_scope` must be one of {list(_INTER_SCOPES)}, got {inter_scope!r}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"`chunk_size` must be an int >= 1, got {chunk_size!r}")
        self.t = float(t)
        self.intra_weight = float(intra_weight)
        self.inter_weight = float(inter_weight)
        self.inter_scope = inter_scope
        self.chunk_size = chunk_size

    def negative_logits(self, cos, cos_target, target_logit):
        hard = cos > ops.expand_dims(target_logit, 1)
        return ops.where(hard, self.t * cos + (self.t - 1.0), cos)

    def margin_logits(self, cos, cos_target, labels, embeddings=None, training=None):
        if training:
            if self.intra_weight > 0:
                self.add_loss(self.intra_weight * intra_class_loss(embeddings, labels, self.kernel))
            if self.inter_weight > 0:
                if self.inter_scope == "all":
                    inter = inter_class_loss(self.kernel, self.chunk_size)
                else:
                    inter = batch_inter_class_loss(self.kernel, labels)
                self.add_loss(self.inter_weight * inter)
        return super().margin_logits(cos, cos_target, labels, embeddings=embeddings, training=training)

    def get_config(self):
        return {
            **super().get_config(),
            "t": self.t,
            "intra_weight": self.intra_weight,
            "inter_weight": self.inter_weight,
            "inter_scope": self.inter_scope,
            "chunk_size": self.chunk_size,
        }
