"""ONNX export through tf2onnx: NHWC float32 ``image`` in, ``embedding`` out, dynamic batch."""

import logging
from pathlib import Path

import tensorflow as tf

from kerasface.export.saved_model_export import (
    INPUT_NAME,
    OUTPUT_NAME,
    check_embedding_model,
    embedding_function,
    export_metadata,
    float32_compute_model,
    image_spec,
    native_output_suppressed,
    write_sidecar,
)

DEFAULT_OPSET = 17
# tf2onnx 1.17 refuses opset 19 and above ("Opset 19 is not supported yet"); below 13 it
# lacks the ops (e.g. ReduceSum with axes as input) a dynamic batch needs.
SUPPORTED_OPSETS = range(13, 19)


def export_onnx(model, path, opset=DEFAULT_OPSET, verbose=False):
    """Convert an embedding model to ONNX with a dynamic batch dimension.

    The graph keeps TensorFlow's NHWC layout: input ``image`` float32 (batch, 112, 112, 3)
    normalised ``(x - 127.5) / 128``; output ``embedding`` float32 (batch, D). Ops that
    tf2onnx cannot map to standard ONNX are an error rather than a file no runtime loads.
    A sidecar ``<path>.json`` records normalisation, embedding size and opset.

    Args:
        model: embedding model, float32 (None, 112, 112, 3) -> (None, D).
        path: output ``.onnx`` file.
        opset: ONNX opset, 13 to 18 (tf2onnx 1.17 has no opset 19+ support).
        verbose: let tf2onnx log its progress.

    Returns:
        ``Path`` of the written file.
    """
    import tf2onnx

    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(
            f"ONNX output path must end in .onnx (runners pick the runtime by suffix), got {path}"
        )
    check_opset(opset)
    embedding_size = check_embedding_model(model)
    spec = image_spec(tf.float32)
    function = tf.function(embedding_function(float32_compute_model(model)), input_signature=[spec])
    model_proto = function_to_onnx(function, spec, model.name, opset, verbose)
    inputs = [i.name for i in model_proto.graph.input]
    outputs = [o.name for o in model_proto.graph.output]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise RuntimeError(
            f"tf2onnx named the graph inputs {inputs} and outputs {outputs}, expected [{INPUT_NAME!r}] -> [{OUTPUT_NAME!r}]"
        )
    path.write_bytes(model_proto.SerializeToString())
    metadata = export_metadata(
        model,
        "onnx",
        embedding_size,
        opset=opset,
        converter=f"tf2onnx {tf2onnx.__version__}",
        ops=sorted({node.op_type for node in model_proto.graph.node}),
    )
    write_sidecar(path, metadata)
    return path


def check_opset(opset):
    """Raises ValueError unless tf2onnx can write ``opset``."""
    if opset not in SUPPORTED_OPSETS:
        import tf2onnx

        raise ValueError(
            f"`opset` must be in {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1} "
            f"(tf2onnx {tf2onnx.__version__} supports up to {SUPPORTED_OPSETS.stop - 1}), got {opset}"
        )


def function_to_onnx(function, spec, model_name, opset=DEFAULT_OPSET, verbose=False):
    """A checked ``onnx.ModelProto`` from a one-input ``tf.function``, batch dimension named "batch".

    Ops tf2onnx leaves without a standard ONNX definition are a ValueError naming them, rather
    than a file no runtime loads.
    """
    import onnx
    import tf2onnx

    logger = logging.getLogger("tf2onnx")
    previous_level = logger.level
    if not verbose:
        logger.setLevel(logging.ERROR)
    try:
        with native_output_suppressed(not verbose):
            model_proto, _ = tf2onnx.convert.from_function(function, input_signature=[spec], opset=opset)
    finally:
        logger.setLevel(previous_level)
    unknown = sorted(
        {
            f"{node.domain + '.' if node.domain else ''}{node.op_type}"
            for node in model_proto.graph.node
            if not onnx.defs.has(node.op_type, max_inclusive_version=opset, domain=node.domain)
        }
    )
    if unknown:
        raise ValueError(
            f"model {model_name!r}: tf2onnx left ops with no ONNX opset {opset} definition: {', '.join(unknown)}; "
            f"replace the layers using them"
        )
    _name_batch_dimension(model_proto)
    onnx.checker.check_model(model_proto)
    return model_proto


def _name_batch_dimension(model_proto):
    # tf2onnx calls the free dimension "unk__123"; a shared, readable name tells runtimes and
    # readers that input and output batch are the same dimension.
    for value in list(model_proto.graph.input) + list(model_proto.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        if not dim.HasField("dim_value"):
            dim.dim_param = "batch"
