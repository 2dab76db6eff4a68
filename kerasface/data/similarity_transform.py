"""The ArcFace 5-point template and the least-squares similarity transform that maps landmarks onto it."""

import numpy as np

# Where the eyes, nose tip and mouth corners sit in a 112x112 ArcFace crop, in the order
# image-left eye, image-right eye, nose, image-left mouth corner, image-right mouth corner
# (x, y in pixels, pixel centres at integer coordinates).
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)
ARCFACE_TEMPLATE.setflags(write=False)


def arcface_template(image_size=112):
    """The ArcFace template scaled to a square ``image_size`` crop, float32 (5, 2)."""
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 16:
        raise ValueError(f"`image_size` must be an int >= 16, got {image_size!r}")
    return ARCFACE_TEMPLATE * np.float32(image_size / 112.0)


def estimate_similarity(src, dst):
    """Least-squares similarity (rotation, scale, translation; no reflection) from ``src`` to ``dst``.

    Umeyama's closed form: the ``s, R, t`` minimising ``sum ||dst_i - (s R src_i + t)||^2`` over
    rotations ``R`` (det +1), so a mirrored point set gives the best proper rotation rather than
    a reflection.

    Args:
        src: (N, 2) points, N >= 2 (e.g. detected landmarks in the photo).
        dst: (N, 2) points they should land on (e.g. :data:`ARCFACE_TEMPLATE`).

    Returns:
        float64 (2, 3) matrix ``[s R | t]``: ``dst ~= src @ M[:, :2].T + M[:, 2]``.
    """
    src = _as_points(src, "src")
    dst = _as_points(dst, "dst")
    if src.shape != dst.shape:
        raise ValueError(
            f"`src` and `dst` must hold the same number of points, got {src.shape} and {dst.shape}"
        )
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_c = src - src_mean
    dst_c = dst - dst_mean
    src_var = np.sum(src_c * src_c) / len(src)
    if src_var <= 1e-12:
        raise ValueError(f"`src` points all coincide ({src[0].tolist()}); no similarity is defined")
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    # Flip the weakest axis when the best orthogonal map is a reflection.
    signs = np.array([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) >= 0 else -1.0])
    rotation = u @ np.diag(signs) @ vt
    scale = float(np.sum(singular * signs) / src_var)
    translation = dst_mean - scale * rotation @ src_mean
    return np.concatenate([scale * rotation, translation[:, None]], axis=1)


def apply_similarity(matrix, points):
    """Map (N, 2) ``points`` through a (2, 3) affine ``matrix``; float64 (N, 2)."""
    matrix = np.asarray(matrix, np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"`matrix` must be (2, 3), got shape {matrix.shape}")
    points = _as_points(points, "points", minimum=1)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix):
    """Inverse of a (2, 3) affine ``matrix`` as a (2, 3) float64 matrix."""
    matrix = np.asarray(matrix, np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"`matrix` must be (2, 3), got shape {matrix.shape}")
    linear = matrix[:, :2]
    if abs(np.linalg.det(linear)) < 1e-12:
        raise ValueError(f"affine matrix is singular, cannot invert: {matrix.tolist()}")
    inverse = np.linalg.inv(linear)
    return np.concatenate([inverse, -(inverse @ matrix[:, 2])[:, None]], axis=1)


def _as_points(points, name, minimum=2):
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] < minimum:
        raise ValueError(f"`{name}` must be (N, 2) points with N >= {minimum}, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{name}` holds non-finite values: {array.tolist()}")
    return array
