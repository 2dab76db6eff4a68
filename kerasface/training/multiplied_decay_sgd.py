"""SGD whose weight decay is scaled per variable: MXNet's ``wd_mult``, by regular expression."""

import re

import keras


@keras.saving.register_keras_serializable(package="kerasface")
class MultipliedDecaySGD(keras.optimizers.SGD):
    """Keras SGD with per-variable weight-decay multipliers.

    AirFace (Li et al., 2019, Table 2) finds its MobileFaceNet best with weight decay 5e-4
    everywhere except the last layer into the embedding, which gets ten times more
    ("wdml10", MXNet's ``wd_mult``). Keras 3 optimizers only switch decay off per variable
    (``exclude_from_weight_decay``); here every variable whose ``path`` matches a pattern of
    ``weight_decay_multipliers`` (``re.search``, the first matching pattern wins) decays
    with ``weight_decay * multiplier``, others with ``weight_decay``. The decay stays Keras'
    decoupled form, ``w -= lr * wd * w`` applied before the gradient step, on every replica.

    Args:
        weight_decay_multipliers: ``{pattern: multiplier >= 0}``; 0 turns decay off.
        **kwargs: ``keras.optimizers.SGD`` arguments (``learning_rate``, ``momentum``,
            ``weight_decay``, ...).
    """

    def __init__(self, weight_decay_multipliers=None, **kwargs):
        super().__init__(**kwargs)
        multipliers = dict(weight_decay_multipliers or {})
        for pattern, multiplier in multipliers.items():
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"`weight_decay_multipliers`: bad pattern {pattern!r}: {error}") from None
            if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) or multiplier < 0:
                raise ValueError(f"`weight_decay_multipliers[{pattern!r}]` must be a number >= 0, got {multiplier!r}")
        if multipliers and not self.weight_decay:
            raise ValueError(f"`weight_decay_multipliers` {multipliers} need a `weight_decay` > 0 to scale")
        self.weight_decay_multipliers = {pattern: float(m) for pattern, m in multipliers.items()}

    def weight_decay_multiplier(self, variable):
        """The multiplier of ``variable`` (1.0 when no pattern matches its path)."""
        path = getattr(variable, "path", None) or variable.name
        for pattern, multiplier in self.weight_decay_multipliers.items():
            if re.search(pattern, path):
                return multiplier
        return 1.0

    def _apply_weight_decay(self, variables):
        if self.weight_decay is None or not self.weight_decay_multipliers:
            return super()._apply_weight_decay(variables)
        groups = {}
        for variable in variables:
            groups.setdefault(self.weight_decay_multiplier(variable), []).append(variable)
        base = self.weight_decay
        try:
            # The backends read `self.weight_decay` while they build the update: one pass per
            # multiplier, each with its own constant.
            for multiplier, group in groups.items():
                if multiplier > 0:
                    self.weight_decay = base * multiplier
                    super()._apply_weight_decay(group)
        finally:
            self.weight_decay = base

    def get_config(self):
        return {**super().get_config(), "weight_decay_multipliers": dict(self.weight_decay_multipliers)}
