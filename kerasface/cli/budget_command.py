"""``kerasface budget``: parameters, MACs, FLOPs and sizes of backbones, checked against limits."""

import argparse
import sys

from kerasface.budget.budget_check import MB, check, format_quantity, parse_quantity

_COLUMNS = ("backbone", "params", "trainable", "MACs", "FLOPs", "fp32 size", "int8 size", "budget")
_FOOTNOTE = (
    "MACs: multiply-accumulates of convolutions and matmuls at batch 1 (insightface's 'GFLOPs',\n"
    "  the papers' 'MAdds'). FLOPs: 2 x MACs + elementwise, pooling and reduction ops.\n"
    "params: all weights, BatchNorm statistics included; trainable: learnable weights only.\n"
    "Sizes: fp32 4 bytes/param, int8 ~1 byte/param; MB = 10**6 bytes."
)


def _quantity(text):
    try:
        return parse_quantity(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_arguments(parser):
    parser.add_argument(
        "--backbone",
        action="append",
        metavar="NAME",
        help="backbone to measure, as registered in kerasface.backbones (repeat for several)",
    )
    parser.add_argument(
        "--all", action="store_true", help="measure every registered backbone (kerasface.backbones.list())"
    )
    parser.add_argument(
        "--embedding-size",
        type=int,
        default=None,
        metavar="D",
        help="embedding dimension passed to the backbone (default: the backbone's own default)",
    )
    parser.add_argument(
        "--max-macs",
        type=_quantity,
        metavar="N",
        help="fail if multiply-accumulates exceed N, e.g. 1G or 221M (insightface's 'GFLOPs' are MACs)",
    )
    parser.add_argument(
        "--max-flops",
        type=_quantity,
        metavar="N",
        help="fail if FLOPs (2 x MACs + elementwise ops) exceed N, e.g. 1G",
    )
    parser.add_argument(
        "--max-params",
        type=_quantity,
        metavar="N",
        help="fail if parameters (all weights, BatchNorm statistics included) exceed N, e.g. 20M",
    )
    parser.add_argument(
        "--max-size-mb",
        type=_quantity,
        metavar="MB",
        help="fail if the estimated float32 weight size exceeds MB megabytes (10**6 bytes), e.g. 20",
    )
    parser.add_argument(
        "--input-size",
        type=int,
        default=None,
        metavar="S",
        help="build the backbones for S x S x 3 images instead of 112 x 112",
    )
    return parser


def format_table(rows):
    """Rows of equal-length string tuples (the first is the header) -> aligned text."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report_row(name, report):
    cost = report.cost
    return (
        name,
        format_quantity(cost.params),
        format_quantity(cost.trainable_params),
        format_quantity(cost.macs),
        format_quantity(cost.flops),
        f"{report.size_fp32_bytes / MB:.2f} MB",
        f"{report.size_int8_bytes / MB:.2f} MB",
        "ok" if report.within_budget else "OVER",
    )


def check_models(models, limits=None, input_shape=None, out=None, err=None):
    """Measure named models, print the table and any violations; return the exit code.

    Args:
        models: iterable of ``(name, model_or_factory)``; a factory is a zero-argument
            callable returning the model, so one that fails to build is reported and the
            rest are still measured.
        limits: keyword arguments for :func:`kerasface.budget.check` (``max_macs``, ...).
        input_shape: shape without batch, passed to the counter.
        out, err: text streams (default stdout / stderr).

    Returns:
        0 when every model is within budget, 1 when any is over, 2 when any failed.
    """
    import keras

    out = out or sys.stdout
    err = err or sys.stderr
    limits = {k: v for k, v in (limits or {}).items() if v is not None}
    rows = [_COLUMNS]
    over, failed, warnings = [], [], []
    for name, model in models:
        try:
            if not isinstance(model, keras.layers.Layer) and callable(model):
                model = model()
            report = check(model, input_shape=input_shape, **limits)
        except Exception as e:  # keep measuring the other models; this one is reported
            failed.append(f"{name}: {type(e).__name__}: {e}")
            continue
        rows.append(report_row(name, report))
        if not report.within_budget:
            over.append((name, report.violations))
        cost = report.cost
        if cost.uncounted_ops:
            ops = ", ".join(f"{k} x{v}" for k, v in cost.uncounted_ops.items())
            warnings.append(f"{name}: ops with unknown cost (not in FLOPs): {ops}")
        warnings.extend(f"{name}: {note}" for note in cost.notes)
    if len(rows) > 1:
        print(format_table(rows), file=out)
        print(file=out)
        print(_FOOTNOTE, file=out)
        if limits:
            shown = ", ".join(f"{k}={format_quantity(v)}" for k, v in limits.items())
            print(f"limits: {shown}", file=out)
    for warning in warnings:
        print(f"warning: {warning}", file=err)
    for name, violations in over:
        print(f"OVER BUDGET {name}: " + "; ".join(violations), file=err)
    for message in failed:
        print(f"error: {message}", file=err)
    total = len(rows) - 1 + len(failed)
    if failed:
        print(f"{len(failed)} of {total} model(s) could not be measured", file=err)
        return 2
    if over:
        print(f"{len(over)} of {total} model(s) over budget", file=err)
        return 1
    return 0


def run(args):
    try:
        from kerasface import backbones
    except ImportError as e:
        print(f"error: cannot import kerasface.backbones: {e}", file=sys.stderr)
        return 2
    if args.all:
        names = backbones.list()
        if not names:
            print("error: --all: no backbones are registered in kerasface.backbones", file=sys.stderr)
            return 2
    elif args.backbone:
        names = list(dict.fromkeys(args.backbone))
    else:
        print(
            f"error: pass --backbone NAME or --all; available: {', '.join(backbones.list())}",
            file=sys.stderr,
        )
        return 2
    unknown = [n for n in names if n not in backbones.list()]
    if unknown:
        print(
            f"error: unknown backbone(s) {', '.join(unknown)}; available: {', '.join(backbones.list())}",
            file=sys.stderr,
        )
        return 2
    kwargs = {} if args.embedding_size is None else {"embedding_size": args.embedding_size}
    if args.input_size:
        # Every backbone takes `image_shape` (the decoder's is its output); the counter then
        # traces each model at its own input shape.
        kwargs["image_shape"] = (args.input_size, args.input_size, 3)

    def factory(name):
        return lambda: backbones.get(name, **kwargs)

    limits = {
        "max_macs": args.max_macs,
        "max_flops": args.max_flops,
        "max_params": args.max_params,
        "max_size_mb": args.max_size_mb,
    }
    return check_models([(n, factory(n)) for n in names], limits=limits)
