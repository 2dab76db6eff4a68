"""`kerasface report`: evaluate several models on several sets and write an HTML report."""

import dataclasses
import os
import shlex
import sys

from kerasface.cli.argument_types import far_value, integer_at_least
from kerasface.cli.eval_command import DEFAULT_CACHE_DIR
from kerasface.cli.eval_command import DEFAULT_FARS as REPORT_FARS

MODEL_SPEC_KEYS = ("name", "runtime", "channel_order", "pixel_range", "layout")


@dataclasses.dataclass
class ModelSpec:
    """A parsed ``--model PATH[,key=value,...]`` argument.

    Args:
        path: the model file or run directory.
        name: label in the report (default: the file name without extension, or the folder).
        options: peer-model options (``runtime``, ``channel_order``, ``pixel_range``,
            ``layout``) given in the spec.
        text: the argument as written.
    """

    path: str
    name: str
    options: dict
    text: str


def parse_model_spec(text):
    """``PATH[,key=value,...]`` -> :class:`ModelSpec`; raises ValueError/FileNotFoundError."""
    text = str(text)
    parts = text.split(",")
    # A comma inside the path is kept there: options start at the first `key=` part.
    split = next((i for i in range(1, len(parts)) if "=" in parts[i]), len(parts))
    path = ",".join(parts[:split])
    if not path:
        raise ValueError(f"--model {text!r}: no model path before the options")
    options = {}
    for part in parts[split:]:
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(
                f"--model {text!r}: expected key=value after the path, got {part!r}"
            )
        if key not in MODEL_SPEC_KEYS:
            raise ValueError(
                f"--model {text!r}: unknown key {key!r}; allowed: {', '.join(MODEL_SPEC_KEYS)}"
            )
        if key in options:
            raise ValueError(f"--model {text!r}: key {key!r} given twice")
        if not value:
            raise ValueError(f"--model {text!r}: empty value for {key!r}")
        options[key] = value
    if not os.path.exists(path):
        raise FileNotFoundError(f"--model {text!r}: {path} does not exist")
    name = options.pop("name", None)
    if name is None:
        stripped = os.path.normpath(path)
        base = os.path.basename(stripped)
        name = base if os.path.isdir(stripped) else os.path.splitext(base)[0]
    return ModelSpec(path=path, name=name, options=options, text=text)


def add_arguments(parser):
    """Add the `report` options to an argparse parser."""
    parser.add_argument(
        "--model", action="append", required=True, metavar="PATH[,key=value,...]",
        help="model to evaluate; repeat to compare several. PATH is a .keras file, a `kerasface "
             "train` run directory or a peer .onnx/.tflite file; options: name= (label in the "
             "report), and for peer files runtime=auto|onnxruntime|litert|opencv, "
             "channel_order=rgb|bgr, pixel_range=0-255|0-1|-1-1|kerasface, layout=auto|nchw|nhwc. "
             "E.g. face_recognition_sface_2021dec_int8bq.onnx,name=SFace,runtime=opencv",
    )
    parser.add_argument(
        "--set", action="append", required=True, metavar="[NAME=]FILE[:ROOT]",
        help="verification set; repeat for several: an insightface .bin file, or a pairs text "
             "file with `:ROOT` naming the folder its image paths are relative to (default: the "
             "pairs file's folder); NAME= sets its label",
    )
    parser.add_argument(
        "--out", required=True, help="the HTML report to write (one self-contained file)"
    )
    parser.add_argument(
        "--markdown", default=None, metavar="DIR",
        help="also write the report as DIR/report.md with its figures as PNG files",
    )
    parser.add_argument("--title", default=None, help="report title (default: names the models)")
    parser.add_argument(
        "--flip", action="store_true",
        help="flip test: fuse each embedding with that of the mirrored image",
    )
    parser.add_argument(
        "--batch-size", type=integer_at_least(1), default=64,
        help="images per model call (default: %(default)s)",
    )
    parser.add_argument(
        "--far", type=far_value, nargs="+", default=list(REPORT_FARS), metavar="FAR",
        help="false-accept rates for the TAR@FAR table (default: 1e-1 .. 1e-6); a rate needs "
             "at least 1/FAR impostor pairs and is shown as n/a with the reason otherwise",
    )
    parser.add_argument(
        "--top-k", type=integer_at_least(0), default=8,
        help="worst false accepts and false rejects shown per model and set (default: "
             "%(default)s; 0: none)",
    )
    parser.add_argument(
        "--cache-dir", default=DEFAULT_CACHE_DIR,
        help="folder of .npy embedding caches keyed by model file, options and set, so a second "
             "report is instant (default: %(default)s)",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="neither read nor write embedding caches"
    )
    parser.add_argument(
        "--identify", default=None, metavar="PROBE_ROOT",
        help="also run identification (rank-1/rank-5, CMC) on PROBE_ROOT/<identity>/*.jpg",
    )
    parser.add_argument(
        "--distractors", default=None, metavar="FOLDER|NPY",
        help="distractor gallery for --identify: a folder of face images (embedded by each "
             "model), or a .npy of L2-normalised embeddings (one model's, so only with a single "
             "--model)",
    )
    return parser


def run(args):
    """Evaluate every model on every set, write the report; returns the exit code."""
    from kerasface.evaluation.html_report import write_markdown_report, write_report
    from kerasface.evaluation.set_evaluation import evaluate_set
    from kerasface.evaluation.verification_set import VerificationSet

    if args.distractors and not args.identify:
        return _error("--distractors needs --identify PROBE_ROOT")
    if args.distractors and args.distractors.endswith(".npy") and len(args.model) > 1:
        return _error(
            f"--distractors {args.distractors}: a .npy holds one model's embeddings, but "
            f"{len(args.model)} models are compared; give a folder of distractor images"
        )
    try:
        specs = [parse_model_spec(text) for text in args.model]
    except (ValueError, FileNotFoundError) as error:
        return _error(error)
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        return _error(
            f"several models are named {', '.join(map(repr, duplicates))}; give each a distinct "
            f"name=, e.g. --model PATH,name=LABEL"
        )
    try:
        sets = [VerificationSet.load(spec) for spec in args.set]
    except (OSError, ValueError) as error:
        return _error(error)
    set_names = [vset.name for vset in sets]
    if len(set(set_names)) != len(set_names):
        return _error(f"several sets share a name ({set_names}); label them with NAME=FILE")
    cache_dir = None if args.no_cache else os.path.expanduser(args.cache_dir)

    evaluations, models_info, identification = {}, {}, {}
    for spec in specs:
        try:
            embed_fn, info = _open_model(spec)
        except (OSError, ValueError, TypeError, RuntimeError, ImportError) as error:
            return _error(f"cannot open model {spec.text!r}: {error}")
        models_info[spec.name] = info
        print(f"{spec.name}: {info['description']}")
        evaluations[spec.name] = []
        for vset in sets:
            try:
                evaluation = evaluate_set(
                    embed_fn, vset, flip=args.flip, batch_size=args.batch_size,
                    fars=tuple(args.far), cache_dir=cache_dir, model_id=info["fingerprint"],
                    progress=True,
                )
            except (OSError, ValueError, RuntimeError) as error:
                return _error(f"{spec.name} on {vset.name}: {error}")
            if evaluation.from_cache:
                print(f"  {vset.name}: embeddings read from {evaluation.cache_path}")
            evaluations[spec.name].append(evaluation)
        if args.identify:
            from kerasface.evaluation.embedding_cache import EmbeddingCache
            from kerasface.evaluation.identification import identify_folder

            cache = None if cache_dir is None else EmbeddingCache(cache_dir, info["fingerprint"])
            try:
                identification[spec.name] = identify_folder(
                    embed_fn, args.identify, distractors=args.distractors,
                    batch_size=args.batch_size, flip=args.flip, cache=cache,
                )
            except (OSError, ValueError, RuntimeError) as error:
                return _error(f"{spec.name}: identification on {args.identify}: {error}")

    print()
    print(_summary(evaluations, identification))
    title = args.title or f"kerasface report: {', '.join(names)} on {', '.join(set_names)}"
    command_line = _command_line(args)
    common = dict(identification=identification or None, title=title, models_info=models_info,
                  top_k=args.top_k, command_line=command_line)
    path = write_report(args.out, evaluations, **common)
    print(f"report written to {path}")
    if args.markdown:
        markdown = write_markdown_report(args.markdown, evaluations, **common)
        print(f"Markdown report written to {markdown}")
    return 0


def _open_model(spec):
    """(embed_fn, info dict) for a :class:`ModelSpec`; info names path, description, fingerprint."""
    from kerasface.evaluation.peer_model import model_fingerprint, open_embedder

    embed_fn = open_embedder(spec.path, **spec.options)
    info = {"path": os.path.abspath(spec.path)}
    if spec.options:
        info["options"] = ", ".join(f"{k}={v}" for k, v in spec.options.items())
    info["description"] = _describe(embed_fn)
    info["fingerprint"] = model_fingerprint(spec.path, **spec.options)
    return embed_fn, info


def _describe(embed_fn):
    describe = getattr(embed_fn, "describe", None)
    if callable(describe):
        return str(describe())
    try:
        parameters = f"{embed_fn.count_params():,} parameters"
    except (AttributeError, ValueError):
        parameters = "parameters unknown"
    output = getattr(embed_fn, "output_shape", None)
    dim = f", {output[-1]}-d embeddings" if isinstance(output, tuple) and output else ""
    return f"kerasface Keras model {getattr(embed_fn, 'name', '')}: {parameters}{dim}"


def _summary(evaluations, identification):
    lines = []
    for name, items in evaluations.items():
        for evaluation in items:
            result = evaluation.result
            tars = ", ".join(
                f"TAR@{far:.0e} {'n/a' if point.reason else f'{100 * point.tar:.2f}%'}"
                for far, point in list(result.tar_at_far.items())[:3]
            )
            lines.append(
                f"{name} on {evaluation.set.name}: accuracy {100 * result.accuracy:.2f}% +- "
                f"{100 * result.accuracy_std:.2f}, AUC {result.auc:.4f}, {tars}"
            )
    for name, result in identification.items():
        lines.append(f"{name}: {result.summary()}")
    return "\n".join(lines)


def _command_line(args):
    """The `kerasface report` invocation equivalent to ``args`` (for the report header)."""
    words = ["kerasface", "report"]
    for text in args.model:
        words += ["--model", text]
    for text in args.set:
        words += ["--set", text]
    words += ["--out", args.out]
    if args.title:
        words += ["--title", args.title]
    if args.flip:
        words.append("--flip")
    if args.batch_size != 64:
        words += ["--batch-size", str(args.batch_size)]
    if args.far != list(REPORT_FARS):
        words += ["--far", *(f"{far:g}" for far in args.far)]
    if args.identify:
        words += ["--identify", args.identify]
    if args.distractors:
        words += ["--distractors", args.distractors]
    if args.markdown:
        words += ["--markdown", args.markdown]
    if args.top_k != 8:
        words += ["--top-k", str(args.top_k)]
    if args.no_cache:
        words.append("--no-cache")
    elif args.cache_dir != DEFAULT_CACHE_DIR:
        words += ["--cache-dir", args.cache_dir]
    return " ".join(shlex.quote(str(word)) for word in words)


def _error(message):
    print(f"kerasface report: error: {message}", file=sys.stderr)
    return 2
