"""Count parameters, MACs and FLOPs of a Keras model from its traced TensorFlow graph.

The model is traced once at batch 1 (``training=False``) into a concrete function and the
graph's operations are walked, descending into nested functions (``PartitionedCall`` /
``StatefulPartitionedCall``, e.g. the XLA-compiled grouped convolution of the Keras
TensorFlow backend), ``While`` bodies and ``If``/``Case`` branches. Nothing is executed.

What is counted (shapes are the static, batch-1 shapes of the traced graph):

MACs (multiply-accumulates; what insightface and most papers call "FLOPs" or "MAdds"):
    * ``Conv2D`` / ``Conv3D``: output elements x prod(filter shape[:-1]), i.e.
      ``H_out*W_out*C_out * k_h*k_w*C_in/groups`` (grouped convolutions have a filter of
      ``C_in/groups`` input channels). Positions reading zero padding are counted too.
    * ``DepthwiseConv2dNative``: output elements x ``k_h*k_w``.
    * ``Conv2DBackpropInput`` / ``Conv3DBackpropInputV2`` (transposed convolution): input
      elements (``out_backprop``) x prod(filter shape[:-1]), i.e. every input pixel
      scatters ``k_h*k_w*C_out`` products; the inserted zeros are not counted.
    * ``MatMul`` / ``BatchMatMul*``: output elements x the contracted dimension K.
    * ``Einsum``: product of the sizes of all distinct indices (and broadcast ``...``
      dimensions) for two operands; a one-operand einsum (transpose, trace) is 0 MACs.
    Nothing else contributes MACs: bias, BatchNorm, activations and pooling are not MACs.

FLOPs = 2 x MACs (one multiply + one add each) plus, per op:
    * elementwise ops (``BiasAdd``, ``Add``/``AddV2``, ``Sub``, ``Mul``, ``RealDiv``,
      ``Maximum``, ``Minimum``, ``Neg``, ``Relu``, ``Relu6``, ``Sigmoid``, ``Tanh``,
      ``Rsqrt``, ``Exp``, comparisons, ... see ``ELEMENTWISE_OPS``): 1 per output element,
      whatever their real arithmetic cost. Keras 3 inference BatchNormalization appears as
      ``x * scale + shift`` (2 per element, plus a few per-channel ops on the statistics),
      PReLU as ``relu(x) - alpha * relu(-x)`` pieces (about 5 per element).
    * ``AddN``: (number of inputs - 1) per output element. ``ClipByValue``: 2 per element.
    * ``FusedBatchNorm*`` (inference): 2 per output element (folded scale and shift).
    * ``Softmax`` / ``LogSoftmax``: 3 per element (exp, sum, divide).
    * reductions (``Mean``, ``Sum``, ``Max``, ``Min``, ``Prod``, ``ArgMax``, ...): 1 per
      *input* element (a global average pool costs H*W*C, not C).
    * pooling (``MaxPool``, ``AvgPool``, 3-D variants): output elements x window size.
    Data movement (reshape, transpose, pad, concat, slice, cast, variable reads, ...) is
    free (``FREE_OPS``). Any other op type is listed in ``ModelCost.uncounted_ops`` and an
    op whose needed shapes are not static is listed in ``ModelCost.notes``: nothing is
    dropped silently. ``ModelCost.complete`` says whether the count is exhaustive.

Loops and branches: a ``While`` body is counted ``maximum_iterations`` times when that is a
constant, otherwise once (with a note); ``If``/``Case`` count their most expensive branch.
"""

import dataclasses
import re

import keras
import numpy as np

# Cost 1 FLOP per output element.
ELEMENTWISE_OPS = frozenset(
    {
        "Abs", "Acos", "Acosh", "Add", "AddV2", "Asin", "Asinh", "Atan", "Atan2", "Atanh",
        "BiasAdd", "BiasAddV1", "Ceil", "Cos", "Cosh", "Div", "DivNoNan", "Elu", "Equal",
        "Erf", "Erfc", "Exp", "Expm1", "Floor", "FloorDiv", "FloorMod", "Gelu", "Greater",
        "GreaterEqual", "HardSigmoid", "Inv", "IsFinite", "IsInf", "IsNan", "LeakyRelu",
        "Less", "LessEqual", "Log", "Log1p", "LogicalAnd", "LogicalNot", "LogicalOr",
        "Maximum", "Minimum", "Mod", "Mul", "MulNoNan", "Neg", "NotEqual", "Pow", "RealDiv",
        "Reciprocal", "Relu", "Relu6", "Rint", "Round", "Rsqrt", "Select", "SelectV2", "Selu",
        "Sigmoid", "Sign", "Sin", "Sinh", "Softplus", "Softsign", "Sqrt", "Square",
        "SquaredDifference", "Sub", "Tan", "Tanh", "TruncateDiv", "Xdivy", "Xlogy",
    }
)
# FLOPs per output element for ops that are elementwise but not 1-per-element.
_PER_ELEMENT_OPS = {
    "ClipByValue": 2,
    "FusedBatchNorm": 2,
    "FusedBatchNormV2": 2,
    "FusedBatchNormV3": 2,
    "Softmax": 3,
    "LogSoftmax": 3,
}
REDUCTION_OPS = frozenset(
    {"Mean", "Sum", "Max", "Min", "Prod", "ArgMax", "ArgMin", "EuclideanNorm", "All", "Any"}
)
POOLING_OPS = frozenset({"MaxPool", "MaxPoolV2", "AvgPool", "MaxPool3D", "AvgPool3D"})
FREE_OPS = frozenset(
    {
        "Assert", "BatchToSpaceND", "Bitcast", "BroadcastArgs", "BroadcastGradientArgs",
        "BroadcastTo", "Cast", "CheckNumerics", "Concat", "ConcatV2", "Const",
        "DepthToSpace", "EnsureShape", "ExpandDims", "Fill", "Gather", "GatherNd", "GatherV2",
        "Identity", "IdentityN", "MirrorPad", "NoOp", "OnesLike", "Pack", "Pad", "PadV2",
        "Placeholder", "PlaceholderWithDefault", "PreventGradient", "Print", "PrintV2",
        "Range", "Rank", "ReadVariableOp", "Reshape", "ResourceGather", "Reverse",
        "ReverseV2", "Shape", "ShapeN", "Size", "Slice", "Snapshot", "SpaceToBatchND",
        "SpaceToDepth", "Split", "SplitV", "Squeeze", "StopGradient", "StridedSlice",
        "Tile", "Transpose", "Unpack", "VarHandleOp", "VarIsInitializedOp", "ZerosLike",
    }
)
MAC_OPS = frozenset(
    {
        "Conv2D", "Conv3D", "DepthwiseConv2dNative", "Conv2DBackpropInput",
        "Conv3DBackpropInputV2", "MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3",
        "Einsum",
    }
)
_CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})
_WHILE_OPS = frozenset({"While", "StatelessWhile"})
_IF_OPS = frozenset({"If", "StatelessIf"})
_CASE_OPS = frozenset({"Case", "StatelessCase"})
_MAX_DEPTH = 64


@dataclasses.dataclass
class OpCost:
    """Cost of all ops of one type.

    Args:
        count: how many ops of this type were counted (times loop trip counts).
        macs: their multiply-accumulates.
        flops: their floating-point operations.
    """

    count: int = 0
    macs: int = 0
    flops: int = 0


@dataclasses.dataclass
class ModelCost:
    """Parameters and compute of one model at batch 1.

    Args:
        params: all weights, non-trainable BatchNorm statistics included.
        trainable_params: trainable weights only.
        macs: multiply-accumulates of convolutions and matmuls (insightface's "GFLOPs").
        flops: 2 * macs + elementwise, reduction and pooling FLOPs (see module docstring).
        breakdown: op type -> ``OpCost`` for every op type that costs something.
        input_shape: the traced input shape without the batch dimension.
        uncounted_ops: op type -> number of ops whose cost is unknown to the counter.
        notes: human-readable caveats (unresolved shapes, loops counted once, ...).
    """

    params: int
    trainable_params: int
    macs: int
    flops: int
    breakdown: dict
    input_shape: tuple
    uncounted_ops: dict = dataclasses.field(default_factory=dict)
    notes: list = dataclasses.field(default_factory=list)

    @property
    def non_trainable_params(self):
        return self.params - self.trainable_params

    @property
    def complete(self):
        """True when every op was either costed or known to be free."""
        return not self.uncounted_ops and not self.notes


class _Accumulator:
    def __init__(self):
        self.breakdown = {}
        self.uncounted_ops = {}
        self.notes = []

    @property
    def macs(self):
        return sum(c.macs for c in self.breakdown.values())

    @property
    def flops(self):
        return sum(c.flops for c in self.breakdown.values())

    def add(self, op_type, macs, flops, times=1):
        entry = self.breakdown.setdefault(op_type, OpCost())
        entry.count += times
        entry.macs += macs * times
        entry.flops += flops * times

    def merge(self, other, times=1):
        for op_type, cost in other.breakdown.items():
            entry = self.breakdown.setdefault(op_type, OpCost())
            entry.count += cost.count * times
            entry.macs += cost.macs * times
            entry.flops += cost.flops * times
        for op_type, n in other.uncounted_ops.items():
            self.uncounted_ops[op_type] = self.uncounted_ops.get(op_type, 0) + n * times
        self.notes.extend(n for n in other.notes if n not in self.notes)


class _UnknownShape(Exception):
    pass


def _dims(tensor):
    shape = tensor.shape
    if shape.rank is None or any(d is None for d in shape.as_list()):
        raise _UnknownShape(f"{tensor.name} has shape {shape}")
    return shape.as_list()


def _numel(tensor):
    return int(np.prod(_dims(tensor), dtype=np.int64))


def _einsum_macs(op):
    equation = op.get_attr("equation").decode()
    operands, _, output = equation.replace(" ", "").partition("->")
    specs = operands.split(",")
    if len(specs) != 2:
        return 0
    sizes = {}
    for spec, tensor in zip(specs, op.inputs):
        dims = _dims(tensor)
        letters = spec.replace("...", "")
        n_ellipsis = len(dims) - len(letters)
        i = 0
        for part in re.findall(r"\.\.\.|[A-Za-z]", spec):
            if part == "...":
                i += n_ellipsis
                continue
            sizes[part] = max(sizes.get(part, 1), dims[i])
            i += 1
    macs = int(np.prod(list(sizes.values()), dtype=np.int64))
    if "..." in operands:
        # Broadcast batch dimensions: take them from the output where they survive.
        out_dims = _dims(op.outputs[0])
        out_letters = output.replace("...", "")
        n_ellipsis = len(out_dims) - len(out_letters)
        start = output.find("...")
        if start >= 0:
            before = len(re.findall(r"[A-Za-z]", output[:start]))
            macs *= int(np.prod(out_dims[before : before + n_ellipsis], dtype=np.int64))
    return macs


def _macs(op):
    op_type = op.type
    if op_type in ("Conv2D", "Conv3D"):
        return _numel(op.outputs[0]) * int(np.prod(_dims(op.inputs[1])[:-1]))
    if op_type == "DepthwiseConv2dNative":
        kh, kw = _dims(op.inputs[1])[:2]
        return _numel(op.outputs[0]) * kh * kw
    if op_type in ("Conv2DBackpropInput", "Conv3DBackpropInputV2"):
        return _numel(op.inputs[2]) * int(np.prod(_dims(op.inputs[1])[:-1]))
    if op_type == "MatMul":
        a = _dims(op.inputs[0])
        k = a[0] if op.get_attr("transpose_a") else a[1]
        return _numel(op.outputs[0]) * k
    if op_type.startswith("BatchMatMul"):
        a = _dims(op.inputs[0])
        k = a[-2] if op.get_attr("adj_x") else a[-1]
        return _numel(op.outputs[0]) * k
    if op_type == "Einsum":
        return _einsum_macs(op)
    raise AssertionError(op_type)


def _pool_window(op):
    if op.type == "MaxPoolV2":
        from tensorflow.python.framework import tensor_util

        ksize = tensor_util.constant_value(op.inputs[1])
        if ksize is None:
            raise _UnknownShape(f"{op.name} has a non-constant window size")
    else:
        ksize = op.get_attr("ksize")
    return int(np.prod(ksize))


def _op_cost(op):
    """(macs, flops) of one op, or None when the op type is unknown."""
    op_type = op.type
    if op_type in MAC_OPS:
        macs = _macs(op)
        return macs, 2 * macs
    if op_type in ELEMENTWISE_OPS:
        return 0, _numel(op.outputs[0])
    if op_type in _PER_ELEMENT_OPS:
        return 0, _PER_ELEMENT_OPS[op_type] * _numel(op.outputs[0])
    if op_type == "AddN":
        return 0, (len(op.inputs) - 1) * _numel(op.outputs[0])
    if op_type in REDUCTION_OPS:
        return 0, _numel(op.inputs[0])
    if op_type in POOLING_OPS:
        return 0, _numel(op.outputs[0]) * _pool_window(op)
    return None


def _function_graph(graph, name):
    # Nested functions are registered on the graph that calls them (or an outer one);
    # their traced FuncGraphs keep the static shapes, which a FunctionDef alone loses
    # for variable reads.
    g = graph
    while g is not None:
        get = getattr(g, "_get_function", None)
        fn = get(name) if get is not None else None
        if fn is not None and getattr(fn, "graph", None) is not None:
            return fn.graph
        g = getattr(g, "outer_graph", None)
    return None


def _walk(graph, acc, depth=0):
    if depth > _MAX_DEPTH:
        acc.notes.append(f"functions nested deeper than {_MAX_DEPTH} levels were not counted")
        return
    for op in graph.get_operations():
        op_type = op.type
        if op_type in FREE_OPS:
            continue
        if op_type in _CALL_OPS:
            _walk_function(graph, op, op.get_attr("f").name, acc, depth)
        elif op_type in _WHILE_OPS:
            times = _while_trip_count(op)
            body = _Accumulator()
            _walk_function(graph, op, op.get_attr("body").name, body, depth)
            if times is None:
                times = 1
                if body.flops:
                    acc.notes.append(
                        f"{op.name}: loop trip count unknown, body counted once"
                    )
            acc.merge(body, times)
        elif op_type in _IF_OPS or op_type in _CASE_OPS:
            names = (
                [op.get_attr("then_branch").name, op.get_attr("else_branch").name]
                if op_type in _IF_OPS
                else [b.name for b in op.get_attr("branches")]
            )
            branches = []
            for name in names:
                branch = _Accumulator()
                _walk_function(graph, op, name, branch, depth)
                branches.append(branch)
            acc.merge(max(branches, key=lambda b: (b.flops, b.macs)))
        else:
            try:
                cost = _op_cost(op)
            except _UnknownShape as e:
                acc.notes.append(f"{op.type} {op.name}: not counted, {e}")
                continue
            if cost is None:
                acc.uncounted_ops[op_type] = acc.uncounted_ops.get(op_type, 0) + 1
            else:
                acc.add(op_type, *cost)


def _walk_function(graph, op, name, acc, depth):
    fgraph = _function_graph(graph, name)
    if fgraph is None:
        acc.notes.append(f"{op.type} {op.name}: function {name!r} not found, not counted")
        return
    _walk(fgraph, acc, depth + 1)


def _while_trip_count(op):
    # TF2 while loops carry (loop_counter, maximum_iterations, ...) as their first inputs;
    # maximum_iterations is -1 when unbounded.
    from tensorflow.python.framework import tensor_util

    if len(op.inputs) < 2 or op.inputs[1].dtype.name != "int32" or op.inputs[1].shape.rank != 0:
        return None
    value = tensor_util.constant_value(op.inputs[1])
    if value is None or int(value) < 0:
        return None
    return int(value)


def _weight_count(weights):
    seen = set()
    total = 0
    for w in weights:
        if id(w) in seen:
            continue
        seen.add(id(w))
        total += int(np.prod(w.shape, dtype=np.int64))
    return total


def _resolve_input_shape(model, input_shape):
    if input_shape is None:
        inputs = getattr(model, "inputs", None)
        if not inputs:
            raise ValueError(
                f"model {getattr(model, 'name', model)!r} has no known input; pass "
                "`input_shape` (without the batch dimension), e.g. (112, 112, 3)"
            )
        if len(inputs) != 1:
            raise ValueError(
                f"model {model.name!r} has {len(inputs)} inputs; the counter supports "
                "single-input models only"
            )
        input_shape = tuple(inputs[0].shape[1:])
    input_shape = tuple(input_shape)
    if not input_shape or any(
        d is None or isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1
        for d in input_shape
    ):
        raise ValueError(
            "`input_shape` must be positive integers without the batch dimension, "
            f"e.g. (112, 112, 3), got {input_shape}"
        )
    return tuple(int(d) for d in input_shape)


def count_macs(model, input_shape=None):
    """Trace ``model`` at batch 1 and count its parameters, MACs and FLOPs.

    Args:
        model: a Keras model (or layer) taking one float tensor; TensorFlow backend.
        input_shape: input shape without the batch dimension; default the model's own
            input shape, which must then be fully defined.

    Returns:
        A ``ModelCost``. See the module docstring for exactly what is counted.
    """
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"count_macs traces a TensorFlow graph; the Keras backend is {keras.backend.backend()!r}"
        )
    input_shape = _resolve_input_shape(model, input_shape)
    dtype = "float32"
    inputs = getattr(model, "inputs", None)
    if inputs and len(inputs) == 1 and getattr(inputs[0], "dtype", None):
        dtype = inputs[0].dtype
    spec = tf.TensorSpec((1,) + input_shape, dtype)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    acc = _Accumulator()
    _walk(concrete.graph, acc)
    breakdown = dict(sorted(acc.breakdown.items(), key=lambda kv: (-kv[1].flops, kv[0])))
    return ModelCost(
        params=_weight_count(model.weights),
        trainable_params=_weight_count(model.trainable_weights),
        macs=int(acc.macs),
        flops=int(acc.flops),
        breakdown=breakdown,
        input_shape=input_shape,
        uncounted_ops=dict(sorted(acc.uncounted_ops.items())),
        notes=list(acc.notes),
    )


def count_params(model):
    """(total, trainable) parameter counts; non-trainable BatchNorm statistics are in total."""
    return _weight_count(model.weights), _weight_count(model.trainable_weights)
