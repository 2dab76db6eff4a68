"""SphereFace / A-Softmax: multiplicative angular margin with lambda annealing."""

import math

from keras import ops

from kerasface.heads.head_registry import HEADS
from kerasface.heads.margin_head import MarginHead, replace_target


@HEADS.register("sphereface")
class SphereFaceHead(MarginHead):
    """Multiplicative angular margin head (A-Softmax) on normalised features, annealed.

    Liu et al., "SphereFace: Deep Hypersphere Embedding for Face Recognition", CVPR 2017,
    eq. 6-7: the target logit is ``psi(theta) = (-1)^k cos(m theta) - 2k`` for
    ``theta in [k pi/m, (k+1) pi/m]``, a monotonically decreasing extension of
    ``cos(m theta)`` over ``[0, pi]``. ``psi`` alone does not train from scratch, so, as in
    the paper's released Caffe layer, the target is annealed from ``cos(theta)`` toward
    ``psi``: ``(lambda cos(theta) + psi(theta)) / (1 + lambda)`` with
    ``lambda = max(lambda_min, lambda_base * (1 + lambda_gamma * t)^(-lambda_power))``,
    ``t`` the number of training calls so far, counted from 1 on the first one (the
    Caffe layer increments before it computes lambda). Defaults are that layer's (1000,
    0.12, 1, 5): lambda reaches ``lambda_min`` after about 1,660 steps.

    The paper scales logits by the raw feature norm ``||x||``; this head normalises the
    features and uses a fixed scale instead, as every other head here does. s=30 is the
    scale of the authors' own normalised-feature SphereFace re-implementation
    (OpenSphere; Liu et al., "SphereFace Revived", TPAMI 2022).

    ``cos(m theta)`` is the Chebyshev polynomial ``T_m(cos theta)`` and ``k`` counts the
    thresholds ``cos(j pi/m)`` at or above ``cos theta``, so there is no ``arccos`` and
    the gradient is a polynomial, finite everywhere including ``cos = +-1``.

    The step counter is a non-trainable float32 weight ``iteration`` (exact up to 2**24
    steps, far past the end of the annealing), incremented once per call with
    ``training=True`` and mean-aggregated, so replicas keep identical copies.

    Args:
        num_classes: number of identities C.
        margin: the integer angular multiplier m >= 1 (m=1 is NormFace).
        scale: feature scale s.
        lambda_base: lambda at step 0 (``base``).
        lambda_gamma: decay rate of lambda (``gamma``).
        lambda_power: decay exponent of lambda (``power``).
        lambda_min: the floor lambda settles at (``lambda_min``); 0 anneals fully to
            ``psi``.
        **kwargs: see ``MarginHead``.

    Call arguments:
        inputs: ``[embeddings, labels]`` for margin logits, or ``embeddings``.
        training: when truthy, advances the step counter before computing lambda.

    Returns:
        float32 (B, C) logits.
    """

    def __init__(
        self,
        num_classes,
        margin=4,
        scale=30.0,
        lambda_base=1000.0,
        lambda_gamma=0.12,
        lambda_power=1.0,
        lambda_min=5.0,
        **kwargs,
    ):
        super().__init__(num_classes, scale=scale, **kwargs)
        if isinstance(margin, bool) or int(margin) != margin or margin < 1:
            raise ValueError(f"`margin` must be an integer >= 1, got {margin}")
        for name, value in (
            ("lambda_base", lambda_base),
            ("lambda_gamma", lambda_gamma),
            ("lambda_power", lambda_power),
            ("lambda_min", lambda_min),
        ):
            if not value >= 0:
                raise ValueError(f"`{name}` must be >= 0, got {value}")
        self.margin = int(margin)
        self.lambda_base = float(lambda_base)
        self.lambda_gamma = float(lambda_gamma)
        self.lambda_power = float(lambda_power)
        self.lambda_min = float(lambda_min)

    def build(self, input_shape):
        super().build(input_shape)
        self.iteration = self.add_weight(
            name="iteration", shape=(), initializer="zeros", trainable=False, aggregation="mean"
        )

    def lambda_schedule(self, iteration):
        """lambda after ``iteration`` training steps (number or tensor), float32."""
        iteration = ops.cast(iteration, "float32")
        annealed = self.lambda_base * ops.power(1.0 + self.lambda_gamma * iteration, -self.lambda_power)
        return ops.maximum(annealed, self.lambda_min)

    def current_lambda(self):
        """lambda of the latest training step (``lambda_base`` before the first one)."""
        return self.lambda_schedule(self.iteration)

    def psi(self, cos):
        """``(-1)^k cos(m theta) - 2k`` as a polynomial of ``cos theta``."""
        cos = ops.cast(cos, "float32")
        previous, chebyshev = ops.ones_like(cos), cos
        for _ in range(self.margin - 1):
            previous, chebyshev = chebyshev, 2.0 * cos * chebyshev - previous
        k = ops.zeros_like(cos)
        for j in range(1, self.margin):
            # theta >= j pi / m  <=>  cos(theta) <= cos(j pi / m); psi is continuous there.
            k = k + ops.cast(cos <= math.cos(j * math.pi / self.margin), "float32")
        sign = 1.0 - 2.0 * ops.mod(k, 2.0)
        return sign * chebyshev - 2.0 * k

    def target_logit(self, cos_target, lambda_value=None):
        """``(lambda cos + psi) / (1 + lambda)``; lambda defaults to ``current_lambda()``."""
        lambda_value = self.current_lambda() if lambda_value is None else lambda_value
        cos_target = ops.cast(cos_target, "float32")
        return (lambda_value * cos_target + self.psi(cos_target)) / (1.0 + lambda_value)

    def margin_logits(self, cos, cos_target, labels, embeddings=None, training=None):
        if training:
            # A tensor read before the assign (``ops.convert_to_tensor`` would return the
            # variable itself, which later reads would see incremented).
            iteration = self.iteration + 1.0
            self.iteration.assign(iteration)
        else:
            iteration = self.iteration
        target = self.target_logit(cos_target, lambda_value=self.lambda_schedule(iteration))
        return replace_target(cos, labels, target)

    def target_curve(self, theta, lambda_value=None):
        """Target logit vs theta at ``lambda_min`` by default.

        ``lambda_min`` is where the annealing settles and where the head spends all but
        its first steps, so that is the margin a plot should show (a fresh head's current
        lambda, ``lambda_base``, would look like no margin). Pass ``lambda_value=0.0`` for
        the paper's bare ``psi`` or ``current_lambda()`` for this head's present state.
        """
        lambda_value = self.lambda_min if lambda_value is None else lambda_value
        return self.target_logit(ops.cos(ops.cast(theta, "float32")), lambda_value=lambda_value)

    def get_config(self):
        return {
            **super().get_config(),
            "margin": self.margin,
            "lambda_base": self.lambda_base,
            "lambda_gamma": self.lambda_gamma,
            "lambda_power": self.lambda_power,
            "lambda_min": self.lambda_min,
        }
