"""``kerasface bench``: latency of one model file (``--model FILE``), or a long benchmark (``zoo``)."""

import argparse
import shlex
import sys

from kerasface.cli.argument_types import integer_at_least, positive_float

PROG = "kerasface bench"


def _add_zoo_arguments(parser):
    from kerasface.benchmark.zoo_benchmark import add_arguments

    add_arguments(parser)


def _run_zoo(args):
    from kerasface.benchmark.zoo_benchmark import run_from_args

    return run_from_args(args, prefix="kerasface bench zoo")


# benchmark -> (add its arguments, run it, one-line help); later benchmarks go here.
BENCHMARKS = {
    "zoo": (
        _add_zoo_arguments,
        _run_zoo,
        "params, MACs, TFLite fp32/int8 size and single-thread CPU latency per face of every registered "
        "backbone (one process each, resumable JSON + Markdown table)",
    ),
}


def integer_list(minimum):
    """A converter for comma-separated integers >= ``minimum`` (``"1,2"`` -> ``[1, 2]``), duplicates dropped."""
    single = integer_at_least(minimum)

    def parse(text):
        values = []
        for item in text.split(","):
            try:
                values.append(single(item.strip()))
            except argparse.ArgumentTypeError as error:
                raise argparse.ArgumentTypeError(
                    f"expected comma-separated integers >= {minimum} such as 1,2, got {text!r} ({error})"
                ) from None
        return list(dict.fromkeys(values))

    return parse


class _ModelOption(argparse.Action):
    """Stores ``--model`` and makes the BENCHMARK sub-command optional: ``bench --model FILE`` runs alone."""

    def __init__(self, option_strings, dest, benchmarks=None, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.benchmarks = benchmarks

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        if self.benchmarks is not None:
            # argparse checks required arguments after every option has been seen, so this
            # lifts the requirement for this parse (the parser is built once per command).
            self.benchmarks.required = False


def add_model_arguments(parser, required=False, benchmarks=None):
    """The ``--model FILE`` benchmark options (``benchmarks``: the sub-command action --model makes optional)."""
    from kerasface.benchmark import model_benchmark as mb
    from kerasface.cli.eval_command import add_peer_arguments

    group = parser.add_argument_group(
        "model latency (`kerasface bench --model FILE`)",
        "Per-face latency (median and p90 after warm-up) and throughput of FaceEmbedder.embed() on uint8 "
        "faces, preprocessing included, for every thread count x batch size; each thread count in its "
        "own process.",
    )
    model_kwargs = {"required": True} if required else {"action": _ModelOption, "benchmarks": benchmarks}
    group.add_argument(
        "--model", default=None, **model_kwargs,
        help="model file to time: .tflite, .onnx, a SavedModel directory, a kerasface .keras file or run "
             "directory (third-party files: see --runtime, --channel-order, --pixel-range, --layout)",
    )
    group.add_argument(
        "--threads", dest="bench_threads", type=integer_list(1), default=list(mb.DEFAULT_THREADS),
        metavar="N[,N...]",
        help="comma-separated thread counts, each measured in a fresh process "
             f"(default: {','.join(map(str, mb.DEFAULT_THREADS))})",
    )
    group.add_argument(
        "--batch-sizes", dest="bench_batch_sizes", type=integer_list(1), default=list(mb.DEFAULT_BATCH_SIZES),
        metavar="B[,B...]",
        help="comma-separated faces per embed() call (default: "
             f"{','.join(map(str, mb.DEFAULT_BATCH_SIZES))})",
    )
    group.add_argument(
        "--runs", dest="bench_runs", type=integer_at_least(3), default=mb.DEFAULT_RUNS, metavar="N",
        help=f"timed calls per (threads, batch) (default: {mb.DEFAULT_RUNS})",
    )
    group.add_argument(
        "--warmup", dest="bench_warmup", type=integer_at_least(0), default=mb.DEFAULT_WARMUP, metavar="N",
        help=f"untimed calls first (default: {mb.DEFAULT_WARMUP})",
    )
    group.add_argument(
        "--max-seconds", dest="bench_max_seconds", type=positive_float, default=mb.DEFAULT_MAX_SECONDS, metavar="S",
        help="stop timing one (threads, batch) after this many seconds, with at least 3 calls "
             f"(default: {mb.DEFAULT_MAX_SECONDS:g})",
    )
    group.add_argument(
        "--images", dest="bench_images", default=None, metavar="DIR",
        help="directory of aligned 112x112 faces to feed (default: deterministic synthetic faces)",
    )
    group.add_argument(
        "--in-process", dest="bench_in_process", action="store_true",
        help="time in this process instead of one child process per thread count: starts faster, but "
             "TensorFlow (Keras, SavedModel) keeps its thread count, so --threads only applies to LiteRT, "
             "ONNX Runtime and OpenCV",
    )
    group.add_argument("--json", dest="bench_json", default=None, metavar="OUT",
                       help="also write the results to this JSON file")
    add_peer_arguments(group)
    return parser


def add_arguments(parser):
    """Add ``bench --model FILE ...`` and the ``bench`` benchmarks (sub-commands) to an argparse parser."""
    benchmarks = parser.add_subparsers(
        dest="bench_target", metavar="BENCHMARK", required=True,
        help="a long benchmark instead of --model (run `kerasface bench BENCHMARK -h`)",
    )
    add_model_arguments(parser, benchmarks=benchmarks)
    for name, (add, _, help_text) in BENCHMARKS.items():
        add(benchmarks.add_parser(name, help=help_text, description=help_text))
    return parser


def model_command_line(args, prog=PROG):
    """The command, every setting spelled out, that reproduces a ``--model`` benchmark."""
    parts = shlex.split(prog) + [
        "--model", args.model,
        "--threads", ",".join(map(str, args.bench_threads)),
        "--batch-sizes", ",".join(map(str, args.bench_batch_sizes)),
        "--runs", str(args.bench_runs), "--warmup", str(args.bench_warmup),
        "--max-seconds", f"{args.bench_max_seconds:g}",
    ]
    if args.bench_images:
        parts += ["--images", args.bench_images]
    for flag, value in _peer_options(args).items():
        if value is not None:
            parts.append(f"--{flag.replace('_', '-')}={value}")
    if args.bench_in_process:
        parts.append("--in-process")
    if args.bench_json:
        parts += ["--json", args.bench_json]
    return shlex.join(parts)


def run_model_bench(args, prog=PROG, out=None, err=None):
    """Run the ``--model`` benchmark from parsed options; print the table; return the exit code."""
    from kerasface.benchmark.bench_worker import BenchWorkerError
    from kerasface.benchmark.model_benchmark import benchmark_model, format_table

    out = out or sys.stdout
    err = err or sys.stderr
    try:
        report = benchmark_model(
            args.model,
            threads=args.bench_threads,
            batch_sizes=args.bench_batch_sizes,
            runs=args.bench_runs,
            warmup=args.bench_warmup,
            max_seconds=args.bench_max_seconds,
            images=args.bench_images,
            peer_options=_peer_options(args),
            isolate=not args.bench_in_process,
            command=model_command_line(args, prog),
            log=err,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"{prog}: error: {error}", file=err)
        return 2
    except BenchWorkerError as error:
        print(f"{prog}: error: {error}", file=err)
        return 1
    print(format_table(report), file=out)
    if args.bench_json:
        from kerasface.benchmark.zoo_benchmark import write_results

        write_results(args.bench_json, report)
        print(f"wrote {args.bench_json}", file=err)
    return 0


def run(args):
    target = getattr(args, "bench_target", None)
    model = getattr(args, "model", None)
    if model is not None and target is not None:
        print(f"{PROG}: error: --model times one file and cannot be combined with the {target!r} benchmark; "
              f"run them separately", file=sys.stderr)
        return 2
    if model is not None:
        return run_model_bench(args)
    if target not in BENCHMARKS:
        print(f"{PROG}: error: give --model FILE to time one model, or a benchmark: "
              f"{', '.join(BENCHMARKS)} (got {target!r})", file=sys.stderr)
        return 2
    return BENCHMARKS[target][1](args)


def _peer_options(args):
    return {key: getattr(args, key, None)
            for key in ("runtime", "channel_order", "pixel_range", "layout", "input_size")}

