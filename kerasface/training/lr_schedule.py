"""Learning-rate schedules of a recipe, expressed per optimizer step."""

import keras


def build_lr_schedule(config, steps_per_epoch, epochs):
    """A Keras schedule for ``OptimizerConfig`` over ``epochs * steps_per_epoch`` steps."""
    if steps_per_epoch < 1:
        raise ValueError(f"`steps_per_epoch` must be >= 1, got {steps_per_epoch}")
    total_steps = int(steps_per_epoch * epochs)
    if config.schedule == "cosine":
        warmup_steps = min(int(config.warmup_epochs * steps_per_epoch), max(total_steps - 1, 0))
        if warmup_steps == 0:
            return keras.optimizers.schedules.CosineDecay(config.lr, max(total_steps, 1))
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0,
            decay_steps=max(total_steps - warmup_steps, 1),
            warmup_target=config.lr,
            warmup_steps=warmup_steps,
        )
    if config.schedule == "piecewise":
        boundaries = [int(epoch * steps_per_epoch) for epoch in config.decay_epochs]
        if boundaries != sorted(boundaries) or len(set(boundaries)) != len(boundaries):
            raise ValueError(f"`decay_epochs` must be strictly increasing, got {config.decay_epochs}")
        values = [config.lr * config.decay_factor**i for i in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    raise ValueError(f"`schedule` must be 'cosine' or 'piecewise', got {config.schedule!r}")
