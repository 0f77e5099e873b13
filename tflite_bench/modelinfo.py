"""Static facts about a .tflite file: size and operator counts by precision.

Reads the flatbuffer with the schema shipped in `ai_edge_litert` (no
interpreter, no delegate), so the counts describe the model as converted,
whatever runtime later fuses or delegates.
"""

import collections
import dataclasses
import os

from ai_edge_litert import schema_py_generated as schema

from tflite_bench.errors import BenchError

# Tensor element types, by how an operator that touches them computes.
FLOAT_TYPES = frozenset({"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16"})
QUANTIZED_TYPES = frozenset({"INT8", "UINT8", "INT16", "INT4", "UINT4", "INT2"})
OP_CLASSES = ("int8", "float", "mixed", "other")

_TYPE_NAMES = {
    value: name for name, value in vars(schema.TensorType).items()
    if not name.startswith("_")
}
_OP_NAMES = {
    value: name for name, value in vars(schema.BuiltinOperator).items()
    if not name.startswith("_")
}


def classify_op(tensor_types):
    """Classifies one operator by the element types of its tensors.

    Args:
        tensor_types: Type names (`"INT8"`, `"FLOAT32"`, `"INT32"`, ...) of
            the operator's inputs and outputs.

    Returns:
        `"int8"` when it touches quantized integer tensors and no float ones,
        `"float"` for float tensors and no quantized ones, `"mixed"` for both
        (QUANTIZE/DEQUANTIZE, hybrid dynamic-range kernels) and `"other"` for
        neither (shape arithmetic on INT32, booleans).

    Example:

    >>> classify_op(["INT8", "INT8", "INT32", "INT8"])
    'int8'
    >>> classify_op(["FLOAT32", "INT8"])
    'mixed'
    """
    types = set(tensor_types)
    quantized = bool(types & QUANTIZED_TYPES)
    floating = bool(types & FLOAT_TYPES)
    if quantized and floating:
        return "mixed"
    if quantized:
        return "int8"
    if floating:
        return "float"
    return "other"


@dataclasses.dataclass
class ModelInfo:
    """What `inspect_model` finds in a .tflite file.

    Attributes:
        path: The file.
        size_bytes: File size in bytes.
        ops: Operator count per class (`OP_CLASSES`, see `classify_op`),
            over all subgraphs.
        op_types: Operator count per operator name (`"CONV_2D"`, ...).
    """

    path: str
    size_bytes: int
    ops: dict
    op_types: dict

    @property
    def num_ops(self):
        """Total number of operators."""
        return sum(self.ops.values())


def read_flatbuffer(path):
    """Reads a .tflite file and checks its flatbuffer identifier.

    Args:
        path: File path.

    Returns:
        The file's bytes.

    Raises:
        BenchError: If the file is missing, unreadable, or not a TFLite
            flatbuffer (no `TFL3` identifier).

    Example:

    >>> read_flatbuffer("missing.tflite")
    Traceback (most recent call last):
    ...
    tflite_bench.errors.BenchError: missing.tflite: file not found
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BenchError(f"{path}: file not found")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BenchError(f"{path}: cannot read ({e.strerror})") from e
    if len(data) < 8 or not schema.Model.ModelBufferHasIdentifier(data, 0):
        raise BenchError(
            f"{path}: not a TFLite flatbuffer (no 'TFL3' identifier; "
            "corrupt or not a .tflite file)"
        )
    return data


def _tensor_type_names(subgraph, length, index_at):
    names = []
    for j in range(length):
        index = index_at(j)
        if index < 0:  # optional input left out
            continue
        tensor_type = subgraph.Tensors(int(index)).Type()
        names.append(_TYPE_NAMES.get(tensor_type, str(tensor_type)))
    return names


def _op_name(opcode):
    code = max(opcode.BuiltinCode(), opcode.DeprecatedBuiltinCode())
    if code == schema.BuiltinOperator.CUSTOM and opcode.CustomCode():
        return opcode.CustomCode().decode("utf-8", "replace")
    return _OP_NAMES.get(code, f"OP_{code}")


def inspect_model(path):
    """Counts a .tflite model's operators by precision class and by name.

    Args:
        path: Path of the .tflite file.

    Returns:
        A `ModelInfo`.

    Raises:
        BenchError: If the file is missing or not a valid TFLite flatbuffer.

    Example:

    >>> info = inspect_model("model_int8.tflite")  # doctest: +SKIP
    >>> info.ops  # doctest: +SKIP
    {'int8': 6, 'float': 0, 'mixed': 0, 'other': 2}
    """
    data = read_flatbuffer(path)
    ops = dict.fromkeys(OP_CLASSES, 0)
    op_types = collections.Counter()
    try:
        model = schema.Model.GetRootAs(data, 0)
        for s in range(model.SubgraphsLength()):
            subgraph = model.Subgraphs(s)
            for o in range(subgraph.OperatorsLength()):
                op = subgraph.Operators(o)
                op_types[_op_name(model.OperatorCodes(op.OpcodeIndex()))] += 1
                types = _tensor_type_names(subgraph, op.InputsLength(), op.Inputs)
                types += _tensor_type_names(
                    subgraph, op.OutputsLength(), op.Outputs
                )
                ops[classify_op(types)] += 1
    except Exception as e:  # a truncated buffer fails anywhere in here
        raise BenchError(
            f"{os.fspath(path)}: corrupt TFLite flatbuffer (truncated or damaged)"
        ) from e
    return ModelInfo(
        path=os.fspath(path),
        size_bytes=len(data),
        ops=ops,
        op_types=dict(sorted(op_types.items())),
    )
