"""Base class of the samplers that decide which records make up each batch of an epoch."""

import tensorflow as tf


class Sampler:
    """Which records form each global batch of one epoch (subclasses implement the policy).

    The pipeline asks for one epoch at a time with that epoch's seed, so a run is the same
    under the same seed, epoch after epoch, on every worker: each worker slices its part out
    of the same global batches, which makes the shards disjoint by construction.

    Call arguments (:meth:`epoch_batches`):
        source: the :class:`kerasface.data.RecordSource`.
        batch_size: the global batch size.
        seed: int64 (2,) tensor, this epoch's seed.
        drop_remainder: leave out a last batch smaller than ``batch_size``.

    Returns:
        a ``tf.data.Dataset`` of int64 ``(batch_size,)`` record-index vectors (the last may be
        shorter when ``drop_remainder`` is False).
    """

    # True when a batch's composition matters (PK): the pipeline then decodes each batch on
    # its own, so a record that fails cannot shift the records of the next batches.
    whole_batches = False

    def check(self, source, batch_size, num_shards=1):
        """Raise ``ValueError`` when this sampler cannot make ``batch_size`` batches of ``source``."""

    def epoch_batches(self, source, batch_size, seed, drop_remainder):
        raise NotImplementedError

    def steps_per_epoch(self, source, batch_size, drop_remainder):
        n = source.num_records
        return n // batch_size if drop_remainder else -(-n // batch_size)

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def batches_of(indices, batch_size, drop_remainder):
    """Dataset of consecutive ``batch_size`` slices of the 1-D tensor ``indices``."""
    return tf.data.Dataset.from_tensor_slices(indices).batch(
        batch_size, drop_remainder=drop_remainder
    )


def get_sampler(spec):
    """A :class:`Sampler` from an instance or a string.

    Strings: ``"shuffle"`` (default), ``"sequential"``, ``"weighted"`` (datasets of a
    combined source drawn by its weights), ``"pk:PxK"`` (P identities x K images) or
    ``"pk:K"`` (K images per identity, P = batch size / K).
    """
    from kerasface.data.dataset_weighted_sampler import DatasetWeightedSampler
    from kerasface.data.pk_sampler import PKSampler
    from kerasface.data.shuffle_sampler import ShuffleSampler

    if spec is None:
        return ShuffleSampler()
    if isinstance(spec, Sampler):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"`sampler` must be a Sampler or a string, got {type(spec).__name__}")
    if spec == "shuffle":
        return ShuffleSampler()
    if spec == "sequential":
        return ShuffleSampler(shuffle=False)
    if spec == "weighted":
        return DatasetWeightedSampler()
    if spec.startswith("pk:") and spec[3:].isdigit():
        return PKSampler(None, int(spec[3:]))
    if spec.startswith("pk:"):
        p, sep, k = spec[3:].partition("x")
        if not sep or not p.isdigit() or not k.isdigit():
            raise ValueError(f"`sampler` 'pk:PxK' needs two integers, e.g. 'pk:32x4'; got {spec!r}")
        return PKSampler(int(p), int(k))
    raise ValueError(
        f"unknown sampler {spec!r}; expected 'shuffle', 'sequential', 'weighted', 'pk:PxK' or 'pk:K'"
    )
