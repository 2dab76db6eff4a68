"""MagFace: an ArcFace margin that grows with the feature magnitude, plus a magnitude regulariser."""

import math
import warnings

from keras import ops

from kerasface.heads.arcface_head import additive_angular_margin
from kerasface.heads.head_registry import HEADS
from kerasface.heads.margin_head import MarginHead, replace_target


@HEADS.register("magface")
class MagFaceHead(MarginHead):
    """Magnitude-aware angular margin head: target logit ``s * cos(theta_y + m(a))``.

    Meng et al., "MagFace: A Universal Representation for Face Recognition and Quality
    Assessment", CVPR 2021, Sec. 3 (the MagFace loss). ``a = ||f||`` is the magnitude of the raw
    (un-normalised) embedding clipped to ``[l_a, u_a]``; the margin is linear in it,
    ``m(a) = (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m``; the regulariser
    ``g(a) = 1/a + a/u_a^2`` is added as ``self.add_loss(lambda_g * mean(g(a)))`` on
    training calls only, so high-quality faces are pushed to large magnitudes. As in the
    authors' code, the gradient flows through a into the backbone both via g and via the
    margin m(a) (the clip stops it outside ``[l_a, u_a]``). Past ``theta + m(a) > pi``
    the target continues monotonically as ``cos(theta) - m(a) sin(m(a))`` (the ArcFace
    fallback, per sample); ``easy_margin=True`` instead keeps ``cos(theta)`` where
    ``cos(theta) <= 0``, which is what the authors' ``MagLinear`` does by default.
    Defaults are the authors' training script's (``l_m=0.45``, ``lambda_g=35``); the
    paper's convergence condition needs ``lambda_g >= s * k * u_a^2 * l_a^2 / (u_a^2 -
    l_a^2)`` with ``k = (u_m - l_m) / (u_a - l_a)`` (22.6 at the defaults), and a smaller
    value warns.

    The embeddings fed to this head must be the backbone's features *before*
    L2-normalisation: unit-norm inputs all get ``a = l_a``.

    Args:
        num_classes: number of identities C.
        l_a: lower bound of the magnitude a, > 0.
        u_a: upper bound of the magnitude a, > l_a.
        l_m: margin at a = l_a, in [0, pi/2).
        u_m: margin at a = u_a, in [l_m, pi/2).
        lambda_g: weight of the regulariser g(a), >= 0.
        scale: feature scale s.
        easy_margin: apply the margin only where ``cos(theta_y) > 0``.
        **kwargs: see ``MarginHead``.

    Call arguments:
        inputs: ``[embeddings, labels]`` for margin logits, or ``embeddings``.
        training: add the regulariser loss only when truthy.

    Returns:
        float32 (B, C) logits.
    """

    def __init__(
        self,
        num_classes,
        l_a=10.0,
        u_a=110.0,
        l_m=0.45,
        u_m=0.8,
        lambda_g=35.0,
        scale=64.0,
        easy_margin=False,
        **kwargs,
    ):
        super().__init__(num_classes, scale=scale, **kwargs)
        if not 0.0 < l_a < u_a:
            raise ValueError(f"the magnitude bounds must satisfy 0 < `l_a` < `u_a`, got l_a={l_a}, u_a={u_a}")
        if not 0.0 <= l_m <= u_m < math.pi / 2:
            raise ValueError(f"the margins must satisfy 0 <= `l_m` <= `u_m` < pi/2, got l_m={l_m}, u_m={u_m}")
        if lambda_g < 0:
            raise ValueError(f"`lambda_g` must be >= 0, got {lambda_g}")
        self.l_a = float(l_a)
        self.u_a = float(u_a)
        self.l_m = float(l_m)
        self.u_m = float(u_m)
        self.lambda_g = float(lambda_g)
        self.easy_margin = bool(easy_margin)
        slope = (self.u_m - self.l_m) / (self.u_a - self.l_a)
        min_lambda = self.scale * slope * self.u_a**2 * self.l_a**2 / (self.u_a**2 - self.l_a**2)
        if self.lambda_g < min_lambda:
            warnings.warn(
                f"MagFace: `lambda_g`={self.lambda_g} is below the paper's bound {min_lambda:.4g} "
                f"(s={self.scale}, l_a={self.l_a}, u_a={self.u_a}, l_m={self.l_m}, u_m={self.u_m}); "
                "the magnitude may not converge to a unique optimum",
                stacklevel=2,
            )

    def magnitude_margin(self, magnitude):
        """m(a) for magnitudes already clipped to ``[l_a, u_a]``."""
        return (self.u_m - self.l_m) / (self.u_a - self.l_a) * (magnitude - self.l_a) + self.l_m

    def margin_logits(self, cos, cos_target, labels, embeddings=None, training=None):
        if embeddings is None:
            raise ValueError(f"{self.name}: MagFace needs the raw embeddings (their magnitudes) to set the margin")
        embeddings = ops.cast(embeddings, "float32")
        # Floored before the sqrt: a zero embedding would otherwise get an infinite gradient.
        norms = ops.sqrt(ops.maximum(ops.sum(ops.square(embeddings), axis=-1), 1e-12))
        magnitude = ops.clip(norms, self.l_a, self.u_a)
        if training:
            self.add_loss(self.lambda_g * ops.mean(1.0 / magnitude + magnitude / self.u_a**2))
        target = self._target(cos_target, self.magnitude_margin(magnitude))
        return replace_target(cos, labels, target)

    def _target(self, cos_target, margin):
        if self.easy_margin:
            return ops.where(cos_target > 0.0, additive_angular_margin(cos_target, margin, fallback=False),
                             cos_target)
        return additive_angular_margin(cos_target, margin)

    def target_curve(self, theta):
        """The target logit at the mid magnitude ``a = (l_a + u_a) / 2``, i.e. m = (l_m + u_m) / 2."""
        cos_target = ops.cos(ops.cast(theta, "float32"))
        return self._target(cos_target, ops.full_like(cos_target, self.magnitude_margin(0.5 * (self.l_a + self.u_a))))

    def get_config(self):
        return {
            **super().get_config(),
            "l_a": self.l_a,
            "u_a": self.u_a,
            "l_m": self.l_m,
            "u_m": self.u_m,
            "lambda_g": self.lambda_g,
            "easy_margin": self.easy_margin,
        }
