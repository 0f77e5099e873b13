"""Timing on this host: an op's int8 micro-model (`micro_model`,
`int8_flatbuffer`), the empty model whose invoke is subtracted from every
op's (`null_flatbuffer`), a flatbuffer's LiteRT interpreter
(`interpreter`: `tflite_bench.host.load_interpreter`) and the interleaved
timer (`time_interleaved`: `tflite_bench.timer`), which the table's
measurements, `tflite_bench` and the benchmarks share. `cpu_name` and
`runtime_name` name the target a table belongs to. `Converters` converts
micro-models in worker processes.
"""

import concurrent.futures
import contextlib
import importlib.metadata
import multiprocessing
import os
import sys
import types
import warnings

import keras
import numpy as np

from keras_evosynth import rewrites
from keras_evosynth.compact import float32_policy
from keras_evosynth.latency.ops import _plan
from tflite_bench.host import fill_inputs, load_interpreter
from tflite_bench.timer import time_interleaved

__all__ = ["Converters", "cpu_name", "float32_flatbuffer", "int8_flatbuffer", "interpreter",
           "micro_model", "null_flatbuffer", "op_flatbuffer", "runtime_name", "time_interleaved",
           "whole_flatbuffer"]


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
    from keras_evosynth._converter import convert

    rng = np.random.default_rng(seed)
    data = [rng.uniform(-1, 1, (4, *x.shape[1:])).astype("float32") for x in model.inputs]
    return convert(model, data, "int8", int8_io=True, allow_float_ops=False, signatures=False)


def float32_flatbuffer(model):
    """The float32 flatbuffer of `model` (`export_litert`'s converter, no
    quantization), to time an op against its int8 form."""
    from keras_evosynth._converter import convert

    return convert(model, None, "float32", int8_io=False, allow_float_ops=True,
                   signatures=False)


def null_flatbuffer():
    """The empty model (one int8 ReLU on 8 values), whose invoke time is
    subtracted from every op's."""
    with float32_policy():
        x = keras.Input(batch_shape=(1, 1, 1, 8))
        model = keras.Model(x, keras.layers.ReLU()(x))
    return int8_flatbuffer(model)


def op_flatbuffer(signature, cin, cout):
    """The int8 flatbuffer of the micro-model of an op `signature` at `cin`
    (x `cout`) channels: what a `Converters` worker computes."""
    return int8_flatbuffer(micro_model(signature, cin, cout))


def whole_flatbuffer(model, data):
    """The int8 flatbuffer of a whole (plain) model with float inputs and
    outputs, float kernels allowed, calibrated on `data` (a list of input
    arrays): how the table's anchors and reference are timed."""
    from keras_evosynth._converter import convert

    return convert(model, data, "int8", int8_io=False, allow_float_ops=True, signatures=False)


def _portable(model):
    """True when every layer of `model` is a Keras or keras_evosynth class,
    which a spawned worker can unpickle (a user's custom layer may live in a
    module the worker cannot import)."""
    return all(type(layer).__module__.startswith(("keras.", "keras_evosynth."))
               for layer in model._flatten_layers(include_self=False))


class Converters:
    """Converts micro-models (`op_flatbuffer`) in `workers` processes.

    The TFLite converter runs on one core and takes about three quarters
    of measuring a table (profiled on the zoo benchmark's networks), while
    timing, which must run alone, happens between conversion batches; so
    on a host with idle cores the conversions go to a pool of spawned
    processes (started on first use, each importing TensorFlow once, a few
    seconds) and come back in order. `workers <= 1` converts in this
    process. A context manager: the processes end with it.
    """

    def __init__(self, workers):
        self.workers, self._pool = workers, None

    def map(self, jobs):
        """`[op_flatbuffer(*job) for job in jobs]`, in the pool when there is
        one (in this process from the first job on, should a worker die)."""
        if self.workers > 1 and len(jobs) >= 2:
            self._start()
            with _main_hidden():  # workers are spawned on submit
                futures = [self._pool.submit(op_flatbuffer, *job) for job in jobs]
            try:
                return [future.result() for future in futures]
            except concurrent.futures.process.BrokenProcessPool:
                self._broken()
        return [op_flatbuffer(*job) for job in jobs]

    def convert_wholes(self, jobs):
        """`[whole_flatbuffer(model, data) ...]` for `jobs` of `(model,
        data)`, in the pool when there is one (the model travels pickled;
        one that does not pickle is converted here); a conversion's
        RuntimeError is returned in its place, not raised."""
        def here(model, data):
            try:
                return whole_flatbuffer(model, data)
            except RuntimeError as error:
                return error

        if self.workers <= 1 or len(jobs) < 2 or not all(_portable(m) for m, _ in jobs):
            return [here(*job) for job in jobs]
        self._start()
        with _main_hidden():
            futures = [self._pool.submit(whole_flatbuffer, *job) for job in jobs]
        results = []
        for future, job in zip(futures, jobs, strict=True):
            try:
                results.append(future.result())
            except concurrent.futures.process.BrokenProcessPool:
                self._broken()
                results.append(here(*job))
            except RuntimeError as error:
                results.append(error)
            except Exception:  # noqa: BLE001 - e.g. a model that does not pickle
                results.append(here(*job))
        return results

    def _broken(self):
        """A worker died (killed, out of memory): the rest converts here."""
        if self.workers > 1:
            warnings.warn("LatencyTable: a conversion worker process died; converting the rest "
                          "in this process.", stacklevel=4)
        self.__exit__()
        self.workers = 1

    def _start(self):
        if self._pool is None:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the workers' TensorFlow
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"))

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


@contextlib.contextmanager
def _main_hidden():
    """Hides the caller's `__main__` from the processes spawned meanwhile.

    A spawned process imports the parent's main script first (as
    `__mp_main__`): a user's script that measures a table at top level (no
    `if __name__ == "__main__":`) would build its model again in every
    worker and fail there. The workers only need keras_evosynth's
    functions, so they start without the script.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


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
