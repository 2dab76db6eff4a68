"""``kerasface data make-pairs ROOT OUT``: LFW-style verification pairs (and a .bin) from a folder."""

from kerasface.cli.argument_types import integer_at_least


def add_arguments(parser):
    """Add the ``make-pairs`` arguments to an argparse parser."""
    parser.add_argument(
        "root",
        metavar="ROOT",
        help="folder of identity sub-folders ROOT/<identity>/<image> (aligned 112x112 faces); the "
        "pairs file names images relative to it",
    )
    parser.add_argument(
        "out",
        metavar="OUT",
        help="pairs file to write: `a b issame` lines, fold after fold (each fold: same-identity "
        "pairs, then different-identity pairs); evaluate it with `kerasface eval --pairs OUT --root ROOT`",
    )
    parser.add_argument(
        "--folds",
        type=integer_at_least(2),
        default=10,
        metavar="K",
        help="cross-validation folds (default: %(default)s, the LFW protocol; `kerasface eval` "
        "splits a pairs file into 10 folds)",
    )
    parser.add_argument(
        "--pairs-per-fold",
        type=integer_at_least(2),
        default=300,
        metavar="N",
        help="pairs per fold, even: half same-identity, half different-identity "
        "(default: %(default)s, as LFW)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the fold split and the pair draws (default: %(default)s)"
    )
    parser.add_argument(
        "--shared-identities",
        action="store_true",
        help="let every fold draw from all identities; by default each identity is in one fold "
        "only (as in LFW View 2), and too few identities for that is an error",
    )
    parser.add_argument(
        "--bin",
        default=None,
        metavar="OUT.bin",
        help="also write an insightface verification .bin (encoded images + issame) of the pairs",
    )
    return parser


def run(args):
    """Draw the pairs, write them (and the .bin); returns the exit code."""
    from kerasface.evaluation.pair_generation import folder_to_bin, make_pairs

    pairs = make_pairs(
        args.root,
        num_folds=args.folds,
        pairs_per_fold=args.pairs_per_fold,
        seed=args.seed,
        disjoint=not args.shared_identities,
    )
    pairs.write(args.out)
    if pairs.skipped:
        print(f"left out {len(pairs.skipped)} entries that a pairs file cannot name (whitespace or '#')")
    print(f"wrote {args.out}: {pairs.summary()}")
    if args.bin:
        folder_to_bin(args.root, args.out, args.bin, num_folds=args.folds)
        print(f"wrote {args.bin}: {len(pairs)} pairs, {2 * len(pairs)} images")
    return 0
