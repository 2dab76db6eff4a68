"""The ``kerasface`` command line."""

import argparse
import importlib
import os
import sys

# subcommand -> (module under kerasface.cli, one-line help)
COMMANDS = {
    "quickstart": ("quickstart_command", "train, evaluate and export a model end to end (synthetic faces by default)"),
    "train": ("train_command", "train a recipe with model.fit (checkpoints, resume, TensorBoard)"),
    "data": ("data_command", "datasets: `data convert` (folders/RecordIO -> TFRecord/RecordIO), `data info`, `data make-pairs`"),
    "align": ("align_command", "detect and align raw photos to 112x112 ArcFace crops (MTCNN, 5-point similarity)"),
    "eval": ("eval_command", "verification (10-fold accuracy, TAR@FAR to 1e-6, ROC) on several sets, identification with distractors (CMC), video sets; kerasface or third-party ONNX/TFLite models"),
    "report": ("report_command", "self-contained HTML report comparing models: ROC, TAR@FAR, score histograms, CMC, worst pairs"),
    "embed": ("embed_command", "embed face images (aligned crops, or photos with --align) with any model file -> .npy + names"),
    "compare": ("compare_command", "cosine similarity of two face images with any model file; same/different at --threshold"),
    "export": ("export_command", "export to SavedModel, TFLite (fp32/fp16/int8) or ONNX with a parity check"),
    "quantize": ("quantize_command", "quantisation-aware fine-tuning (fake-quant, distillation from the float model) to a full-integer int8 TFLite file, compared with post-training int8"),
    "budget": ("budget_command", "parameters, MACs, FLOPs and size of backbones against a budget"),
    "bench": ("bench_command", "per-face latency and throughput of one model file (`bench --model FILE --threads 1,2`); `bench zoo`: size, MACs and single-thread CPU latency of every backbone"),
    "plot": ("plot_command", "figures: target-logit curves of the margin heads (`plot heads`)"),
}


def build_parser():
    parser = argparse.ArgumentParser(prog="kerasface", description="Face recognition on TensorFlow/Keras 3.")
    from kerasface import __version__

    parser.add_argument("--version", action="version", version=f"kerasface {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"kerasface.cli.{module_name}")
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(_module=module)
    return parser


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args._module.run(args)
    except (ValueError, OSError) as error:
        print(f"kerasface {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
