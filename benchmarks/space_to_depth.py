"""Does the exact space-to-depth rewrite of strided stems pay on this host?

For each network (the CPU-default DetectNet, whose first layer is GoogLeNet's
7x7/2 convolution on RGB; keras.applications MobileNetV2 with its 3x3/2 stem;
`weights=None`), the int8 flatbuffer is exported three times: directly, with
the stem rewritten in blocks of its stride (`space_to_depth=[stem]`), and in
blocks of twice its stride computing 2x2 outputs each
(`space_to_depth={stem: 2}`, "wide"); the stem is also exported alone in the
three forms. All flatbuffers of a network are timed in this process,
interleaved round by round (LiteRT, XNNPACK, 1 thread, batch 1, mean of two
interpreters each), and the table shows the rewrites' speedups together with
what `LatencyTable.space_to_depth_layers` would choose.

    python -m benchmarks.space_to_depth --json benchmarks/results/space_to_depth.json
"""


import keras
import numpy as np
from absl import app, flags, logging

from benchmarks.common import define_timing_flags, save_result, time_side_by_side
from keras_evosynth import evolvable
from keras_evosynth.export import export_litert
from keras_evosynth.latency import LatencyTable
from keras_evosynth.latency.timing import cpu_name
from recipes import apputil

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    """Defines the benchmark's absl flags (called by `__main__` only)."""
    define = {"flag_values": flag_values}
    define_timing_flags(flag_values, "space_to_depth", 15, "weights and data",
                        cache_dir="bench_out/latency_cache")
    flags.DEFINE_list("models", ["detectnet", "mobilenet_v2"], "Networks.", **define)
    apputil.define_verbose(flag_values)


def build(name, rng):
    """`(model, stem layer name, calibration data)`."""
    if name == "detectnet":
        from recipes.detectnet.model import detectnet

        model = detectnet(input_size=(128, 384), width=0.25, batch_norm="all")
        return model, "conv1_7x7_s2", rng.uniform(0, 255, (8, 128, 384, 3))
    if name == "mobilenet_v2":
        model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3),
                                               classes=10)
        return model, "Conv1", rng.uniform(-1, 1, (8, 224, 224, 3))
    raise app.UsageError(f"unknown model {name!r}")


def stem_only(model, stem):
    """The model cut after its stem convolution (and what fuses into it)."""
    layer = model.get_layer(stem)
    return keras.Model(model.inputs, layer.output, name=f"{model.name}_stem")


def run_model(name):
    rng = np.random.default_rng(FLAGS.seed)
    model, stem, data = build(name, rng)
    data = data.astype("float32")
    table = LatencyTable.measure(evolvable(model), cache_dir=FLAGS.cache_dir)
    chosen = table.space_to_depth_layers(evolvable(model))
    flatbuffers, labels = [], []
    forms = {"direct": None, "rewritten": [stem], "wide": {stem: 2}}
    for label, net in (("whole", model), ("stem", stem_only(model, stem))):
        for form, selection in forms.items():
            report = export_litert(net, data, space_to_depth=selection)
            flatbuffers.append(report.flatbuffer)
            labels.append((f"{label}_{form}", report.max_abs_error))
    print(f"{name}: timing {len(flatbuffers)} flatbuffers interleaved, {FLAGS.rounds} rounds",
          flush=True)
    ms = time_side_by_side(flatbuffers, FLAGS.rounds, FLAGS.instances)
    result = {"model": name, "stem": stem, "table_chooses": chosen}
    for (key, error), value in zip(labels, ms, strict=True):
        result[f"{key}_ms"] = float(value)
        result[f"{key}_max_abs_error"] = float(error)
    for label in ("whole", "stem"):
        for form, suffix in (("rewritten", ""), ("wide", "_wide")):
            result[f"{label}{suffix}_speedup"] = (result[f"{label}_direct_ms"]
                                                  / result[f"{label}_{form}_ms"])
        print(f"  {label:5s} direct {result[f'{label}_direct_ms']:.3f} ms, rewritten "
              f"{result[f'{label}_rewritten_ms']:.3f} ms ({result[f'{label}_speedup']:.2f}x), "
              f"wide {result[f'{label}_wide_ms']:.3f} ms ({result[f'{label}_wide_speedup']:.2f}x)")
    print(f"  the latency table rewrites {chosen or 'nothing'}")
    return result


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO if FLAGS.verbose else logging.ERROR)
    keras.utils.set_random_seed(FLAGS.seed)
    print(f"host CPU: {cpu_name()}, LiteRT XNNPACK, 1 thread, batch 1, int8", flush=True)
    results = [run_model(name) for name in FLAGS.models]
    save_result(FLAGS.json, {
        "benchmark": "space_to_depth",
        "config": {"models": FLAGS.models, "rounds": FLAGS.rounds,
                   "instances": FLAGS.instances, "threads": 1, "batch": 1,
                   "seed": FLAGS.seed},
        "models": results,
    })


if __name__ == "__main__":
    define_flags()
    apputil.run(main)
