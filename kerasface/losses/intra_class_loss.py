"""Intra-class angle loss (LFRC eq. 7): the mean angle between embeddings and their class centres."""

from keras import ops

from kerasface.heads.margin_head import acos, check_labels, l2_normalize


def intra_class_loss(embeddings, labels, kernel):
    """Mean angle (radians) between each embedding and its own class centre.

    Chai et al., "A Progressive Learning Framework for Unconstrained Face Recognition"
    (LFRC), eq. 7: ``L_intra = 1/N sum_i arccos(W_{y_i}^T x_i / (||W_{y_i}|| ||x_i||))``.
    Only the B target columns of the kernel are gathered, so the cost is O(B*D) at any
    number of classes. The arccos argument is kept off +-1, so the gradient is finite at
    an embedding lying exactly on its centre (there the value reads ~5e-4 instead of 0).

    Args:
        embeddings: (B, D) raw (un-normalised) embeddings, any float dtype.
        labels: int class indices, shape (B,) or (B, 1), each in [0, C).
        kernel: (D, C) class-centre matrix (a head's ``kernel``), un-normalised.

    Returns:
        float32 scalar, differentiable with respect to ``embeddings`` and ``kernel``.
    """
    kernel = ops.cast(kernel, "float32")
    labels = check_labels(labels, kernel.shape[1])
    embeddings = l2_normalize(ops.cast(embeddings, "float32"), axis=-1)
    centres = l2_normalize(ops.take(kernel, labels, axis=1), axis=0)
    cos = ops.sum(embeddings * ops.transpose(centres), axis=-1)
    return ops.mean(acos(cos))
