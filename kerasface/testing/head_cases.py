"""Hand-built inputs for margin-head tests: embeddings at exact angles, heads with a set kernel."""

import math

import numpy as np


def embeddings_at_angles(thetas, dim=8, tilt=0.0):
    """Unit float32 embeddings at exactly ``theta`` from ``e_0`` (class 0's centre in an identity kernel).

    They lie in the (e_0, e_1) plane; ``tilt`` moves part of the e_1 component to e_2, so the
    angles to other axis-aligned centres differ while the angle to e_0 stays ``theta``.
    """
    thetas = np.asarray(thetas, dtype=np.float64)
    embeddings = np.zeros((len(thetas), dim))
    embeddings[:, 0] = np.cos(thetas)
    embeddings[:, 1] = np.sin(thetas) * math.cos(tilt)
    if tilt:
        embeddings[:, 2] = np.sin(thetas) * math.sin(tilt)
    return embeddings.astype(np.float32)


def head_with_kernel(name, kernel, **kwargs):
    """``heads.get(name)`` built for ``kernel``'s (D, columns) shape and holding exactly that kernel.

    ``num_classes`` is the column count divided by ``num_subcenters`` (1 unless given).
    """
    from kerasface import heads

    kernel = np.asarray(kernel, dtype=np.float32)
    num_classes = kernel.shape[1] // kwargs.get("num_subcenters", 1)
    head = heads.get(name, num_classes=num_classes, **kwargs)
    head.build([(None, kernel.shape[0]), (None,)])
    head.kernel.assign(kernel)
    return head
