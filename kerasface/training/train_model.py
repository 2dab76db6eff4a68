"""``model.fit`` of a recipe: data, model, optimizer, checkpoints with resume, logs."""

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import keras
import tensorflow as tf  # tf.distribute: Keras 3 has no multi-worker API

from kerasface import backbones, heads
from kerasface.data import BadRecordReport, FacePipeline, FolderSource, combine, open_source
from kerasface.heads.dataset_aware_head import DatasetAwareHead
from kerasface.layers.dataset_classifier import DatasetClassifier
from kerasface.models.dail_recognizer import DAILRecognizer
from kerasface.models.face_recognizer import FaceRecognizer
from kerasface.models.latse_recognizer import LATSERecognizer
from kerasface.training.gradient_reversal_schedule import GradientReversalSchedule
from kerasface.training.chief_backup_and_restore import ChiefBackupAndRestore
from kerasface.training.lr_schedule import build_lr_schedule
from kerasface.training.strategy import make_strategy, worker_cluster
from kerasface.training.throughput_logger import ThroughputLogger
from kerasface.training.verification_callback import VerificationCallback

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
LOSSES = ("crossentropy", "class_balanced")


@dataclasses.dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        model: the trained ``FaceRecognizer``.
        out_dir: the run directory (``model.keras``, ``embedding.keras``, ``label_map.json``,
            ``checkpoints/``, ``backup/``, ``logs/``, ``summary.json``).
        history: per-epoch metrics of this invocation (a resumed run holds only its own epochs).
        images_per_second: median training throughput over the epochs of this invocation.
        bad_records: files skipped because they could not be read, ``{path: (times, reason)}``.
    """

    model: object
    out_dir: Path
    history: dict
    images_per_second: float
    bad_records: dict
    initial_epoch: int


def build_face_recognizer(recipe, num_classes, dataset_num_classes=None, teacher_size=None):
    """The ``FaceRecognizer`` a recipe describes, for ``num_classes`` identities.

    With ``recipe.distill.teacher`` set it is a :class:`kerasface.models.Distiller` whose
    teacher gives ``teacher_size``-d embeddings (None: the student's size).

    With ``dataset_num_classes`` listing two or more datasets (their label ranges, in
    order), ``recipe.dail`` applies: the head is wrapped in a ``DatasetAwareHead`` and/or the
    model is a :class:`DAILRecognizer` with a dataset classifier behind a gradient reversal
    layer (lambda starts at 0; :class:`GradientReversalSchedule` raises it).
    """
    head_kwargs = {"num_classes": num_classes, **recipe.head.kwargs}
    if recipe.head.scale is not None:
        head_kwargs["scale"] = recipe.head.scale
    if recipe.head.margin is not None:
        head_kwargs["margin"] = recipe.head.margin
    backbone = backbones.get(
        recipe.model.backbone, embedding_size=recipe.model.embedding_size, **recipe.model.backbone_kwargs
    )
    if recipe.model.budget:
        check_budget(backbone, recipe)
    head = heads.get(recipe.head.name, **head_kwargs)
    name = f"{recipe.model.backbone}_{recipe.head.name}"
    dail = recipe.dail
    if recipe.head.sample_rate is not None or recipe.head.sharded:
        plain = (dataset_num_classes is None or len(dataset_num_classes) < 2) and not (
            recipe.distill.enabled or recipe.latse.enabled
        )
        if not plain:
            raise ValueError(
                f"`head.sample_rate` / `head.sharded` (Partial FC, sharded centres) train a plain margin-head "
                "model; they do not combine with several datasets (DAIL), recipe.latse or recipe.distill"
            )
        if recipe.train.loss != "crossentropy":
            raise ValueError(
                f"`head.sample_rate` / `head.sharded` (Partial FC, sharded centres) need "
                f"train.loss=crossentropy, got {recipe.train.loss!r}"
            )
        if recipe.head.sharded:
            head = heads.ShardedHead(head, sample_rate=recipe.head.sample_rate or 1.0, seed=recipe.train.seed)
            name = f"{name}_sharded"
        else:
            head = heads.PartialFCHead(head, sample_rate=recipe.head.sample_rate, seed=recipe.train.seed)
            name = f"{name}_pfc"
    if dataset_num_classes is not None and len(dataset_num_classes) > 1:
        if dail.dataset_aware:
            head = DatasetAwareHead(
                head,
                dataset_num_classes=list(dataset_num_classes),
                crossing_dropout_p=dail.crossing_dropout_p,
                seed=recipe.train.seed,
            )
        if dail.dataset_classifier:
            model = DAILRecognizer(
                backbone,
                head,
                dataset_num_classes=list(dataset_num_classes),
                dataset_classifier=DatasetClassifier(
                    len(dataset_num_classes), hidden_units=dail.classifier_units, name="dataset_classifier"
                ),
                name=f"{name}_dail",
            )
            model.build((None, 112, 112, 3))
            return model
    elif dail.gradient_reversal > 0:
        raise ValueError(
            f"`dail.gradient_reversal={dail.gradient_reversal}` needs two or more datasets "
            "(repeat --data, or data.root=(A, B)); got one"
        )
    if recipe.distill.enabled:
        if dataset_num_classes is not None and len(dataset_num_classes) > 1:
            raise ValueError("`recipe.distill` trains on one dataset; got several")
        if recipe.latse.enabled:
            raise ValueError("`recipe.distill` and `recipe.latse` cannot be combined in one run")
        from kerasface.models.distiller import Distiller

        model = Distiller(
            backbone,
            head if recipe.distill.margin_weight > 0 else None,
            teacher_size=teacher_size,
            flip=_flip_probability(recipe),
            seed=recipe.train.seed,
            name=f"{recipe.model.backbone}_distilled",
        )
        model.build((None, 112, 112, 3))
        return model
    if recipe.latse.enabled:
        if dataset_num_classes is not None and len(dataset_num_classes) > 1:
            raise ValueError("`recipe.latse` (decoder or teacher) trains on one dataset; got several")
        model = _latse_recognizer(recipe, backbone, head, num_classes, name)
        model.build((None, 112, 112, 3))
        return model
    model = FaceRecognizer(backbone, head, name=name)
    model.build((None, 112, 112, 3))
    return model


def check_budget(backbone, recipe):
    """Raise when the backbone exceeds ``recipe.model.budget`` (counted at batch 1)."""
    from kerasface.budget.budget_check import check

    report = check(backbone, input_shape=(112, 112, 3), **recipe.model.budget)
    if not report.within_budget:
        raise ValueError(
            f"recipe {recipe.name}: backbone {recipe.model.backbone} {recipe.model.backbone_kwargs or ''} is over "
            f"its budget {recipe.model.budget}: {'; '.join(report.violations)}"
        )
    return report


def _flip_probability(recipe):
    from kerasface.data.face_augmentation import FaceAugmentation

    if not recipe.data.augment:
        return 0.0
    return float(FaceAugmentation.from_string(recipe.data.augmentation).flip)


def _batch_augmentation(recipe):
    """The pipeline's augmentation: the recipe's, less the flip when a Distiller flips in its step."""
    if not recipe.data.augment:
        return None
    if not recipe.distill.enabled:
        return recipe.data.augmentation
    from kerasface.data.face_augmentation import FaceAugmentation

    augmentation = FaceAugmentation.from_string(recipe.data.augmentation)
    config = dict(augmentation.get_config(), flip=0.0)
    augmentation = FaceAugmentation.from_config(config)
    return augmentation if augmentation.enabled_ops else None


def _prepare_teacher(recipe, source, out_dir, print_fn):
    """(record_features for the pipeline, the teacher's embedding size, the teacher run per batch)."""
    from kerasface.training.teacher_embeddings import precompute_teacher_embeddings
    from kerasface.training.teacher_filter import open_teacher

    distill = recipe.distill
    if distill.precompute:
        cached = precompute_teacher_embeddings(
            distill.teacher,
            source,
            distill.cache_dir or out_dir / "teacher_embeddings",
            mirror=_flip_probability(recipe) > 0,
            print_fn=print_fn,
            **distill.teacher_kwargs,
        )
        return {"teacher": cached.embeddings}, cached.embedding_size, None
    embed, _ = open_teacher(distill.teacher, dict(distill.teacher_kwargs))
    size = embed.output_shape[-1] if isinstance(embed, keras.Model) else embed.embedding_size
    if recipe.train.jit_compile and not isinstance(embed, keras.Model):
        raise ValueError(
            f"teacher {distill.teacher} runs outside TensorFlow (tf.numpy_function), which XLA cannot "
            "compile: set train.jit_compile=False, distill.precompute=True or use a kerasface teacher"
        )
    print_fn(f"distillation: teacher {distill.teacher} runs on every batch ({size}-d)")
    return None, int(size), embed


def _latse_recognizer(recipe, backbone, head, num_classes, name):
    from kerasface.backbones.resnet_decoder import ResNetDecoder
    from kerasface.layers.identity_mean_images import IdentityMeanImages

    latse = recipe.latse
    decoder = mean_images = None
    if latse.decoder:
        decoder = ResNetDecoder(
            embedding_size=recipe.model.embedding_size,
            output_activation="sigmoid",
            name="decoder",
            **latse.decoder_kwargs,
        )
        mean_images = IdentityMeanImages(
            num_classes,
            resolution=latse.target_resolution,
            momentum=latse.target_momentum,
            storage_dtype=latse.target_dtype,
            seed=recipe.train.seed,
            sharded=latse.shard_mean_images,
            name="mean_images",
        )
    return LATSERecognizer(
        backbone, head, decoder=decoder, mean_images=mean_images, filter_mode=latse.filter_mode, name=f"{name}_latse"
    )


def open_training_source(recipe, out_dir=None):
    """The records a recipe trains on: one source, or a ``CombinedSource`` of several roots.

    A resumed run (``out_dir`` holding ``label_map.json``, or ``label_map_<k>.json`` per
    dataset) keeps the labels its checkpoint was trained with.
    """
    roots = recipe.data.roots or _synthetic_roots(recipe)
    if recipe.data.dataset_weights is not None and len(roots) < 2:
        raise ValueError(
            f"`data.dataset_weights={recipe.data.dataset_weights}` needs two or more datasets, got one root"
        )
    sources = []
    for k, root in enumerate(roots):
        source = open_source(Path(root))
        label_map_path = None if out_dir is None else Path(out_dir) / (
            "label_map.json" if len(roots) == 1 else f"label_map_{k}.json"
        )
        if isinstance(source, FolderSource) and label_map_path is not None and label_map_path.is_file():
            source = FolderSource(source.root, label_map=label_map_path)
        if label_map_path is not None and hasattr(source, "save_label_map"):
            source.save_label_map(label_map_path)
        sources.append(source)
    if len(sources) == 1:
        return sources[0]
    return combine(sources, weights=recipe.data.dataset_weights, names=_dataset_names(roots))


def _synthetic_roots(recipe):
    """The embedded synthetic identities, split in two overlapping datasets when asked to."""
    root = resolve_train_root(recipe)
    count = recipe.data.synthetic_datasets
    if count == 1:
        return (root,)
    if count != 2:
        raise ValueError(f"`data.synthetic_datasets` must be 1 or 2, got {count!r}")
    data = recipe.data
    split_dir = root.parent / (
        f"overlapping_{data.synthetic_identities}x{data.synthetic_images_per_identity}_seed{recipe.train.seed}"
    )
    if not (split_dir / "split.json").is_file():
        from kerasface.data.overlapping_split import split_overlapping

        if split_dir.exists():
            shutil.rmtree(split_dir)  # an interrupted split: redo it
        split_overlapping(root, split_dir, seed=recipe.train.seed)
    return (split_dir / "A", split_dir / "B")


def _dataset_names(roots):
    # Folder names, made unique by their position when two datasets share one.
    names = [Path(str(root).rstrip("/")).name or f"dataset{k}" for k, root in enumerate(roots)]
    return [name if names.count(name) == 1 else f"{k}:{name}" for k, name in enumerate(names)]


def resolve_train_root(recipe):
    """The identity folder of a recipe: ``data.root``, or the embedded synthetic faces."""
    if recipe.data.root:
        return Path(recipe.data.root)
    from kerasface.data.synthetic_faces import make_synthetic_dataset

    synthetic = make_synthetic_dataset(
        Path(os.path.expanduser(recipe.data.synthetic_dir)),
        train_identities=recipe.data.synthetic_identities,
        images_per_identity=recipe.data.synthetic_images_per_identity,
        seed=recipe.train.seed,
    )
    return Path(synthetic.train_dir)


def train(recipe, out_dir, verbose=1, print_fn=print, extra_callbacks=(), strategy=None):
    """Train ``recipe`` into ``out_dir``; rerunning the same call resumes after an interruption.

    Every epoch writes ``checkpoints/epoch_NNN.keras`` and a resumable backup (weights,
    optimizer state and epoch counter, via ``keras.callbacks.BackupAndRestore``). A run
    killed mid-epoch restarts at the start of the epoch it was in, with the learning-rate
    schedule where it was. With ``recipe.eval.sets``, a :class:`VerificationCallback` evaluates
    them during training, keeps ``best.keras`` (+ ``best.json``) by ``recipe.eval.metric`` and
    logs TensorBoard scalars to ``logs/verification``.

    ``recipe.train.strategy`` picks the ``tf.distribute`` strategy (or pass ``strategy``).
    ``data.batch_size`` is the global batch, split evenly over the replicas; with
    ``optimizer.lr_reference_batch`` the learning rate scales linearly with it. Under
    ``multiworker`` (``TF_CONFIG``) each worker reads its shard of the records; the chief
    writes the run directory and the backup, the other workers write to
    ``out_dir/workers/<index>`` and restore from the chief's backup, so restarting every
    worker after one is killed resumes the run.
    """
    if recipe.train.precision not in PRECISIONS:
        raise ValueError(f"`train.precision` must be one of {PRECISIONS}, got {recipe.train.precision!r}")
    if recipe.train.loss not in LOSSES:
        raise ValueError(f"`train.loss` must be one of {LOSSES}, got {recipe.train.loss!r}")
    # First: MultiWorkerMirroredStrategy must exist before TensorFlow runs any op.
    strategy = strategy or make_strategy(recipe.train.strategy)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if recipe.latse.teacher == "train":
        recipe = _train_teacher(recipe, out_dir, verbose, print_fn, strategy)
    keras.utils.set_random_seed(recipe.train.seed)
    keras.mixed_precision.set_global_policy(recipe.train.precision)
    try:
        return _train(recipe, out_dir, verbose, print_fn, extra_callbacks, strategy)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _train_teacher(recipe, out_dir, verbose, print_fn, strategy=None):
    """LATSE stage 1: the recipe's head alone, into ``out_dir/teacher``; the recipe then names it."""
    from kerasface.recipe import LATSEConfig

    teacher_dir = out_dir / "teacher"
    if (teacher_dir / "model.keras").is_file():
        print_fn(f"LATSE stage 1: teacher already trained in {teacher_dir}")
    else:
        epochs = recipe.latse.teacher_epochs or recipe.train.epochs
        print_fn(f"LATSE stage 1: training the teacher ({recipe.head.name} alone, {epochs} epochs) into {teacher_dir}")
        teacher = dataclasses.replace(
            recipe,
            name=f"{recipe.name}_teacher",
            train=dataclasses.replace(recipe.train, epochs=epochs),
            latse=LATSEConfig(),
        )
        train(teacher, teacher_dir, verbose=verbose, print_fn=print_fn, strategy=strategy)
        print_fn("LATSE stage 2: student and decoder, filtered by the teacher")
    return dataclasses.replace(recipe, latse=dataclasses.replace(recipe.latse, teacher=str(teacher_dir)))


def _train(recipe, out_dir, verbose, print_fn, extra_callbacks, strategy):
    cluster = {"index": 0, "num_workers": 1, "is_chief": True}
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        cluster = worker_cluster()
    backup_dir = out_dir / "backup"
    if not cluster["is_chief"]:
        out_dir = out_dir / "workers" / str(cluster["index"])
        out_dir.mkdir(parents=True, exist_ok=True)
    # Built first: a bad set spec or metric fails before any data or model is prepared.
    verification = _verification_callback(recipe, out_dir, print_fn)
    batch_size = recipe.data.batch_size
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(
            f"`data.batch_size` {batch_size} is the global batch and must split evenly over "
            f"{replicas} replicas"
        )
    if recipe.optimizer.lr_reference_batch:
        scaled = recipe.optimizer.lr * batch_size / recipe.optimizer.lr_reference_batch
        print_fn(
            f"learning rate {recipe.optimizer.lr:g} x {batch_size}/{recipe.optimizer.lr_reference_batch} "
            f"(linear scaling) = {scaled:g}"
        )
        recipe = dataclasses.replace(recipe, optimizer=dataclasses.replace(recipe.optimizer, lr=scaled))
    source = open_training_source(recipe, out_dir)
    if recipe.data.min_images_per_class is not None:
        from kerasface.data.class_subset import cut_long_tail

        source = cut_long_tail(source, recipe.data.min_images_per_class)
        print_fn(source.summary())
    dataset_num_classes = getattr(source, "dataset_num_classes", None)
    sampler = recipe.data.sampler
    if recipe.data.dataset_weights is not None and sampler == "shuffle":
        sampler = "weighted"
    record_features = teacher_size = teacher = None
    if recipe.distill.enabled:
        record_features, teacher_size, teacher = _prepare_teacher(recipe, source, out_dir, print_fn)
    pipeline = FacePipeline(
        source,
        batch_size=batch_size,
        sampler=sampler,
        augmentation=_batch_augmentation(recipe),
        record_features=record_features,
        seed=recipe.train.seed,
        # Always repeat and give fit an exact step count: skipped files make the cardinality
        # unknown, and then Keras runs one extra (empty) step per epoch and the LR schedule drifts.
        repeat=True,
        # uint8 batches; the FaceRecognizer normalises them on the device.
        normalize=False,
    )
    (out_dir / "recipe.json").write_text(recipe.to_json())
    steps_per_epoch = recipe.train.steps_per_epoch or pipeline.steps_per_epoch
    total_steps = steps_per_epoch * recipe.train.epochs
    print_fn(
        f"training {recipe.name}: {source.num_records} images, {source.num_classes} identities, "
        f"batch {batch_size}, {steps_per_epoch} steps/epoch x {recipe.train.epochs} epochs, "
        f"{strategy.num_replicas_in_sync} replica(s), precision {recipe.train.precision}"
    )
    if dataset_num_classes is not None and len(dataset_num_classes) > 1:
        print_fn(_describe_datasets(recipe, source, total_steps))

    with strategy.scope():
        model = build_face_recognizer(recipe, source.num_classes, dataset_num_classes, teacher_size=teacher_size)
        if recipe.train.init_from:
            init_backbone(model, recipe.train.init_from, print_fn, head=recipe.train.init_head)
        schedule = build_lr_schedule(recipe.optimizer, steps_per_epoch, recipe.train.epochs)
        optimizer_kwargs = {
            "learning_rate": schedule,
            "momentum": recipe.optimizer.momentum,
            "weight_decay": recipe.optimizer.weight_decay,
        }
        if recipe.head.sample_rate is not None and recipe.optimizer.sparse_updates and not recipe.head.sharded:
            from kerasface.training.lazy_sgd import LazySGD

            optimizer = LazySGD(weight_decay_multipliers=recipe.optimizer.weight_decay_multipliers, **optimizer_kwargs)
        elif recipe.optimizer.weight_decay_multipliers:
            from kerasface.training.multiplied_decay_sgd import MultipliedDecaySGD

            optimizer = MultipliedDecaySGD(
                weight_decay_multipliers=recipe.optimizer.weight_decay_multipliers, **optimizer_kwargs
            )
        else:
            optimizer = keras.optimizers.SGD(**optimizer_kwargs)
        if recipe.train.loss != "crossentropy" and type(model) is not FaceRecognizer:
            raise ValueError(
                f"`train.loss={recipe.train.loss}` applies to a plain margin-head model, not {type(model).__name__}"
            )
        if recipe.distill.enabled:
            model.teacher = teacher
            model.compile_losses(
                optimizer,
                feature_loss=recipe.distill.feature_loss,
                feature_weight=recipe.distill.feature_weight,
                margin_weight=recipe.distill.margin_weight,
                similarity_weight=recipe.distill.similarity_weight,
                jit_compile=recipe.train.jit_compile,
            )
        elif isinstance(model, DAILRecognizer):
            model.compile_losses(
                optimizer, dataset_loss_weight=recipe.dail.dataset_loss_weight, jit_compile=recipe.train.jit_compile
            )
        elif isinstance(model, LATSERecognizer):
            latse = recipe.latse
            if latse.teacher is not None:
                from kerasface.training.teacher_filter import TeacherFilter

                model.teacher_filter = TeacherFilter.from_model(
                    latse.teacher,
                    k=latse.teacher_k,
                    num_classes=source.num_classes,
                    source=source,
                    label_map=out_dir / "label_map.json" if (out_dir / "label_map.json").is_file() else None,
                    print_fn=print_fn,
                    **latse.teacher_kwargs,
                )
                if recipe.train.jit_compile and not isinstance(model.teacher_filter.embed, keras.Model):
                    raise ValueError(
                        f"teacher {latse.teacher} runs outside TensorFlow (tf.numpy_function), which XLA "
                        "cannot compile: set train.jit_compile=False or use a kerasface teacher"
                    )
            model.compile_losses(
                optimizer,
                generative_weight=latse.generative_weight,
                l1_weight=latse.l1_weight,
                ssim_weight=latse.ssim_weight,
                jit_compile=recipe.train.jit_compile,
            )
        else:
            model.compile(
                optimizer=optimizer,
                loss=_identity_loss(recipe, source),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                jit_compile=recipe.train.jit_compile,
            )
    reversal = []
    if isinstance(model, DAILRecognizer) and recipe.dail.gradient_reversal > 0:
        reversal = [
            GradientReversalSchedule(
                strength=recipe.dail.gradient_reversal,
                switch_step=recipe.dail.resolved_switch_step(total_steps),
                ramp=recipe.dail.ramp,
                total_steps=total_steps,
            )
        ]

    throughput = ThroughputLogger(batch_size, print_fn=print_fn)
    callbacks = [
        ChiefBackupAndRestore(str(backup_dir), is_chief=cluster["is_chief"], save_freq="epoch", delete_checkpoint=False),
        # The chief writes the run's files; other workers hold the same weights.
        *([
            keras.callbacks.ModelCheckpoint(str(out_dir / "checkpoints" / "epoch_{epoch:03d}.keras")),
            keras.callbacks.TensorBoard(str(out_dir / "logs"), update_freq="epoch"),
        ] if cluster["is_chief"] else []),
        *reversal,
        throughput,
        BadRecordReport(pipeline, list_path=out_dir / "bad_records.txt", print_fn=print_fn),
        # Before the caller's callbacks, so EarlyStopping & co. see its `val_*` values in the logs.
        *([verification] if verification is not None else []),
        *extra_callbacks,
    ]
    (out_dir / "checkpoints").mkdir(exist_ok=True)
    started = time.perf_counter()
    history = model.fit(
        pipeline.distribute(strategy) if strategy.num_replicas_in_sync > 1 else pipeline.dataset,
        epochs=recipe.train.epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # the pipeline shuffles; Keras would only warn that it cannot
    )
    elapsed = time.perf_counter() - started
    model.save(out_dir / "model.keras")
    model.embedding_model.save(out_dir / "embedding.keras")

    rates = sorted(throughput.epoch_rates)
    median_rate = rates[len(rates) // 2] if rates else float("nan")
    initial_epoch = recipe.train.epochs - len(history.epoch)
    summary = {
        "recipe": recipe.name,
        "epochs": recipe.train.epochs,
        "initial_epoch": initial_epoch,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": batch_size,
        "replicas": replicas,
        "workers": cluster["num_workers"],
        "strategy": type(strategy).__name__,
        "precision": recipe.train.precision,
        "learning_rate": recipe.optimizer.lr,
        "num_images": source.num_records,
        "num_classes": source.num_classes,
        "images_per_second_median": median_rate,
        "epoch_images_per_second": throughput.epoch_rates,
        "wall_seconds": elapsed,
        "bad_records": {path: reason for path, (_, reason) in pipeline.bad_records().items()},
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
    }
    if dataset_num_classes is not None and len(dataset_num_classes) > 1:
        summary["datasets"] = {
            "names": list(source.dataset_names),
            "num_classes": list(dataset_num_classes),
            "num_images": [len(source.record_range(k)) for k in range(source.num_datasets)],
            "dataset_aware": recipe.dail.dataset_aware,
            "crossing_dropout_p": recipe.dail.crossing_dropout_p,
            "gradient_reversal": recipe.dail.gradient_reversal,
            "switch_step": reversal[0].switch_step if reversal else None,
        }
    if isinstance(model, LATSERecognizer):
        summary["latse"] = {
            "decoder": model.decoder is not None,
            "teacher": recipe.latse.teacher,
            "teacher_k": recipe.latse.teacher_k,
            "filter": model.teacher_filter.description if model.teacher_filter is not None else None,
            "filter_mode": model.filter_mode,
            "mean_images_bytes": None if model.mean_images is None
            else model.mean_images.bytes_per_identity * model.mean_images.num_classes,
        }
    if recipe.distill.enabled:
        summary["distill"] = {
            "teacher": recipe.distill.teacher,
            "teacher_size": teacher_size,
            "precomputed": recipe.distill.precompute,
            "feature_loss": recipe.distill.feature_loss,
            "margin_weight": recipe.distill.margin_weight,
            "projection": model.projection is not None,
        }
    if verification is not None:
        summary["verification"] = {
            "metric": verification.metric_label,
            "monitor": verification.monitor,
            "sets": [vset.source for vset in verification.sets],
            # From best.json when a resumed run found nothing better.
            "best": verification.best_record,
            "last": verification.evaluations[-1] if verification.evaluations else None,
        }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return TrainResult(
        model=model,
        out_dir=out_dir,
        history=history.history,
        images_per_second=median_rate,
        bad_records=pipeline.bad_records(),
        initial_epoch=initial_epoch,
    )


def _identity_loss(recipe, source):
    if recipe.train.loss == "class_balanced":
        from kerasface.losses.class_balanced_crossentropy import ClassBalancedCrossentropy

        return ClassBalancedCrossentropy(source.class_counts(), **recipe.train.loss_kwargs)
    if recipe.train.loss_kwargs:
        raise ValueError(f"`train.loss_kwargs` {recipe.train.loss_kwargs} given for the plain cross-entropy")
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _describe_datasets(recipe, source, total_steps):
    dail = recipe.dail
    parts = ", ".join(
        f"{name}: {len(source.record_range(k))} images, {count} classes"
        for k, (name, count) in enumerate(zip(source.dataset_names, source.dataset_num_classes))
    )
    loss = (
        f"dataset-aware {recipe.head.name} (crossing dropout p={dail.crossing_dropout_p:g})"
        if dail.dataset_aware
        else f"naive combination ({recipe.head.name} over every dataset's classes)"
    )
    if not dail.dataset_classifier:
        adversary = "no dataset classifier"
    elif dail.gradient_reversal > 0:
        adversary = (
            f"dataset classifier with gradient reversal lambda={dail.gradient_reversal:g} from step "
            f"{dail.resolved_switch_step(total_steps)} of {total_steps} ({dail.ramp})"
        )
    else:
        adversary = "dataset classifier as a probe (no gradient reversal)"
    return f"{source.num_datasets} datasets ({parts}); {loss}; {adversary}"


def init_backbone(model, path, print_fn=print, head=False):
    """Copy a trained model's backbone weights into ``model.backbone`` (shapes must match).

    With ``head``, the trained model's head kernel (its class centres) too, when ``path`` holds
    a full model whose head has the same kernel shape; otherwise the head starts fresh, and
    the reason is printed.
    """
    from kerasface.models.loading import load_embedding_model

    trained = load_embedding_model(path)
    weights = trained.get_weights()
    expected = model.backbone.weights
    shapes = [tuple(w.shape) for w in weights]
    wanted = [tuple(w.shape) for w in expected]
    if shapes != wanted:
        raise ValueError(
            f"train.init_from={path}: its backbone has {len(shapes)} weights that do not match this "
            f"recipe's {model.backbone.name} ({len(wanted)} weights); first difference: "
            f"{_first_difference(shapes, wanted)}"
        )
    model.backbone.set_weights(weights)
    print_fn(f"backbone initialised from {path}")
    if head:
        _init_head(model, path, print_fn)


def _init_head(model, path, print_fn):
    from kerasface.models.loading import resolve_model_file

    file = Path(path) / "model.keras" if Path(path).is_dir() else resolve_model_file(path)
    trained = keras.saving.load_model(file, compile=False)
    old = getattr(getattr(trained, "head", None), "kernel", None)
    new = getattr(getattr(model, "head", None), "kernel", None)
    if old is None or new is None:
        print_fn(f"head not initialised: {file} or this model has no head kernel")
    elif tuple(old.shape) != tuple(new.shape):
        print_fn(f"head not initialised: {file} has class centres {tuple(old.shape)}, this head {tuple(new.shape)}")
    else:
        new.assign(old)
        print_fn(f"head class centres initialised from {file}")


def _first_difference(shapes, wanted):
    for i, (got, want) in enumerate(zip(shapes, wanted)):
        if got != want:
            return f"weight {i}: {got} vs {want}"
    return f"{len(shapes)} vs {len(wanted)} weights"


def _verification_callback(recipe, out_dir, print_fn):
    """The recipe's :class:`VerificationCallback`, or None when it names no sets."""
    config = recipe.eval
    if not config.sets:
        return None
    return VerificationCallback(
        list(config.sets),
        every_n_epochs=config.every_epochs if config.every_steps is None else None,
        every_n_steps=config.every_steps,
        metric=config.metric,
        flip=config.flip,
        best_path=out_dir / "best.keras",
        log_dir=out_dir / "logs" / "verification",
        print_fn=print_fn,
    )
