"""Sets a gradient reversal layer's lambda at every training step (DAIL's two stages)."""

import math

import keras

from kerasface.layers.all_layers import all_layers
from kerasface.layers.gradient_reversal import GradientReversal

RAMPS = ("step", "ganin")


class GradientReversalSchedule(keras.callbacks.Callback):
    """Schedules the reversal strength lambda of the model's ``GradientReversal`` layers.

    DAIL (Wang et al., ICPR 2020), Sec. III-C: stage 1 (eq. 9-10) trains the embedding on the
    classification loss alone while the dataset classifier learns on it (lambda = 0); from
    ``switch_step`` on, stage 2 (eq. 7-8) reverses the dataset loss into the embedding
    (paper: lambda = 0.1 from step 80k of 240k). ``ramp="ganin"`` instead raises lambda
    smoothly after the switch, ``strength * (2 / (1 + exp(-gamma p)) - 1)`` with ``p`` the
    progress from ``switch_step`` to ``total_steps`` (Ganin & Lempitsky, ICML 2015, Sec. 5.2.2).

    The step is read from the optimizer's iteration counter before every batch, so a
    resumed run (``BackupAndRestore``) lands in the right stage, and the value is assigned
    only when it changes. Logs ``grl_lambda`` at each epoch end (history, TensorBoard).

    Args:
        strength: lambda of stage 2 (the ramp's end value), >= 0.
        switch_step: first optimizer step of stage 2 (0 = reversal from the start).
        ramp: ``"step"`` (lambda jumps at the switch) or ``"ganin"``.
        total_steps: end of the Ganin ramp; required with ``ramp="ganin"``.
        gamma: steepness of the Ganin ramp (paper: 10).
        layers: the ``GradientReversal`` layers to drive; default: every one in the model.
    """

    def __init__(self, strength=0.1, switch_step=0, ramp="step", total_steps=None, gamma=10.0, layers=None):
        super().__init__()
        if isinstance(strength, bool) or not float(strength) >= 0.0:
            raise ValueError(f"`strength` must be >= 0, got {strength!r}")
        if isinstance(switch_step, bool) or int(switch_step) != switch_step or switch_step < 0:
            raise ValueError(f"`switch_step` must be an int >= 0, got {switch_step!r}")
        if ramp not in RAMPS:
            raise ValueError(f"`ramp` must be one of {RAMPS}, got {ramp!r}")
        if ramp == "ganin" and (total_steps is None or int(total_steps) <= int(switch_step)):
            raise ValueError(
                f"`ramp='ganin'` needs `total_steps` > `switch_step` ({switch_step}), got {total_steps!r}"
            )
        self.strength = float(strength)
        self.switch_step = int(switch_step)
        self.ramp = ramp
        self.total_steps = None if total_steps is None else int(total_steps)
        self.gamma = float(gamma)
        self.layers = None if layers is None else list(layers)
        self._targets = []
        self._current = None

    def value(self, step):
        """lambda at optimizer step ``step`` (0-based, the step about to run)."""
        if step < self.switch_step:
            return 0.0
        if self.ramp == "step":
            return self.strength
        progress = min((step - self.switch_step) / (self.total_steps - self.switch_step), 1.0)
        return self.strength * (2.0 / (1.0 + math.exp(-self.gamma * progress)) - 1.0)

    def on_train_begin(self, logs=None):
        self._targets = self.layers or [layer for layer in all_layers(self.model) if isinstance(layer, GradientReversal)]
        if not self._targets:
            raise ValueError(f"GradientReversalSchedule: model {self.model.name!r} has no GradientReversal layer")
        self._current = None

    def on_train_batch_begin(self, batch, logs=None):
        value = self.value(int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))
        if value != self._current:
            for layer in self._targets:
                layer.set_strength(value)
            self._current = value

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._current is not None:
            logs["grl_lambda"] = self._current

