"""Sub-center ArcFace: k centres per class, max-pooled, then the ArcFace margin."""

from keras import ops

from kerasface.heads.arcface_head import ArcFaceHead
from kerasface.heads.head_registry import HEADS
from kerasface.heads.margin_head import check_labels, l2_normalize


@HEADS.register("subcenter_arcface")
class SubCenterArcFaceHead(ArcFaceHead):
    """ArcFace over k sub-centres per class: ``cos(theta_j) = max_k cos(x, W_{j,k})``.

    Deng et al., "Sub-center ArcFace: Boosting Face Recognition by Large-scale Noisy Web
    Faces", ECCV 2020, Sec. 3.1: each class has k sub-centres, the class cosine is the
    maximum over them (a clean sample gathers at its class's dominant sub-centre, noisy
    ones at the others), then the ArcFace margin applies as in ``ArcFaceHead`` (target
    ``cos(theta_y + m)``, monotonic fallback or ``easy_margin``). Defaults k=3, m=0.5,
    s=64 as in the paper.

    The kernel is (D, C * k), *class-major*: column ``c * k + i`` is sub-centre i of class
    c, so a (B, C * k) cosine reshapes to (B, C, k) for the max. The (B, C * k) cosine is
    materialised, k times the memory of a plain head's. After training, the paper drops
    the non-dominant sub-centres: ``subcenter_counts`` counts, per class, which of its
    sub-centres each labelled sample is nearest to (sum it over a dataset), and
    ``dominant_centers(counts)`` returns the (D, C) kernel of the winners, e.g. to
    initialise a plain ``ArcFaceHead`` for the clean-data stage.

    Args:
        num_classes: number of identities C.
        num_subcenters: k, sub-centres per class, >= 1 (1 is plain ArcFace).
        margin: the angular margin m in radians, 0 <= m < pi/2.
        scale: feature scale s.
        easy_margin: apply the margin only where ``cos(theta_y) > 0``.
        **kwargs: see ``MarginHead``.

    Call arguments:
        inputs: ``[embeddings, labels]`` for margin logits, or ``embeddings``.

    Returns:
        float32 (B, C) logits (one per class, not per sub-centre).
    """

    def __init__(self, num_classes, num_subcenters=3, margin=0.5, scale=64.0, easy_margin=False, **kwargs):
        super().__init__(num_classes, margin=margin, scale=scale, easy_margin=easy_margin, **kwargs)
        if int(num_subcenters) != num_subcenters or num_subcenters < 1:
            raise ValueError(f"`num_subcenters` must be an integer >= 1, got {num_subcenters}")
        self.num_subcenters = int(num_subcenters)

    def kernel_shape(self, embedding_size):
        return (embedding_size, self.num_classes * self.num_subcenters)

    def cosine(self, embeddings):
        per_center = ops.reshape(self._kernel_cosine(embeddings), (-1, self.num_classes, self.num_subcenters))
        return ops.clip(ops.max(per_center, axis=-1), -1.0, 1.0)

    def subcenter_counts(self, embeddings, labels):
        """How many samples are nearest to each sub-centre of their own class: (C, k) float32.

        Only the labelled class's k columns are read (a (B, k) cosine, no (B, C * k)), so
        it is cheap to accumulate over a whole dataset batch by batch.
        """
        labels = check_labels(labels, self.num_classes)
        embeddings = l2_normalize(ops.cast(embeddings, "float32"), axis=-1)
        kernel = ops.reshape(ops.cast(self.kernel, "float32"), (-1, self.num_classes, self.num_subcenters))
        own_centers = l2_normalize(ops.take(kernel, labels, axis=1), axis=0)  # (D, B, k)
        own_cos = ops.einsum("bd,dbk->bk", embeddings, own_centers)
        nearest = ops.cast(ops.argmax(own_cos, axis=-1), "int32")
        flat = labels * self.num_subcenters + nearest
        counts = ops.segment_sum(
            ops.ones_like(flat, dtype="float32"), flat, num_segments=self.num_classes * self.num_subcenters
        )
        return ops.reshape(counts, (self.num_classes, self.num_subcenters))

    def dominant_centers(self, counts):
        """The (D, C) kernel of each class's most populated sub-centre.

        Args:
            counts: (C, k) sample counts per sub-centre, e.g. summed ``subcenter_counts``.
                A class without samples keeps its first sub-centre.

        Returns:
            the un-normalised kernel columns, (D, C) float32.
        """
        counts = ops.convert_to_tensor(counts)
        expected = (self.num_classes, self.num_subcenters)
        if tuple(counts.shape) != expected:
            raise ValueError(f"`counts` must have shape {expected} (classes, sub-centres), got {tuple(counts.shape)}")
        dominant = ops.cast(ops.argmax(counts, axis=-1), "int32")
        columns = ops.arange(self.num_classes, dtype="int32") * self.num_subcenters + dominant
        return ops.take(ops.cast(self.kernel, "float32"), columns, axis=1)

    def get_config(self):
        return {**super().get_config(), "num_subcenters": self.num_subcenters}
