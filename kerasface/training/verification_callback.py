"""Evaluate verification sets during ``model.fit``: logs, TensorBoard scalars, best checkpoint."""

import json
import math
import os
import time
from pathlib import Path

import keras
import numpy as np

from kerasface.data.preprocessing import IMAGE_SIZE
from kerasface.evaluation.verification import evaluate_scores
from kerasface.evaluation.verification_set import VerificationSet

MODES = ("auto", "max", "min")
# Every metric the callback computes is better when larger.
_AUTO_MODE = "max"


class VerificationCallback(keras.callbacks.Callback):
    """Evaluates face-verification sets every N epochs or steps and keeps the best checkpoint.

    Each distinct image of a set is decoded once (at the first evaluation) and kept as uint8
    pixels; an evaluation embeds them with the model's embedding model, scores the pairs by
    cosine similarity and computes k-fold accuracy, ROC AUC and TAR@FAR with
    :func:`kerasface.evaluation.evaluate_scores`. The values go to:

    * the epoch ``logs`` (``val_<set>_accuracy``, ``val_<set>_auc``, ``val_<set>_tar@far=1e-3``,
      and ``val_mean_<metric>`` over sets when there are several), so ``History``,
      ``ModelCheckpoint`` and ``EarlyStopping`` placed *after* this callback can use them; the
      key of the selected metric is :attr:`monitor`;
    * TensorBoard scalars ``verification/<set>/<metric>`` at the global training step, when
      ``log_dir`` is given;
    * ``best_path`` (a ``.keras`` file) whenever the selected metric improves, with a sidecar
      ``<best_path stem>.json`` holding the value, epoch, step and every metric. A resumed run
      reads the sidecar first, so it only replaces the checkpoint with a better one.

    Args:
        sets: verification sets: specs for :meth:`VerificationSet.load` (``"lfw.bin"``,
            ``"val_pairs.txt:ROOT"``, ``"NAME=FILE:ROOT"``) or ``VerificationSet`` objects (one
            spec alone is accepted too). Loaded here, so a bad spec fails before training.
            Stored as the list of loaded ``VerificationSet`` objects.
        every_n_epochs: evaluate after every N-th epoch (epochs counted from the start of the
            run, resumed runs included). Default 1 unless ``every_n_steps`` is given.
        every_n_steps: evaluate every N training steps instead, counted by the optimizer's
            ``iterations`` (global across epochs and resumes). Exclusive with ``every_n_epochs``.
        metric: what selects the best checkpoint: ``"SET/NAME"`` for one set or ``"NAME"`` for
            the mean over all sets, where NAME is ``accuracy``, ``auc`` or ``tar@far=F`` for an
            F in ``fars``.
        mode: ``"auto"`` (``"max"``: every metric here is better when larger), ``"max"``, ``"min"``.
        best_path: ``.keras`` file for the best model, or None to keep no checkpoint.
        log_dir: folder for TensorBoard event files, or None.
        flip: flip test (embed each image and its mirror, fuse the two).
        batch_size: images per embedding call.
        fars: FAR targets for TAR@FAR.
        embedding_model: the model to embed with; default ``model.embedding_model`` when the
            trained model has one (``FaceRecognizer``), else the trained model itself. It maps
            float32 normalised images ``(B, 112, 112, 3)`` to ``(B, D)`` embeddings.
        verbose: 1 prints one line per set and evaluation and the checkpoint updates; 0 is quiet.
        print_fn: where lines go (default ``print``).
        evaluate_at_end: also evaluate the final weights when training ends off the cadence
            (e.g. 10 epochs evaluated every 3), so the last model is never left unmeasured.

    Attributes:
        monitor: the ``logs`` key of the selected metric (e.g. ``"val_lfw_accuracy"``).
        best: best value of the selected metric so far (from the sidecar on resume), or None.
        best_record: the sidecar content of the best checkpoint, or None.
        evaluations: one dict per evaluation of this object: ``epoch`` (1-based: the epoch it ran
            at the end of, or during in step mode), ``step`` (global), ``seconds`` and ``metrics``
            (the ``logs`` keys and values).
        results: ``{set name: VerificationResult}`` of the latest evaluation.
    """

    def __init__(self, sets, every_n_epochs=None, every_n_steps=None, metric="accuracy", mode="auto",
                 best_path=None, log_dir=None, flip=False, batch_size=64, fars=(1e-3,),
                 embedding_model=None, verbose=1, print_fn=print, evaluate_at_end=True):
        super().__init__()
        self.evaluate_at_end = evaluate_at_end
        if every_n_epochs is not None and every_n_steps is not None:
            raise ValueError(
                f"give `every_n_epochs` or `every_n_steps`, not both; got every_n_epochs={every_n_epochs}, "
                f"every_n_steps={every_n_steps}"
            )
        if every_n_steps is None and every_n_epochs is None:
            every_n_epochs = 1
        for name, value in (("every_n_epochs", every_n_epochs), ("every_n_steps", every_n_steps),
                            ("batch_size", batch_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"`{name}` must be an int >= 1, got {value!r}")
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")
        self.fars = tuple(float(far) for far in fars)
        for far in self.fars:
            if not 0.0 < far < 1.0:
                raise ValueError(f"`fars` must be in (0, 1), got {far}")
        self.sets = _load_sets(sets)
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.metric = metric
        self.mode = mode
        self.best_path = None if best_path is None else Path(best_path)
        if self.best_path is not None and self.best_path.suffix != ".keras":
            raise ValueError(f"`best_path` must end in .keras, got {best_path}")
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.flip = bool(flip)
        self.batch_size = batch_size
        self.embedding_model = embedding_model
        self.verbose = verbose
        self.print_fn = print_fn

        self.metric_names = ("accuracy", "auc", *(f"tar@far={far_label(far)}" for far in self.fars))
        self._selected_set, self._selected_name = _parse_metric(metric, self.sets, self.metric_names)
        self._check_measurable()
        # "NAME" is the mean over sets; with one set that is the set's own value and key.
        monitored_set = self._selected_set or ("mean" if len(self.sets) > 1 else self.sets[0].name)
        self.monitor = metric_key(monitored_set, self._selected_name)
        self._direction = _AUTO_MODE if mode == "auto" else mode
        self._better = (lambda a, b: a > b) if self._direction == "max" else (lambda a, b: a < b)
        self.best = None
        self.best_record = None
        self.evaluations = []
        self.results = {}
        self._embed = None
        self._writer = None
        self._epoch = 0
        self._previous_step = 0
        self._epoch_metrics = None
        self._batches_seen = 0
        if every_n_steps is not None:
            # Bound per instance: a callback that overrides on_train_batch_end turns off Keras's
            # asynchronous batch-end dispatch for the whole fit, which epoch mode does not need.
            self.on_train_batch_end = self._on_train_batch_end_steps

    @property
    def metric_label(self):
        """The selected metric, normalised: ``"lfw/accuracy"`` or ``"accuracy"`` (mean over sets)."""
        return f"{self._selected_set}/{self._selected_name}" if self._selected_set else self._selected_name

    @property
    def best_record_path(self):
        """The sidecar JSON of ``best_path`` (``best.keras`` -> ``best.json``), or None."""
        return None if self.best_path is None else self.best_path.with_suffix(".json")

    def set_model(self, model):
        if model is not self._model:
            self._embed = None
        super().set_model(model)

    def on_train_begin(self, logs=None):
        self._read_best_record()
        self._start_step = self._global_step()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_metrics = None
        if self.every_n_steps is not None:
            self._previous_step = self._global_step()

    def _on_train_batch_end_steps(self, batch, logs=None):
        self._batches_seen += 1
        step = self._global_step()
        # Crossing a multiple rather than landing on one: with steps_per_execution > 1 (or a
        # loss-scale step skipped under mixed precision) the step can jump past it.
        if step // self.every_n_steps > self._previous_step // self.every_n_steps:
            self._epoch_metrics = self._evaluate_and_record(self._epoch, step)
        self._previous_step = step

    def on_epoch_end(self, epoch, logs=None):
        if self.every_n_epochs is not None and (epoch + 1) % self.every_n_epochs == 0:
            self._epoch_metrics = self._evaluate_and_record(epoch, self._global_step())
        if self._epoch_metrics is not None and logs is not None:
            logs.update(self._epoch_metrics)

    def on_train_end(self, logs=None):
        step = self._global_step()
        last_step = self.evaluations[-1]["step"] if self.evaluations else None
        trained = step > getattr(self, "_start_step", step)
        if self.evaluate_at_end and trained and step != last_step:
            self._evaluate_and_record(self._epoch, step)
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def evaluate(self):
        """Evaluate every set now; returns ``{logs key: value}`` and fills :attr:`results`."""
        embed = self._embed_fn()
        from kerasface.evaluation.embed_images import embed_images

        metrics = {}
        results = {}
        for vset in self.sets:
            embeddings = embed_images(embed, vset.decoded(), batch_size=self.batch_size, flip=self.flip)
            scores = vset.pair_scores(embeddings)
            result = evaluate_scores(scores, vset.issame, vset.folds, self.fars, name=vset.name)
            results[vset.name] = result
            for name, value in _result_values(result, self.fars).items():
                metrics[metric_key(vset.name, name)] = value
        if len(self.sets) > 1:
            for name in self.metric_names:
                values = [metrics[metric_key(vset.name, name)] for vset in self.sets]
                metrics[metric_key("mean", name)] = float(np.mean(values))
        self.results = results
        return metrics

    def _evaluate_and_record(self, epoch, step):
        started = time.perf_counter()
        metrics = self.evaluate()
        seconds = time.perf_counter() - started
        self.evaluations.append({"epoch": epoch + 1, "step": step, "seconds": seconds, "metrics": metrics})
        self._print_results(epoch, step, seconds)
        self._write_summaries(metrics, step)
        self._maybe_save_best(metrics, epoch, step)
        return metrics

    def _embed_fn(self):
        if self._embed is None:
            import tensorflow as tf

            model = self.embedding_model
            if model is None and self.model is not None:
                model = getattr(self.model, "embedding_model", None)
                if model is None:
                    model = self.model
            if model is None:
                raise ValueError("VerificationCallback needs a model: pass `embedding_model` or use it in fit")

            # Traced once for any batch size. Under a distribution strategy it reads each
            # variable's primary copy (all copies are equal after a synchronised step) and runs
            # on one device; under mixed precision the embeddings come back as float32.
            @tf.function(input_signature=[tf.TensorSpec((None, IMAGE_SIZE, IMAGE_SIZE, 3), tf.float32)])
            def embed(images):
                return keras.ops.cast(model(images, training=False), "float32")

            self._embed = lambda batch: embed(batch).numpy()
        return self._embed

    def _global_step(self):
        optimizer = getattr(self.model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        if iterations is None:
            return self._batches_seen
        return int(keras.ops.convert_to_numpy(iterations))

    def _check_measurable(self):
        if not self._selected_name.startswith("tar@far="):
            return
        far = self.fars[self.metric_names.index(self._selected_name) - 2]
        for vset in self.sets:
            if self._selected_set not in (None, vset.name):
                continue
            impostors = int(np.count_nonzero(~vset.issame))
            if math.floor(far * impostors * (1 + 1e-9)) < 1:
                raise ValueError(
                    f"`metric` {self.metric!r}: set {vset.name!r} ({vset.source}) has {impostors} impostor "
                    f"pairs, too few to measure TAR at FAR {far:g} (needs >= {math.ceil(1 / far - 1e-9)})"
                )

    def _print_results(self, epoch, step, seconds):
        if not self.verbose or self.print_fn is None:
            return
        for name, result in self.results.items():
            parts = [f"accuracy {100 * result.accuracy:.2f}% +- {100 * result.accuracy_std:.2f}",
                     f"AUC {result.auc:.4f}"]
            for far, point in result.tar_at_far.items():
                value = "n/a" if point.reason else f"{100 * point.tar:.2f}%"
                parts.append(f"TAR@FAR={far_label(far)} {value}")
            self.print_fn(f"verification {name} (epoch {epoch + 1}, step {step}): {', '.join(parts)}")
        self.print_fn(f"verification took {seconds:.1f} s")

    def _write_summaries(self, metrics, step):
        if self.log_dir is None:
            return
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.log_dir))
        names = [vset.name for vset in self.sets] + (["mean"] if len(self.sets) > 1 else [])
        with self._writer.as_default():
            for set_name in names:
                for name in self.metric_names:
                    value = metrics[metric_key(set_name, name)]
                    if not math.isnan(value):
                        tf.summary.scalar(f"verification/{set_name}/{name}", value, step=step)
        self._writer.flush()

    def _maybe_save_best(self, metrics, epoch, step):
        value = metrics[self.monitor]
        if math.isnan(value) or (self.best is not None and not self._better(value, self.best)):
            return
        previous = self.best
        self.best = value
        self.best_record = {
            "metric": self.metric_label,
            "monitor": self.monitor,
            "mode": self._direction,
            "flip": self.flip,
            "sets": self._set_sources(),
            "value": value,
            "epoch": epoch + 1,
            "step": step,
            "path": None if self.best_path is None else self.best_path.name,
            "metrics": {key: _json_float(v) for key, v in metrics.items()},
        }
        if self.best_path is None:
            return
        self.best_path.parent.mkdir(parents=True, exist_ok=True)
        # Written under another name and renamed: an interrupted save never replaces a good
        # checkpoint with a broken one. The model goes first, so a crash in between leaves a
        # sidecar that understates the checkpoint, never one that overstates it.
        partial = self.best_path.with_name(f".{self.best_path.stem}.partial-{os.getpid()}.keras")
        self.model.save(partial)
        os.replace(partial, self.best_path)
        partial_record = self.best_record_path.with_name(f".{self.best_record_path.name}.partial-{os.getpid()}")
        partial_record.write_text(json.dumps(self.best_record, indent=2))
        os.replace(partial_record, self.best_record_path)
        if self.verbose and self.print_fn is not None:
            was = "" if previous is None else f" (was {previous:.4f})"
            self.print_fn(f"verification {self.metric_label} = {value:.4f}{was}: saved {self.best_path}")

    def _read_best_record(self):
        path = self.best_record_path
        if path is None or not path.is_file():
            return
        if not self.best_path.is_file():
            self._say(f"{path}: its checkpoint {self.best_path} is missing; the next evaluation replaces both")
            return
        try:
            record = json.loads(path.read_text())
            value = float(record["value"])
            metric = record["metric"]
        except (ValueError, KeyError, TypeError) as error:
            self._say(f"{path}: unreadable best-checkpoint record ({error}); the next evaluation replaces it")
            return
        # Values are comparable only for the same quantity on the same sets, embedded the same way.
        recorded = (record.get("monitor"), record.get("mode"), record.get("flip"), record.get("sets"))
        current = (self.monitor, self._direction, self.flip, self._set_sources())
        if recorded != current:
            self._say(
                f"{path}: the best checkpoint was chosen by {metric!r} (mode {record.get('mode')}, flip "
                f"{record.get('flip')}, sets {record.get('sets')}), this run selects by {self.metric_label!r} "
                f"(mode {self._direction}, flip {self.flip}, sets {self._set_sources()}); the next evaluation "
                "replaces it"
            )
            return
        if self.best is None or self._better(value, self.best):
            self.best = value
            self.best_record = record

    def _set_sources(self):
        return [f"{os.path.abspath(vset.source)}:{vset.root}" if vset.root else os.path.abspath(vset.source)
                for vset in self.sets]

    def _say(self, line):
        if self.print_fn is not None:
            self.print_fn(line)


def metric_key(set_name, name):
    """The ``logs`` key of metric ``name`` on set ``set_name`` (``"mean"`` for the mean over sets)."""
    return f"val_{set_name}_{name}"


def far_label(far):
    """``1e-3`` for 0.001: the short scientific form used in metric names."""
    return np.format_float_scientific(float(far), trim="-", exp_digits=1)


def _load_sets(sets):
    if isinstance(sets, (str, os.PathLike, VerificationSet)):
        sets = [sets]
    loaded = []
    for spec in sets:
        if isinstance(spec, VerificationSet):
            loaded.append(spec)
            continue
        try:
            loaded.append(VerificationSet.load(spec))
        except (OSError, ValueError) as error:
            raise type(error)(f"VerificationCallback: cannot load verification set {spec!r}: {error}") from error
    if not loaded:
        raise ValueError("VerificationCallback: `sets` is empty; give at least one verification set")
    names = [vset.name for vset in loaded]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(
            f"VerificationCallback: several sets are named {duplicates}; name them apart with NAME=SPEC, "
            f"e.g. 'lfw=/data/lfw.bin'"
        )
    if len(loaded) > 1 and "mean" in names:
        raise ValueError("VerificationCallback: 'mean' names the mean over sets; rename that set with NAME=SPEC")
    return loaded


def _parse_metric(metric, sets, metric_names):
    """``"SET/NAME"`` or ``"NAME"`` -> ``(set name or None, canonical NAME)``."""
    set_names = [vset.name for vset in sets]
    choices = list(metric_names) + [f"{set_name}/{name}" for set_name in set_names for name in metric_names]
    if not isinstance(metric, str):
        raise ValueError(f"`metric` must be a string, one of {choices}; got {metric!r}")
    set_name, _, name = metric.strip().rpartition("/")
    canonical = _canonical_metric_name(name, metric_names)
    if canonical is None or (set_name and set_name not in set_names):
        raise ValueError(f"`metric` {metric!r} is not one of {choices}")
    return set_name or None, canonical


def _canonical_metric_name(name, metric_names):
    name = name.strip().lower().replace(" ", "")
    if name in metric_names:
        return name
    prefix = "tar@far="
    if not name.startswith(prefix):
        return None
    try:
        far = float(name[len(prefix):])
    except ValueError:
        return None
    for candidate in metric_names:
        if candidate.startswith(prefix) and math.isclose(far, float(candidate[len(prefix):]), rel_tol=1e-9):
            return candidate
    return None


def _result_values(result, fars):
    values = {"accuracy": float(result.accuracy), "auc": float(result.auc)}
    for far in fars:
        values[f"tar@far={far_label(far)}"] = float(result.tar_at_far[far].tar)
    return values


def _json_float(value):
    value = float(value)
    return None if math.isnan(value) else value
