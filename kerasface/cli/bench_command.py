"""``kerasface bench BENCHMARK``: measurements that take minutes (``zoo``: every backbone's size and latency)."""

import sys


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


def add_arguments(parser):
    """Add the ``bench`` benchmarks (sub-commands) to an argparse parser."""
    benchmarks = parser.add_subparsers(dest="bench_target", metavar="BENCHMARK", required=True)
    for name, (add, _, help_text) in BENCHMARKS.items():
        add(benchmarks.add_parser(name, help=help_text, description=help_text))
    return parser


def run(args):
    target = getattr(args, "bench_target", None)
    if target not in BENCHMARKS:
        print(f"kerasface bench: error: unknown benchmark {target!r}; available: {', '.join(BENCHMARKS)}",
              file=sys.stderr)
        return 2
    return BENCHMARKS[target][1](args)
