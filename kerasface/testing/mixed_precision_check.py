"""Mixed precision: float32 variables, declared output dtype, finite outputs close to float32."""

import keras
import numpy as np

from kerasface.testing import _check_utils as utils


def check_mixed_precision(
    factory, inputs, policy="mixed_float16", output_dtype=None, call_kwargs=None, atol=1e-2, rtol=1e-2
):
    """Checks a layer/model built under a mixed-precision dtype policy.

    Builds one instance under ``float32`` and one under ``policy`` (the global policy is
    restored afterwards, also on failure), copies the float32 instance's variables into
    the mixed one and checks: float variables stay float32; output dtypes; outputs
    finite; outputs close to the float32 instance's.

    Args:
        factory: zero-argument callable returning a fresh layer/model.
        inputs: concrete inputs (float32; the layer autocasts them).
        policy: the mixed policy, ``"mixed_float16"`` or ``"mixed_bfloat16"``.
        output_dtype: required dtype of every float output. None requires float32 when
            the object declares a float32 policy (heads do), else accepts the policy's
            compute dtype or float32. Embedding models should pass ``"float32"``.
        call_kwargs: call arguments, e.g. ``{"training": True}``.
        atol, rtol: tolerance against the float32 outputs, elementwise
            ``|mixed - fp32| <= atol + rtol * |fp32|``.

    Returns:
        dict with ``output_dtypes`` and ``max_output_diff``.

    Raises:
        AssertionError: naming the failed property, or the max difference.
    """
    utils.require_factory(factory, "check_mixed_precision")
    inputs = utils.to_tensors(inputs)
    previous = keras.config.dtype_policy()
    try:
        # Sublayers may be created in build() or call(), so the policy stays set throughout.
        keras.config.set_dtype_policy("float32")
        reference = factory()
        utils.call(reference, inputs, call_kwargs)
        keras.config.set_dtype_policy(policy)
        compute_dtype = keras.config.dtype_policy().compute_dtype
        mixed = factory()
        utils.call(mixed, inputs, call_kwargs)
        check = f"mixed precision check ({type(mixed).__name__}, {policy})"

        wrong_variables = [
            f"{v.path} ({v.dtype})"
            for v in mixed.weights
            if keras.backend.is_float_dtype(v.dtype) and keras.backend.standardize_dtype(v.dtype) != "float32"
        ]
        if wrong_variables:
            raise AssertionError(f"{check}: variables must stay float32 under {policy}, got {wrong_variables}")

        utils.copy_state(reference, mixed, check)
        expected = utils.call(reference, inputs, call_kwargs)
        actual = utils.call(mixed, inputs, call_kwargs)
    finally:
        keras.config.set_dtype_policy(previous)

    declared = mixed.dtype_policy.compute_dtype
    if output_dtype is not None:
        allowed = {keras.backend.standardize_dtype(output_dtype)}
        reason = f"output_dtype={output_dtype!r} was requested"
    elif declared == "float32" and compute_dtype != "float32":
        allowed = {"float32"}
        reason = f"the object declares the float32 policy {mixed.dtype_policy.name!r}"
    else:
        allowed = {compute_dtype, "float32"}
        reason = f"the policy computes in {compute_dtype}"
    output_dtypes = []
    for index, leaf in enumerate(keras.tree.flatten(actual)):
        dtype = keras.backend.standardize_dtype(leaf.dtype)
        output_dtypes.append(dtype)
        if keras.backend.is_float_dtype(dtype) and dtype not in allowed:
            raise AssertionError(
                f"{check}: output {index} is {dtype}, expected {' or '.join(sorted(allowed))} because {reason}"
            )
        values = np.asarray(keras.ops.convert_to_numpy(leaf))
        if keras.backend.is_float_dtype(dtype) and not np.all(np.isfinite(values)):
            raise AssertionError(
                f"{check}: output {index} has {int(np.sum(~np.isfinite(values)))} non-finite values "
                f"(float16 overflow?)"
            )
    max_diff = utils.assert_outputs_close(check, "outputs vs float32", actual, expected, atol, rtol)
    return {"output_dtypes": output_dtypes, "max_output_diff": max_diff}
