"""`export_litert`: compacted model -> verified LiteRT (TFLite) flatbuffer.

Named like Keras 3.15's `model.export(format="litert")`; `export_tflite` is
its deprecated alias (removed in 0.2.0).

The model is first compacted (`keras_evosynth.compact`: evolvable layers
become plain Keras layers with their effective weights, dead channels are
removed), rebuilt for batch 1, converted with `tf.lite.TFLiteConverter`
(full-integer int8 with a representative dataset, or float16 / float32),
checked (no float operators left in an int8 model unless allowed), run with
the LiteRT interpreter (`ai_edge_litert`) on the given data and compared with
the Keras model, then written atomically (temporary file + `os.replace`).

Sub-8-bit synapses (`int4`, ...) are exported as int8 kernels whose values lie
on the coarser grid: the file is not smaller than an int8 one.
"""

import collections
import dataclasses
import os

import keras
import numpy as np

from keras_evosynth._converter import convert
from keras_evosynth._deprecation import warn_renamed
from keras_evosynth._io import write_atomic
from keras_evosynth.channel_analysis import ChannelAnalysis
from tflite_bench.host import run_signature

MODES = ("int8", "float16", "float32")

# Operators that only change the representation at the model's boundaries.
_BOUNDARY_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})


@dataclasses.dataclass(frozen=True)
class OpInfo:
    """One operator of a flatbuffer: builtin name and tensor types."""

    name: str
    input_types: tuple
    output_types: tuple

    @property
    def is_float(self):
        """True when a (non-boundary) operator reads or writes float32."""
        return self.name not in _BOUNDARY_OPS and "FLOAT32" in (
            self.input_types + self.output_types
        )


@dataclasses.dataclass
class ExportReport:
    """What `export_litert` produced and how well it agrees with Keras.

    Attributes:
        path: Where the flatbuffer was written (None if not written).
        mode: `"int8"`, `"float16"` or `"float32"`.
        size_bytes: Flatbuffer size.
        operators: `{builtin name: count}`.
        ops: Every operator as an `OpInfo` (with tensor types).
        max_abs_error: Largest |LiteRT - Keras| over all outputs and samples
            (after dequantizing int8 outputs).
        top1_agreement: Fraction of samples (positions, for dense outputs)
            whose argmax over the last axis agrees, for outputs with more
            than one channel; None if there are none.
        samples: Number of samples compared.
        compaction: The `CompactionReport` of the converted model.
        flatbuffer: The flatbuffer bytes.
    """

    path: str | None
    mode: str
    size_bytes: int
    operators: dict
    ops: list
    max_abs_error: float
    top1_agreement: float | None
    samples: int
    compaction: object
    flatbuffer: bytes = dataclasses.field(repr=False, default=b"")

    @property
    def float_ops(self):
        """Names of operators computing in float32."""
        return sorted({op.name for op in self.ops if op.is_float})

    def to_dict(self):
        """JSON-friendly summary (without the flatbuffer)."""
        return {
            "path": self.path,
            "mode": self.mode,
            "size_bytes": self.size_bytes,
            "operators": dict(self.operators),
            "float_ops": self.float_ops,
            "max_abs_error": self.max_abs_error,
            "top1_agreement": self.top1_agreement,
            "samples": self.samples,
            "params": self.compaction.params_after,
        }


def list_operators(flatbuffer):
    """Operators of a LiteRT flatbuffer, in execution order.

    Args:
        flatbuffer: The model bytes.

    Returns:
        A list of `OpInfo` (builtin operator name, input and output tensor
        types as schema names such as `"INT8"`, `"FLOAT32"`).

    Example:

    >>> import numpy as np
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> buf = export_litert(m, np.ones((2, 3)), mode="float32").flatbuffer
    >>> [op.name for op in list_operators(buf)]
    ['FULLY_CONNECTED']
    """
    from ai_edge_litert import schema_py_generated as schema

    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
    type_names = {v: k for k, v in vars(schema.TensorType).items() if k.isupper()}
    model = schema.Model.GetRootAs(flatbuffer, 0)
    result = []
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)

        def types(indices, graph=graph):
            return tuple(
                type_names.get(graph.Tensors(i).Type(), "?") for i in indices if i >= 0
            )

        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = op_names.get(builtin, f"BUILTIN_{builtin}")
            if name == "CUSTOM":
                name = f"CUSTOM:{code.CustomCode().decode()}"
            result.append(
                OpInfo(name, types(op.InputsAsNumpy()), types(op.OutputsAsNumpy()))
            )
    return result


# ----------------------------------------------------------------- checks
def _check_path(path):
    if path is None:
        return None
    path = os.fspath(path)
    if not path or "\0" in path:
        raise ValueError(f"export_litert: invalid output path {path!r}.")
    if os.path.isdir(path):
        raise IsADirectoryError(f"export_litert: output path {path!r} is a directory.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"export_litert: the folder of {path!r} ({folder}) does not exist."
        )
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"export_litert: the folder {folder} is not writable.")
    return path


def _as_inputs(model, data):
    """Validates `data` against the model inputs; returns a list of arrays."""
    inputs = model.inputs
    if isinstance(data, dict):
        names = list(_input_names(model))
        try:
            data = [data[n] for n in names]
        except KeyError as missing:
            raise ValueError(
                f"export_litert: representative_data has no entry {missing}; "
                f"expected keys {names}."
            ) from None
    elif isinstance(data, (list, tuple)) and len(inputs) > 1:
        data = list(data)
    else:
        data = [data]
    if len(data) != len(inputs):
        raise ValueError(
            f"export_litert: model '{model.name}' has {len(inputs)} inputs, "
            f"representative_data gives {len(data)}."
        )
    arrays = []
    for x, spec in zip(data, inputs, strict=True):
        x = np.asarray(x)
        if x.dtype == object or not np.issubdtype(x.dtype, np.number):
            raise TypeError(
                f"export_litert: representative_data must be numeric, got "
                f"dtype {x.dtype}."
            )
        if x.ndim == 0 or len(x) == 0:
            raise ValueError("export_litert: representative_data is empty.")
        expected = tuple(spec.shape[1:])
        if x.ndim != len(spec.shape) or any(
            e is not None and e != g for e, g in zip(expected, x.shape[1:], strict=True)
        ):
            raise ValueError(
                f"export_litert: representative_data of shape {x.shape} does not "
                f"match the model input {tuple(spec.shape)} (batch first)."
            )
        if not np.isfinite(x).all():
            raise ValueError("export_litert: representative_data holds NaN or Inf.")
        arrays.append(x.astype(np.float32))
    if len({len(x) for x in arrays}) != 1:
        raise ValueError(
            "export_litert: the representative_data arrays differ in length."
        )
    return arrays


def _input_names(model):
    from keras_evosynth._graph import trace

    graph = trace(model)
    for tid in keras.tree.flatten(graph.inputs):
        yield graph.input_names.get(tid, "input_layer")


# ---------------------------------------------------------------- running
def _run_litert(flatbuffer, keras_model, arrays, input_names):
    outputs = run_signature(flatbuffer, dict(zip(input_names, arrays, strict=True)))
    structure = keras_model.output
    if isinstance(structure, dict):
        out_names = sorted(structure)
    else:
        out_names = [f"output_{i}" for i in range(len(keras.tree.flatten(structure)))]
    if len(out_names) == 1 and len(outputs) == 1:
        out_names = list(outputs)
    return [outputs[name] for name in out_names]


def _compare(keras_outputs, litert_outputs):
    max_error, agreements = 0.0, []
    for k, t in zip(keras_outputs, litert_outputs, strict=True):
        k = np.asarray(k, np.float32).reshape(t.shape)
        max_error = max(max_error, float(np.abs(k - t).max()))
        if k.ndim >= 2 and k.shape[-1] > 1:
            agreements.append(float(np.mean(k.argmax(-1) == t.argmax(-1))))
    return max_error, (min(agreements) if agreements else None)


def export_litert(
    model,
    representative_data,
    path=None,
    mode="int8",
    int8_io=False,
    allow_float_ops=False,
    remove_channels=True,
    eval_data=None,
    batch_size=32,
    space_to_depth=None,
):
    """Compacts, converts, verifies and writes a LiteRT flatbuffer.

    Args:
        model: A built Keras model (evolvable or plain, functional or
            Sequential).
        representative_data: Input samples, batch first: an array for a
            single-input model, a list of arrays (or a dict keyed by input
            layer name) otherwise. Used to calibrate int8 activation ranges
            and to compare LiteRT with Keras.
        path: Where to write the `.tflite` file (None: not written; the
            bytes are in the report). Written atomically.
        mode: `"int8"` (full-integer, per-channel int8 weights and int8
            activations), `"float16"` (float16 weights) or `"float32"`.
        int8_io: With `"int8"`, also make the model's inputs and outputs
            int8 (otherwise they are float32 with QUANTIZE/DEQUANTIZE).
        allow_float_ops: With `"int8"`, let operators without an int8
            kernel fall back to float instead of failing.
        remove_channels: Compact (`compact`); False keeps every channel and
            only replaces evolvable layers (`strip_evolvable`), e.g. to measure the
            masked model.
        eval_data: Inputs to compare LiteRT with Keras on (same format as
            `representative_data`; default: `representative_data`), e.g. a
            held-out split.
        batch_size: Batch size of the Keras reference predictions.
        space_to_depth: Strided convolutions to deploy as `SpaceToDepth` + a
            stride-1 convolution, an exact rewrite (`compact`'s argument: layer
            names, True for all, or a `LatencyTable` to apply those it measured
            faster). The report's `compaction.space_to_depth` lists them.

    Returns:
        An `ExportReport`.

    Raises:
        TypeError: `model` is not a Keras model, or non-numeric data.
        ValueError: Bad `mode`/`int8_io`, empty or mis-shaped data, bad path.
        OSError: The output folder is missing or not writable.
        RuntimeError: Conversion failed, or an int8 model still holds float
            operators and `allow_float_ops` is False. Nothing is written.

    Example:

    >>> import numpy as np
    >>> from keras_evosynth import evolvable
    >>> model = evolvable(keras.Sequential([
    ...     keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
    ...     keras.layers.Flatten(), keras.layers.Dense(3)]), precision="int8")
    >>> data = np.random.rand(16, 8, 8, 1).astype("float32")
    >>> report = export_litert(model, data)
    >>> report.operators["CONV_2D"], report.float_ops
    (1, [])
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"export_litert() expects a keras.Model, got {type(model).__name__}."
        )
    if mode not in MODES:
        raise ValueError(f"export_litert: mode must be one of {MODES}, got {mode!r}.")
    if int8_io and mode != "int8":
        raise ValueError(f"export_litert: int8_io=True needs mode='int8', got {mode!r}.")
    path = _check_path(path)
    arrays = _as_inputs(model, representative_data)
    checks = arrays if eval_data is None else _as_inputs(model, eval_data)
    compactor = ChannelAnalysis(model, remove_channels=remove_channels)
    compacted = compactor.build(
        batch_shapes=[(1,) + x.shape[1:] for x in arrays], space_to_depth=space_to_depth
    )
    input_names = list(_input_names(compacted))
    flatbuffer = convert(
        compacted, arrays, mode, int8_io, allow_float_ops, compactor.report.intact
    )
    ops = list_operators(flatbuffer)
    floats = sorted({op.name for op in ops if op.is_float})
    if mode == "int8" and floats and not allow_float_ops:
        raise RuntimeError(
            f"export_litert: the int8 model still computes in float32 in {floats}; "
            "pass allow_float_ops=True to accept that. Nothing was written."
        )
    reference = model.predict(
        checks if len(checks) > 1 else checks[0], batch_size=batch_size, verbose=0
    )
    try:
        litert = _run_litert(flatbuffer, compacted, checks, input_names)
    except RuntimeError as error:
        if "XNNPACK" not in str(error):
            raise
        raise RuntimeError(
            f"export_litert: LiteRT's XNNPACK delegate refuses the {mode} model of "
            f"'{model.name}' ({str(error).strip()}). XNNPACK requires every int8 "
            "requantization scale (input scale x weight scale / output scale) below 256; "
            "a filter whose output is (nearly) constant on the representative data has a "
            "tiny output scale. Calibrate with more varied representative_data, or train "
            "the offspring so no filter is left reading only constant channels. Nothing "
            "was written."
        ) from None
    max_error, top1 = _compare(keras.tree.flatten(reference), litert)
    if path is not None:
        write_atomic(path, flatbuffer)
    return ExportReport(
        path=path,
        mode=mode,
        size_bytes=len(flatbuffer),
        operators=dict(collections.Counter(op.name for op in ops)),
        ops=ops,
        max_abs_error=max_error,
        top1_agreement=top1,
        samples=len(checks[0]),
        compaction=compactor.report,
        flatbuffer=flatbuffer,
    )


def export_tflite(*args, **kwargs):
    """Deprecated alias of `export_litert` (same arguments), removed in
    0.2.0: Keras 3.15 calls the format "litert" (`model.export(format=
    "litert")`). Warns once per process."""
    warn_renamed("export_tflite", "export_litert")
    return export_litert(*args, **kwargs)
