"""SGD whose row-sparse gradients update only the rows they touch."""

import keras
import tensorflow as tf

from kerasface.training.multiplied_decay_sgd import MultipliedDecaySGD


def lazy_row_update(gradient, variable, velocity, learning_rate, momentum=0.0, decay=0.0, nesterov=False):
    """New values of the rows a row-sparse gradient touches: SGD with momentum and decoupled decay.

    Reads only those rows of ``variable`` and ``velocity`` (``tf.Variable`` s; ``velocity``
    None without momentum). Duplicate indices are summed first.

    Returns:
        ``(rows, new_weights, new_velocity)``; ``new_velocity`` is None without momentum.
    """
    rows, positions = tf.unique(tf.cast(gradient.indices, "int32"))
    values = tf.math.unsorted_segment_sum(tf.cast(gradient.values, variable.dtype), positions, tf.shape(rows)[0])
    learning_rate = tf.cast(learning_rate, variable.dtype)
    # tf.gather on the tf.Variable is a sparse read; reading it as a tensor would take the
    # whole (C, D) value and make the row update copy all of it (copy on write).
    weights = tf.gather(variable, rows)
    if decay:
        weights = weights - weights * tf.cast(decay, variable.dtype) * learning_rate
    if not momentum:
        return rows, weights - values * learning_rate, None
    momentum = tf.cast(momentum, variable.dtype)
    new_velocity = tf.gather(velocity, rows) * momentum - values * learning_rate
    step = new_velocity * momentum - values * learning_rate if nesterov else new_velocity
    return rows, weights + step, new_velocity


@keras.saving.register_keras_serializable(package="kerasface")
class LazySGD(MultipliedDecaySGD):
    """SGD with momentum and decoupled weight decay, lazy on row-sparse gradients.

    A gradient that arrives as ``tf.IndexedSlices`` (the gradient of a gather, as
    :class:`kerasface.heads.PartialFCHead`'s sampled class centres give) updates only the
    rows it names: those rows decay, their momentum rows are updated and the rows move;
    every other row and its momentum are neither read nor written (lazy momentum, the rule
    of LazyAdam and of insightface's first Partial FC). Duplicate row indices are summed
    first. Dense gradients get exactly ``keras.optimizers.SGD``'s update.

    Keras' SGD (and torch's SGD in insightface's Partial FC v2) densifies such a gradient:
    ``m = mu * m - lr * g`` and the decay run over all C rows each step, so unsampled
    centres keep drifting with stale momentum and each step reads and writes three (C, D)
    arrays. Here a step costs O(K * D) for the K sampled rows.

    For touched rows, with decay ``wd * multiplier``::

        w <- w - lr * wd * w;   m <- mu * m - lr * g;   w <- w + m   (nesterov: w + mu * m - lr * g)

    Args:
        **kwargs: ``MultipliedDecaySGD`` / ``keras.optimizers.SGD`` arguments
            (``learning_rate``, ``momentum``, ``nesterov``, ``weight_decay``,
            ``weight_decay_multipliers``, ...).
    """

    def apply(self, grads, trainable_variables=None):
        variables = self._trainable_variables if trainable_variables is None else list(trainable_variables)
        # Read by `_apply_weight_decay`, which Keras calls with the variables only.
        self._sparse_keys = {
            self._var_key(variable)
            for grad, variable in zip(grads, variables)
            if isinstance(grad, tf.IndexedSlices)
        }
        return super().apply(grads, trainable_variables)

    def _apply_weight_decay(self, variables):
        sparse = getattr(self, "_sparse_keys", set())
        # Sparse rows decay in `update_step`, only where they are touched.
        return super()._apply_weight_decay([v for v in variables if self._var_key(v) not in sparse])

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        decay = 0.0
        if self.weight_decay and self._use_weight_decay(variable):
            # The multiplier patterns match the Keras variable's path, as for the dense variables.
            decay = self.weight_decay * self.weight_decay_multiplier(self._trainable_variables[index])
        velocity = self.momentums[index] if self.momentum else None
        rows, weights, new_velocity = lazy_row_update(
            gradient, variable, None if velocity is None else velocity.value, learning_rate,
            momentum=self.momentum, decay=decay, nesterov=self.nesterov,
        )
        if velocity is not None:
            self.assign(velocity, tf.IndexedSlices(new_velocity, rows))
        self.assign(variable, tf.IndexedSlices(weights, rows))
