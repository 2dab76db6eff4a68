"""XLA: ``tf.function(jit_compile=True)`` outputs, gradients and state updates match eager."""

import keras
import tensorflow as tf

from kerasface.testing import _check_utils as utils


def check_xla(
    factory, inputs, call_kwargs=None, atol=1e-5, rtol=1e-5, repeats=2, gradient_atol=None, gradient_rtol=None
):
    """Checks that an XLA-compiled forward and backward pass match eager execution.

    Two instances with identical variables run ``repeats`` steps each, one eagerly and
    one inside ``tf.function(jit_compile=True)``. Each step computes the outputs and the
    gradients of ``sum(outputs * P)`` (P a fixed random array, so L2-normalised outputs
    still get non-zero gradients) w.r.t. the trainable variables. Outputs, gradients and
    every variable afterwards (BN statistics) must match. The second step reuses the
    compiled trace, which catches Python-side state frozen at trace time.

    Args:
        factory: zero-argument callable returning a fresh layer/model.
        inputs: concrete inputs.
        call_kwargs: call arguments, e.g. ``{"training": True}``. Random layers
            (Dropout) in training mode do not reproduce under XLA; check them with
            ``training=False``.
        atol, rtol: elementwise tolerance ``|xla - eager| <= atol + rtol * |eager|``.
        repeats: number of steps compared (>= 2 to catch stale traces).
        gradient_atol, gradient_rtol: tolerance of the gradients, default ``atol``/``rtol``.
            Training-mode BatchNormalization backward passes amplify float32 rounding
            through deep stacks, so deep backbones in training mode may need looser ones.

    Returns:
        dict with ``max_output_diff`` and ``max_gradient_diff``.

    Raises:
        AssertionError: when compilation fails or something differs (with the max difference).
    """
    utils.require_factory(factory, "check_xla")
    if repeats < 1:
        raise ValueError(f"check_xla: `repeats` must be >= 1, got {repeats}")
    gradient_atol = atol if gradient_atol is None else gradient_atol
    gradient_rtol = rtol if gradient_rtol is None else gradient_rtol
    inputs = utils.to_tensors(inputs)
    eager_obj = factory()
    check = f"XLA check ({type(eager_obj).__name__})"
    probes = utils.probe_targets(utils.call(eager_obj, inputs, call_kwargs))
    jit_obj = factory()
    utils.call(jit_obj, inputs, call_kwargs)
    utils.copy_state(eager_obj, jit_obj, check)

    def step(obj, x):
        with tf.GradientTape() as tape:
            outputs = utils.call(obj, x, call_kwargs)
            loss = utils.probe_loss(outputs, probes)
        return outputs, tape.gradient(loss, obj.trainable_variables)

    compiled_step = tf.function(lambda x: step(jit_obj, x), jit_compile=True)
    max_output_diff = max_gradient_diff = 0.0
    for index in range(repeats):
        eager_outputs, eager_grads = step(eager_obj, inputs)
        try:
            jit_outputs, jit_grads = compiled_step(inputs)
        except Exception as error:
            raise AssertionError(
                f"{check}: tf.function(jit_compile=True) failed to compile or run: {type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}"
            ) from error
        label = f"call {index + 1}"
        max_output_diff = max(
            max_output_diff,
            utils.assert_outputs_close(check, f"{label}: outputs", jit_outputs, eager_outputs, atol, rtol),
        )
        for variable, eager_grad, jit_grad in zip(eager_obj.trainable_variables, eager_grads, jit_grads):
            if (eager_grad is None) != (jit_grad is None):
                raise AssertionError(
                    f"{check}: {label}: gradient of {variable.path} is None in "
                    f"{'eager' if eager_grad is None else 'XLA'} mode only"
                )
            if eager_grad is not None:
                max_gradient_diff = max(
                    max_gradient_diff,
                    utils.assert_close(
                        check, f"{label}: gradient of {variable.path}",
                        keras.ops.convert_to_numpy(jit_grad), keras.ops.convert_to_numpy(eager_grad),
                        gradient_atol, gradient_rtol,
                    ),
                )
        for eager_var, jit_var in zip(eager_obj.variables, jit_obj.variables):
            utils.assert_close(
                check, f"{label}: variable {eager_var.path} after the call",
                keras.ops.convert_to_numpy(jit_var), keras.ops.convert_to_numpy(eager_var), atol, rtol,
            )
    return {"max_output_diff": max_output_diff, "max_gradient_diff": max_gradient_diff}
