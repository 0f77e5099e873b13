"""Timing on this host: an op's int8 micro-model (`micro_model`,
`int8_flatbuffer`), the empty model whose invoke is subtracted from every
op's (`null_flatbuffer`), a flatbuffer's LiteRT interpreter
(`interpreter`: `tflite_bench.host.load_interpreter`) and the interleaved
timer (`time_interleaved`: `tflite_bench.timer`), which the table's
measurements, `tflite_bench` and the benchmarks share. `cpu_name` and
`runtime_name` name the target a table belongs to.
"""

import importlib.metadata

import keras
import numpy as np

from keras_evosynth import rewrites
from keras_evosynth.compact import float32_policy
from keras_evosynth.latency.ops import _plan
from tflite_bench.host import fill_inputs, load_interpreter
from tflite_bench.timer import time_interleaved

__all__ = ["cpu_name", "float32_flatbuffer", "int8_flatbuffer", "interpreter", "micro_model",
           "null_flatbuffer", "runtime_name", "time_interleaved"]


def micro_model(signature, cin, cout):
    """A plain float32 Keras model that computes one op at given channel
    counts (built in float32 whatever the global dtype policy)."""
    with float32_policy():
        return _micro_model(signature, cin, cout)


def _micro_model(signature, cin, cout):
    kind = signature["op"]
    layers = keras.layers
    if signature.get("rewrite") == "space_to_depth":
        x = keras.Input(batch_shape=(1, *signature["input"], cin))
        config = {"filters": cout, "kernel_size": signature["kernel"],
                  "activation": signature["activation"]}
        return keras.Model(x, rewrites.apply_space_to_depth(x, _plan(signature), config,
                                                            "conv")[0])
    if kind in ("conv2d", "depthwise"):
        x = keras.Input(batch_shape=(1, *signature["input"], cin))
        common = {
            "strides": signature["strides"],
            "padding": signature["padding"],
            "dilation_rate": signature["dilation"],
            "activation": signature["activation"],
        }
        if kind == "conv2d":
            y = layers.Conv2D(cout, signature["kernel"], **common)(x)
        else:
            y = layers.DepthwiseConv2D(
                signature["kernel"], depth_multiplier=signature["multiplier"], **common
            )(x)
        return keras.Model(x, y)
    if kind == "dense":
        x = keras.Input(batch_shape=(1, *signature["input"], cin))
        return keras.Model(x, layers.Dense(cout, activation=signature["activation"])(x))
    cls = getattr(layers, kind)
    parts = signature["inputs"]
    if kind == "Concatenate":
        widths = [cin // len(parts) + (i < cin % len(parts)) for i in range(len(parts))]
        widths = [max(1, w) for w in widths]
    else:
        widths = [cin if p["width"] is None else p["width"] for p in parts]
    inputs = [keras.Input(batch_shape=(1, *p["spatial"], w))
              for p, w in zip(parts, widths, strict=True)]
    layer = cls.from_config(signature["config"])
    y = layer(inputs if len(inputs) > 1 else inputs[0])
    if isinstance(layer, layers.BatchNormalization):  # non-trivial statistics
        rng = np.random.default_rng(0)
        layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32")
                           for w in layer.get_weights()])
    return keras.Model(inputs, y)


def int8_flatbuffer(model, seed=0):
    """Full-integer int8 flatbuffer with int8 inputs and outputs, calibrated
    on random data (`export_litert`'s converter)."""
    from keras_evosynth.export import _convert

    rng = np.random.default_rng(seed)
    data = [rng.uniform(-1, 1, (4, *x.shape[1:])).astype("float32") for x in model.inputs]
    return _convert(model, data, "int8", int8_io=True, allow_float_ops=False)


def float32_flatbuffer(model):
    """The float32 flatbuffer of `model` (`export_litert`'s converter, no
    quantization), to time an op against its int8 form."""
    from keras_evosynth.export import _convert

    return _convert(model, None, "float32", int8_io=False, allow_float_ops=True)


def null_flatbuffer():
    """The empty model (one int8 ReLU on 8 values), whose invoke time is
    subtracted from every op's."""
    with float32_policy():
        x = keras.Input(batch_shape=(1, 1, 1, 8))
        model = keras.Model(x, keras.layers.ReLU()(x))
    return int8_flatbuffer(model)


def interpreter(flatbuffer, threads):
    """An allocated LiteRT interpreter (XNNPACK) of `flatbuffer` with random
    inputs set (`tflite_bench.host.load_interpreter`, which hides "Created
    TensorFlow Lite XNNPACK delegate"; `fill_inputs`)."""
    interp = load_interpreter(flatbuffer, threads)
    fill_inputs(interp)
    return interp


def runtime_name():
    try:
        return f"ai-edge-litert {importlib.metadata.version('ai-edge-litert')}"
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "ai-edge-litert unknown"


def cpu_name():
    from tflite_bench.bench import cpu_model

    return cpu_model() or "unknown CPU"
