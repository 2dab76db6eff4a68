"""MirroredStrategy over two devices: forward pass and one training step match one device."""

import keras
import numpy as np
import tensorflow as tf

from kerasface.testing import _check_utils as utils

_STRATEGIES = {}
# Collective keys of checks' strategies start here, far from the 1 + 0 every other
# MirroredStrategy in the process uses.
_COLLECTIVE_KEY_BASE = 7_000_000


def check_mirrored(
    factory,
    inputs,
    targets=None,
    loss=None,
    call_kwargs=None,
    learning_rate=0.1,
    atol=1e-5,
    rtol=1e-5,
    devices=None,
):
    """Checks that a layer/model gives the same results replicated over devices as on one.

    (a) Forward: an instance created in ``strategy.scope()`` with the variables of a
    single-device instance runs on the global batch split across replicas (replica i
    gets the i-th contiguous slice); the concatenated outputs must equal the
    single-device outputs. (b) Training: the object (a bare layer wrapped into a
    functional model) is compiled with ``SGD(learning_rate)`` and ``fit`` for one step
    on the same global batch with and without the strategy, from identical variables;
    every weight afterwards (BN statistics included) and the loss must match, and every
    replica's copy must agree. Training-mode batch statistics are per replica unless BN
    is ``synchronized=True``, which this check is meant to catch.

    Args:
        factory: zero-argument callable returning a fresh layer/model.
        inputs: the global batch; its size must divide evenly across the replicas.
        targets: ``y`` for the training step. Default: the labels for head-like inputs
            ``[embeddings, int labels (B,)]``, else a fixed random array shaped like the
            output (zeros would give L2-normalised outputs zero gradients).
        loss: loss of the training step. Default: sparse categorical crossentropy from
            logits for head-like inputs, else mean squared error.
        call_kwargs: call arguments of the forward check (a), e.g. ``{"training": True}``;
            ``fit`` always runs in training mode.
        learning_rate: SGD step, large enough that every weight visibly moves.
        atol, rtol: elementwise tolerance ``|mirrored - single| <= atol + rtol * |single|``.
        devices: the strategy's devices; default the first two logical CPUs (the test
            suite's conftest splits the CPU in two). Skips the calling test when fewer
            than two exist.

    Returns:
        dict with ``max_output_diff``, ``max_weight_diff`` and ``loss`` (single device).

    Raises:
        AssertionError: naming the failed part, the quantity and the max difference.
        ValueError: when the batch does not split evenly across the replicas.
    """
    utils.require_factory(factory, "check_mirrored")
    devices = _resolve_devices(devices)
    inputs = utils.to_tensors(inputs)
    num_replicas = len(devices)
    batch_size = int(keras.tree.flatten(inputs)[0].shape[0])
    if batch_size % num_replicas:
        raise ValueError(
            f"check_mirrored: the global batch of {batch_size} does not split evenly over {num_replicas} replicas"
        )
    strategy = mirrored_strategy(devices)
    result = _check_forward(factory, inputs, call_kwargs, strategy, atol, rtol)
    result.update(_check_training_step(factory, inputs, targets, loss, learning_rate, strategy, atol, rtol))
    return result


def mirrored_strategy(devices=None):
    """One cached ``tf.distribute.MirroredStrategy`` per device list, safe to reuse across tests.

    Every MirroredStrategy starts its collective group and instance keys at the same
    numbers, so two strategies over the same devices in one process make the collective
    runtime reject the second one's all-reduces ("Shape mismatch in the collective
    instance 100"). Tests therefore share this one, whose keys are also offset from
    those of any strategy created elsewhere.

    Args:
        devices: device names; default the first two logical CPUs (skips the calling
            test when fewer exist).

    Returns:
        the strategy.
    """
    devices = tuple(_resolve_devices(devices))
    if devices not in _STRATEGIES:
        strategy_class = tf.distribute.MirroredStrategy
        # `_collective_key_base` is TensorFlow's own hook for tests that build several strategies.
        previous = strategy_class._collective_key_base
        strategy_class._collective_key_base = _COLLECTIVE_KEY_BASE + 10_000 * len(_STRATEGIES)
        try:
            _STRATEGIES[devices] = strategy_class(list(devices))
        finally:
            strategy_class._collective_key_base = previous
    return _STRATEGIES[devices]


def default_devices():
    """The first two logical CPUs, or fewer when the CPU is not split."""
    return [device.name for device in tf.config.list_logical_devices("CPU")][:2]


def _resolve_devices(devices):
    if devices is None:
        cpus = default_devices()
        if len(cpus) < 2:
            import pytest

            pytest.skip(
                f"check_mirrored needs 2 logical CPUs, found {len(cpus)}; split the CPU with "
                "tf.config.set_logical_device_configuration before TensorFlow starts (tests/conftest.py does)"
            )
        return cpus
    if len(devices) < 2:
        raise ValueError(f"check_mirrored needs at least 2 devices, got {list(devices)}")
    return list(devices)


def _check_forward(factory, inputs, call_kwargs, strategy, atol, rtol):
    reference = factory()
    check = f"MirroredStrategy check ({type(reference).__name__}), forward"
    utils.call(reference, inputs, call_kwargs)
    with strategy.scope():
        replicated = factory()
        # Built in cross-replica context on the whole batch; the variables are overwritten below.
        utils.call(replicated, inputs, call_kwargs)
    utils.copy_state(reference, replicated, check)
    expected = utils.call(reference, inputs, call_kwargs)

    per_replica = int(keras.tree.flatten(inputs)[0].shape[0]) // strategy.num_replicas_in_sync

    def replica_slice(context):
        start = context.replica_id_in_sync_group * per_replica
        return keras.tree.map_structure(lambda tensor: tensor[start : start + per_replica], inputs)

    distributed_inputs = strategy.experimental_distribute_values_from_function(replica_slice)

    @tf.function
    def forward(x):
        return strategy.run(lambda replica_x: utils.call(replicated, replica_x, call_kwargs), args=(x,))

    per_replica_outputs = forward(distributed_inputs)
    gathered = tf.nest.map_structure(
        lambda value: np.concatenate(
            [keras.ops.convert_to_numpy(part) for part in strategy.experimental_local_results(value)], axis=0
        ),
        per_replica_outputs,
    )
    max_diff = utils.assert_outputs_close(
        check, "outputs concatenated over replicas vs one device", gathered, expected, atol, rtol
    )
    return {"max_output_diff": max_diff}


def _check_training_step(factory, inputs, targets, loss, learning_rate, strategy, atol, rtol):
    single_obj = factory()
    check = f"MirroredStrategy check ({type(single_obj).__name__}), training step"
    single_outputs = utils.call(single_obj, inputs)
    single_model = utils.wrap_in_model(single_obj, inputs)
    if not single_model.trainable_weights:
        return {"max_weight_diff": None, "loss": None}

    labels = utils.head_labels(inputs)
    if loss is None:
        loss = "sparse_categorical_crossentropy_from_logits" if labels is not None else "mse"
    if targets is None:
        if labels is not None and loss == "sparse_categorical_crossentropy_from_logits":
            targets = labels
        else:
            probes = utils.probe_targets(single_outputs)
            if any(probe is None for probe in probes):
                raise ValueError("check_mirrored: pass `targets` and `loss` for models with non-float outputs")
            targets = probes[0] if len(probes) == 1 else probes
    batch_size = int(keras.tree.flatten(inputs)[0].shape[0])
    x = keras.tree.map_structure(keras.ops.convert_to_numpy, inputs)
    y = keras.tree.map_structure(lambda value: np.asarray(keras.ops.convert_to_numpy(value)), targets)

    def compile_and_fit(model):
        model_loss = (
            keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            if loss == "sparse_categorical_crossentropy_from_logits"
            else loss
        )
        # XLA has its own check; here it would only add compile time.
        model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss=model_loss, jit_compile=False)
        history = model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
        return history.history["loss"][0]

    with strategy.scope():
        mirrored_obj = factory()
        utils.call(mirrored_obj, inputs)
        mirrored_model = utils.wrap_in_model(mirrored_obj, inputs)
    utils.copy_state(single_model, mirrored_model, check)

    initial = [keras.ops.convert_to_numpy(v) for v in single_model.trainable_weights]
    single_loss = compile_and_fit(single_model)
    if all(
        np.array_equal(before, keras.ops.convert_to_numpy(after))
        for before, after in zip(initial, single_model.trainable_weights)
    ):
        raise AssertionError(
            f"{check}: one SGD step changed no trainable weight, so the comparison would prove nothing; "
            "pass `targets`/`loss` whose gradients are non-zero"
        )
    with strategy.scope():
        mirrored_loss = compile_and_fit(mirrored_model)

    max_diff = 0.0
    for single_var, mirrored_var in zip(single_model.weights, mirrored_model.weights):
        expected = keras.ops.convert_to_numpy(single_var)
        for replica, value in enumerate(strategy.experimental_local_results(mirrored_var.value)):
            max_diff = max(
                max_diff,
                utils.assert_close(
                    check, f"weight {single_var.path} after one step (replica {replica})",
                    keras.ops.convert_to_numpy(value), expected, atol, rtol,
                ),
            )
    utils.assert_close(check, "loss", mirrored_loss, single_loss, atol, rtol)
    return {"max_weight_diff": max_diff, "loss": float(single_loss)}
