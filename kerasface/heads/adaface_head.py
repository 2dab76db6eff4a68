"""AdaFace: a margin that adapts to image quality through the feature norm."""

import math

import keras
from keras import ops

from kerasface.heads.head_registry import HEADS
from kerasface.heads.margin_head import MarginHead, acos, replace_target, sum_over_replicas

# The authors' epsilon: in the std denominator and as the clip of the target angle.
_EPS = 1e-3


@HEADS.register("adaface")
class AdaFaceHead(MarginHead):
    """Quality-adaptive margin head: ``s * (cos(theta_y + g_angle) - g_add)``.

    Kim et al., "AdaFace: Quality Adaptive Margin for Face Recognition", CVPR 2022,
    Sec. 3 (the adaptive margin function and its batch-normalised norm). The feature norm
    ``||z||`` of the raw (un-normalised) embedding, a proxy of image quality, is made a
    batch-standardised, clipped score

        z^ = clip((||z|| - mu) / (sigma + eps) * h, -1, 1)

    and sets ``g_angle = -m * z^`` and ``g_add = m * z^ + m``; the target logit is
    ``cos(clip(theta_y + g_angle, eps, pi - eps)) - g_add``, negatives keep ``cos``.
    A low-norm (low-quality) sample at z^ = -1 gets ArcFace's ``cos(theta + m)``, z^ = 0
    CosFace's ``cos(theta) - m``, a high-norm one at z^ = +1 ``cos(theta - m) - 2m``,
    which shifts the emphasis toward its hard samples. ``||z||`` is clipped to
    [0.001, 100] and carries no gradient (as in the authors' code).

    Statistics follow the authors' code: mu and sigma are non-trainable weights (init 20
    and 100) holding exponential moving averages; each training call first updates them
    with the batch's mean and (unbiased) std of ``||z||``, ``mu <- momentum * mean +
    (1 - momentum) * mu``, and then standardises with the *updated* averages. Calls with
    ``training`` falsy use the stored averages and leave them unchanged. Under
    ``tf.distribute`` the mean and std are those of the global batch (sums over
    replicas), so every replica holds the one-device values. A batch of one has std 0
    (the unbiased estimator is undefined there). The authors also clamp every cosine to
    ``+-(1 - 1e-3)`` before ``acos``; here only the target's angle is clipped (at
    ``[eps, pi - eps]`` after the margin), negatives keep their exact cosine.

    The embeddings fed to this head must be the backbone's features *before*
    L2-normalisation: unit-norm inputs carry no quality signal.

    Args:
        num_classes: number of identities C.
        margin: m (the CosFace-like margin at z^ = 0).
        h: the concentration h scaling the standardised norm (0.333 puts ~68% of a
            normal batch within [-0.333, 0.333]).
        scale: feature scale s.
        momentum: weight of the new batch statistic in the moving averages, in (0, 1]
            (the authors' ``t_alpha``; 1 uses the current batch only).
        **kwargs: see ``MarginHead``.

    Call arguments:
        inputs: ``[embeddings, labels]`` for margin logits, or ``embeddings``.
        training: update the norm statistics (once per call) only when truthy.

    Returns:
        float32 (B, C) logits.
    """

    def __init__(self, num_classes, margin=0.4, h=0.333, scale=64.0, momentum=0.01, **kwargs):
        super().__init__(num_classes, scale=scale, **kwargs)
        if not 0.0 <= margin < math.pi / 2:
            raise ValueError(f"`margin` must be in [0, pi/2), got {margin}")
        if h <= 0:
            raise ValueError(f"`h` must be > 0, got {h}")
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"`momentum` must be in (0, 1], got {momentum}")
        self.margin = float(margin)
        self.h = float(h)
        self.momentum = float(momentum)

    def build(self, input_shape):
        super().build(input_shape)
        self.norm_mean = self.add_weight(
            name="norm_mean",
            shape=(),
            initializer=keras.initializers.Constant(20.0),
            trainable=False,
            aggregation="mean",
        )
        self.norm_std = self.add_weight(
            name="norm_std",
            shape=(),
            initializer=keras.initializers.Constant(100.0),
            trainable=False,
            aggregation="mean",
        )

    def margin_logits(self, cos, cos_target, labels, embeddings=None, training=None):
        if embeddings is None:
            raise ValueError(f"{self.name}: AdaFace needs the raw embeddings (their norms) to set the margin")
        norms = ops.stop_gradient(ops.clip(_norms(embeddings), 0.001, 100.0))
        mean = ops.cast(self.norm_mean, "float32")
        std = ops.cast(self.norm_std, "float32")
        if training:
            batch_mean, batch_std = _mean_and_std(norms)
            mean = self.momentum * batch_mean + (1.0 - self.momentum) * mean
            std = self.momentum * batch_std + (1.0 - self.momentum) * std
            self.norm_mean.assign(mean)
            self.norm_std.assign(std)
        quality = ops.clip((norms - mean) / (std + _EPS) * self.h, -1.0, 1.0)
        return replace_target(cos, labels, self._target(cos_target, quality))

    def _target(self, cos_target, quality):
        angle = ops.clip(acos(cos_target) - self.margin * quality, _EPS, math.pi - _EPS)
        return ops.cos(angle) - (self.margin * quality + self.margin)

    def target_curve(self, theta):
        """The target logit at z^ = 0 (an average-norm image): ``cos(theta) - m``."""
        cos_target = ops.cos(ops.cast(theta, "float32"))
        return self._target(cos_target, ops.zeros_like(cos_target))

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "h": self.h, "momentum": self.momentum}


def _norms(embeddings):
    """Row L2 norms in float32, the squared norm floored so a zero row has a finite gradient."""
    embeddings = ops.cast(embeddings, "float32")
    return ops.sqrt(ops.maximum(ops.sum(ops.square(embeddings), axis=-1), 1e-12))


def _mean_and_std(values):
    """Mean and unbiased std of a (n,) tensor over the global batch (all replicas)."""
    total, count = sum_over_replicas(ops.sum(values), ops.sum(ops.ones_like(values)))
    mean = total / ops.maximum(count, 1.0)
    # Two passes (centre first): one pass E[x^2] - E[x]^2 loses digits at norms ~ 20-100.
    (squares,) = sum_over_replicas(ops.sum(ops.square(values - mean)))
    return mean, ops.sqrt(squares / ops.maximum(count - 1.0, 1.0))
