"""``kerasface data``: convert training data between formats, and describe a dataset."""

import importlib
import importlib.util
import json
import os
import shutil
import sys
import time

import numpy as np

from kerasface.cli.argument_types import integer_at_least

_MAX_LISTED_FILES = 20


def add_arguments(parser):
    """Add the ``data`` actions (``convert``, ``info``, ``make-pairs``) to an argparse parser."""
    actions = parser.add_subparsers(dest="data_action", metavar="ACTION")
    parser.set_defaults(_data_parser=parser)

    convert = actions.add_parser(
        "convert",
        help="rewrite training data (identity folders, insightface .rec, TFRecords) as sharded "
        "TFRecords or insightface RecordIO; bad records are skipped and listed",
        description="Read every record of SRC and write it to DST. Images are copied encoded "
        "(never re-compressed). Records that are empty, unreadable or not images are skipped, "
        "counted and listed in DST/skipped.txt. The output appears only once complete.",
    )
    convert.add_argument(
        "src",
        metavar="SRC",
        help="training data: a folder of identity sub-folders SRC/<identity>/<image>, an "
        "insightface train.rec (or its folder), a kerasface TFRecord dataset folder, or "
        "TFRecord files written elsewhere (a file, folder or quoted glob pattern)",
    )
    convert.add_argument(
        "dst", metavar="DST", help="output folder to create (must not exist or be empty, see --overwrite)"
    )
    convert.add_argument(
        "--format",
        choices=("tfrecord", "recordio"),
        default="tfrecord",
        help="tfrecord: DST/part-*.tfrecord + dataset.json + index.npz (random access, "
        "or streaming from remote storage); recordio: insightface DST/train.rec, train.idx, "
        "property (default: %(default)s)",
    )
    convert.add_argument(
        "--shards",
        type=integer_at_least(1),
        default=16,
        metavar="N",
        help="TFRecord files to spread the records over, balanced (default: %(default)s; use at "
        "least as many as input workers that will stream them)",
    )
    convert.add_argument(
        "--shuffle-seed",
        type=int,
        default=None,
        metavar="S",
        help="write the records in an order shuffled with seed S (TFRecord only), so that "
        "streaming readers see mixed identities; by default source order is kept",
    )
    convert.add_argument(
        "--dataset-index",
        type=integer_at_least(0),
        default=0,
        metavar="I",
        help="dataset number stored in every TFRecord record, for mixing datasets (default: %(default)s)",
    )
    convert.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a dataset that already exists at DST (only a folder kerasface wrote)",
    )
    convert.add_argument("--quiet", action="store_true", help="no progress lines, only the summary")
    convert.set_defaults(_data_run=_run_convert)

    info = actions.add_parser(
        "info",
        help="kind, record and class counts, images per class and files of a dataset",
        description="Open PATH as training data (any format `data convert` reads) and describe it.",
    )
    info.add_argument(
        "path",
        metavar="PATH",
        help="identity folder root, insightface .rec (or its folder), TFRecord dataset folder "
        "or TFRecord files",
    )
    info.add_argument(
        "--all-files", action="store_true", help=f"list every file (default: the first {_MAX_LISTED_FILES})"
    )
    info.set_defaults(_data_run=_run_info)

    if importlib.util.find_spec("kerasface.cli.make_pairs_command") is not None:
        module = importlib.import_module("kerasface.cli.make_pairs_command")
        doc = (module.__doc__ or "").strip().splitlines()
        help_text = "LFW-style verification pairs (and a .bin) from a folder of identities"
        make_pairs = actions.add_parser(
            "make-pairs", help=help_text, description=doc[0] if doc else help_text
        )
        module.add_arguments(make_pairs)
        make_pairs.set_defaults(_data_run=module.run)
    return parser


def run(args):
    """Run the chosen ``data`` action; returns the exit code."""
    action = getattr(args, "_data_run", None)
    if action is None:
        args._data_parser.print_help()
        return 2
    try:
        return action(args)
    except FileExistsError as error:
        # main() reports ValueError / FileNotFoundError; an occupied output folder is as plain.
        print(f"kerasface data: error: {error}", file=sys.stderr)
        return 2


def _progress_printer(quiet):
    if quiet:
        return None
    start = time.perf_counter()
    last = [start]

    def progress(done, total):
        now = time.perf_counter()
        if now - last[0] < 5 and done < total:
            return
        last[0] = now
        rate = done / max(now - start, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("inf")
        print(
            f"  {done}/{total} records ({100 * done / max(total, 1):.1f}%), {rate:.0f} records/s, "
            f"{eta / 60:.1f} min left",
            file=sys.stderr,
            flush=True,
        )

    return progress


def _run_convert(args):
    from kerasface.data.open_source import open_source

    source = open_source(args.src)
    print(f"converting {source!r} to {args.format} in {os.path.abspath(args.dst)}", flush=True)
    progress = _progress_printer(args.quiet)
    if args.format == "tfrecord":
        from kerasface.data.tfrecord_writer import write_tfrecords

        summary = write_tfrecords(
            source,
            args.dst,
            shards=args.shards,
            dataset_index=args.dataset_index,
            shuffle_seed=args.shuffle_seed,
            progress=progress,
            overwrite=args.overwrite,
        )
    else:
        if args.shuffle_seed is not None:
            raise ValueError(
                "--shuffle-seed applies to --format tfrecord only: insightface RecordIO stores "
                "the images grouped by identity"
            )
        summary = _convert_to_record_io(source, args.dst, progress, args.overwrite)
    print(summary.describe())
    return 0


def _convert_to_record_io(source, dst, progress, overwrite):
    """Write ``source`` as insightface RecordIO into ``dst`` (built aside, then renamed)."""
    from kerasface.data.label_map import save_label_map
    from kerasface.data.record_io_writer import write_insightface_record_io
    from kerasface.data.tfrecord_source import SKIPPED_FILE
    from kerasface.data.tfrecord_writer import ConversionSummary, iter_source_records

    dst = os.path.abspath(dst)
    if os.path.exists(dst) and (not os.path.isdir(dst) or os.listdir(dst)):
        if not overwrite:
            raise FileExistsError(
                f"{dst} already exists and is not empty; choose a new folder or pass --overwrite"
            )
        if not os.path.isfile(os.path.join(dst, "train.rec")):
            raise FileExistsError(f"{dst} is not empty and holds no train.rec: not replacing it")
    start = time.perf_counter()
    # insightface lays the images out grouped by identity, in label order.
    order = np.argsort(source.labels, kind="stable")
    total = len(order)
    skipped = []

    def items():
        for done, (index, data, reason) in enumerate(iter_source_records(source, order), 1):
            if progress is not None and (done % 256 == 0 or done == total):
                progress(done, total)
            if reason is not None:
                skipped.append((index, source.describe(index), reason))
                continue
            yield int(source.labels[index]), data

    work = os.path.join(os.path.dirname(dst), f".{os.path.basename(dst)}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    try:
        result = write_insightface_record_io(work, items(), num_classes=source.num_classes)
        with open(os.path.join(work, SKIPPED_FILE), "w", encoding="utf-8") as f:
            for index, where, reason in skipped:
                f.write(f"{index}\t{where}\t{reason}\n")
        if source.class_names is not None:
            label_map = {name: label for label, name in enumerate(source.class_names)}
            save_label_map(label_map, os.path.join(work, "label_map.json"))
        if os.path.isdir(dst):
            shutil.rmtree(dst)
        os.rename(work, dst)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return ConversionSummary(
        destination=dst,
        format="recordio",
        num_source_records=total,
        num_records=int(result["num_images"]),
        skipped=skipped,
        shards=[("train.rec", int(result["num_images"]))],
        seconds=time.perf_counter() - start,
    )


def _run_info(args):
    from kerasface.data.open_source import open_source

    source = open_source(args.path)
    counts = source.class_counts()
    nonempty = counts[counts > 0]
    print(f"path:     {os.path.abspath(args.path)}")
    print(f"kind:     {type(source).__name__} ({source.name})")
    print(f"records:  {source.num_records}")
    empty = len(counts) - len(nonempty)
    print(f"classes:  {source.num_classes}" + (f" ({empty} without images)" if empty else ""))
    if len(counts):
        print(
            f"images per class: min {int(counts.min())}, median {float(np.median(counts)):g}, "
            f"max {int(counts.max())}, mean {float(counts.mean()):.1f}"
        )
    if source.class_names is not None:
        shown = ", ".join(source.class_names[:5]) + (", ..." if len(source.class_names) > 5 else "")
        print(f"class names: {shown}")
    for line in _file_lines(source, args.all_files):
        print(line)
    return 0


def _file_lines(source, all_files):
    """Lines naming the files of ``source`` (shards, RecordIO files, image root)."""
    lines = []
    shard_files = getattr(source, "shard_files", None)
    if shard_files is not None:
        sizes = [os.path.getsize(f) for f in shard_files]
        lines.append(f"shards:   {len(shard_files)} files, {sum(sizes) / 1e6:.1f} MB")
        listed = shard_files if all_files else shard_files[:_MAX_LISTED_FILES]
        for path, count, size in zip(listed, source.shard_num_records, sizes):
            lines.append(f"  {path}: {count} records, {size / 1e6:.1f} MB")
        if len(listed) < len(shard_files):
            lines.append(f"  ... ({len(shard_files) - len(listed)} more; --all-files lists them)")
        directory = getattr(source, "directory", None)
        if directory:
            with open(os.path.join(directory, "dataset.json"), encoding="utf-8") as f:
                meta = json.load(f)
            origin = meta.get("source") or {}
            if origin.get("description"):
                lines.append(f"converted from: {origin['description']}")
            if meta.get("skipped"):
                lines.append(
                    f"skipped at conversion: {meta['skipped']} records (listed in "
                    f"{os.path.join(directory, 'skipped.txt')})"
                )
        return lines
    seen = set()
    for attribute in ("rec_path", "path", "idx_path", "property_path", "root"):
        value = getattr(source, attribute, None)
        if not isinstance(value, (str, os.PathLike)) or os.path.abspath(value) in seen:
            continue
        seen.add(os.path.abspath(value))
        size = f", {os.path.getsize(value) / 1e6:.1f} MB" if os.path.isfile(value) else ""
        lines.append(f"{attribute + ':':9} {os.path.abspath(value)}{size}")
    skipped = getattr(source, "skipped_files", None) or getattr(source, "skipped_records", None)
    if skipped:
        lines.append(f"skipped while indexing: {len(skipped)} entries, e.g. {skipped[0]}")
    return lines
