"""``kerasface plot TARGET``: figures about kerasface components (``heads``: target-logit curves)."""

import sys

from kerasface.cli.argument_types import integer_at_least


def _add_heads_arguments(parser):
    parser.add_argument(
        "--names",
        nargs="+",
        metavar="NAME",
        default=None,
        help="heads to draw, as registered in kerasface.heads (default: every registered head); "
        "heads that cannot be drawn at their defaults are listed as skipped with the reason",
    )
    parser.add_argument("--out", required=True, metavar="PNG", help="PNG file to write, e.g. heads.png")
    parser.add_argument(
        "--theta-points",
        type=integer_at_least(2),
        default=361,
        metavar="N",
        help="points over theta in [0, pi] per curve (default: %(default)s, i.e. every 0.5 degrees)",
    )
    parser.add_argument(
        "--x-unit",
        choices=("degrees", "radians"),
        default="degrees",
        help="unit of the theta axis (default: %(default)s)",
    )
    parser.add_argument(
        "--table-out",
        default=None,
        metavar="MD",
        help="also write the printed Markdown table (target logit at 0..180 degrees, monotone) to this file",
    )


def _run_heads(args):
    from kerasface.visualization import head_label, head_target_curves, plot_head_curves, target_logit_table

    try:
        curves, skipped = head_target_curves(args.names, num_points=args.theta_points)
    except ValueError as e:
        print(f"kerasface plot heads: error: --names: {e}", file=sys.stderr)
        return 2
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    if not curves:
        print("kerasface plot heads: error: no head could be drawn (all skipped, see above)", file=sys.stderr)
        return 1
    path = plot_head_curves(curves, args.out, labels={n: head_label(n) for n in curves}, x_unit=args.x_unit)
    table = target_logit_table(curves)
    print("Unscaled target logit (s = 1) at each head's defaults; monotone = never rises with theta.\n")
    print(table)
    if skipped:
        print("\nskipped: " + "; ".join(f"{n} ({r})" for n, r in skipped.items()))
    if args.table_out:
        with open(args.table_out, "w", encoding="utf-8") as f:
            f.write(table + "\n")
    print(f"\nwrote {path} ({len(curves)} head(s), {len(skipped)} skipped)")
    return 0


# target -> (add its arguments, run it, one-line help); later targets (roc, ...) go here.
TARGETS = {
    "heads": (
        _add_heads_arguments,
        _run_heads,
        "target-logit curves over theta in [0, pi] of every margin head at its defaults, with cos(theta)",
    ),
}


def add_arguments(parser):
    """Add the ``plot`` targets (sub-commands) to an argparse parser."""
    targets = parser.add_subparsers(dest="plot_target", metavar="TARGET", required=True)
    for name, (add, _, help_text) in TARGETS.items():
        add(targets.add_parser(name, help=help_text, description=help_text))
    return parser


def run(args):
    target = getattr(args, "plot_target", None)
    if target not in TARGETS:
        print(f"kerasface plot: error: unknown target {target!r}; available: {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    return TARGETS[target][1](args)
