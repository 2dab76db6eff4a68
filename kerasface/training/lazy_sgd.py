"""SGD whose row-sparse gradients update only the rows they touch."""

import keras
import tensorflow as tf

from kerasface.training.multiplied_decay_sgd import MultipliedDecaySGD


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
        rows, positions = tf.unique(tf.cast(gradient.indices, "int32"))
        values = tf.math.unsorted_segment_sum(tf.cast(gradient.values, variable.dtype), positions, tf.shape(rows)[0])
        learning_rate = tf.cast(learning_rate, variable.dtype)
        weights = tf.gather(variable, rows)
        if self.weight_decay and self._use_weight_decay(variable):
            # The multiplier patterns match the Keras variable's path, as for the dense variables.
            decay = self.weight_decay * self.weight_decay_multiplier(
                self._trainable_variables[self._get_variable_index(variable)]
            )
            weights = weights - weights * tf.cast(decay, variable.dtype) * learning_rate
        if self.momentum:
            momentum = tf.cast(self.momentum, variable.dtype)
            velocity = self.momentums[self._get_variable_index(variable)]
            # Gather from the tf.Variable (a sparse read): reading the Keras variable as a tensor
            # would take the whole (C, D) value and make the row update copy all of it.
            new_velocity = tf.gather(velocity.value, rows) * momentum - values * learning_rate
            self.assign(velocity, tf.IndexedSlices(new_velocity, rows))
            step = new_velocity * momentum - values * learning_rate if self.nesterov else new_velocity
        else:
            step = -values * learning_rate
        self.assign(variable, tf.IndexedSlices(weights + step, rows))
