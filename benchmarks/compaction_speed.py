"""Pruning becomes speed only after compaction: masked vs compacted int8 LiteRT.

One network (a GoogLeNet-style inception trunk by default, or
keras.applications MobileNetV2 / ResNet50 with `weights=None`) is made
evolvable; for each fraction of removed filters (random cluster masks, same
fraction in every layer but the classifier) two int8 flatbuffers are
exported with `export_litert`: the *masked* model (`remove_channels=False`:
dead filters are zeros, still computed) and the *compacted* one. The dense
unpruned model is the reference. All flatbuffers are timed in this process
with the LiteRT interpreter, 1 thread, batch 1, after warm-up, interleaved
round by round so that machine noise hits them alike; the figure is the
median over all timed invokes. Prints a table and writes JSON.

    python -m benchmarks.compaction_speed --json bench_out/compaction_speed.json
    python -m benchmarks.compaction_speed --model mobilenet_v2 --image_size 128
"""

import os
import tempfile

import keras
import numpy as np
from absl import flags, logging

from benchmarks.common import save_result
from keras_evosynth import EvoLayer, evolvable
from keras_evosynth.export import export_litert
from recipes import apputil
from tflite_bench.host import fill_inputs, latency_stats, make_interpreter
from tflite_bench.progress import Progress
from tflite_bench.timer import time_rounds

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    """Defines the benchmark's absl flags (called by `__main__` only)."""
    define = {"flag_values": flag_values}
    flags.DEFINE_enum("model", "googlenet", ["googlenet", "mobilenet_v2", "resnet50"],
                      "Network to prune.", **define)
    flags.DEFINE_integer("image_size", 224, "Square input size.", **define)
    flags.DEFINE_float("width", 1.0, "GoogLeNet filter multiplier / MobileNetV2 alpha.", **define)
    flags.DEFINE_list("removed", ["0.5", "0.9"], "Fractions of filters removed.", **define)
    flags.DEFINE_integer("rounds", 5, "Interleaved timing rounds.", **define)
    flags.DEFINE_integer("runs", 20, "Timed invokes per model per round.", **define)
    flags.DEFINE_integer("warmup", 10, "Untimed invokes per model first.", **define)
    flags.DEFINE_integer("calibration", 16, "Random calibration images for int8.", **define)
    flags.DEFINE_integer("seed", 0, "Seed of weights, masks and data.", **define)
    flags.DEFINE_string("json", "bench_out/compaction_speed.json", "Where to write results.",
                        **define)
    apputil.define_verbose(flag_values)


# GoogLeNet inception modules 3a..4b: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj).
_INCEPTION = [
    (64, 96, 128, 16, 32, 32),
    (128, 128, 192, 32, 96, 64),
    "pool",
    (192, 96, 208, 16, 48, 64),
    (160, 112, 224, 24, 64, 64),
]


def build_googlenet(image_size, width):
    """GoogLeNet trunk (conv1..inception 4b, ReLU, no BN like the original),
    filter counts scaled by `width`, with a global-pooling classifier."""
    layers = keras.layers

    def conv(x, filters, size, name, strides=1):
        filters = max(1, int(round(filters * width)))
        return layers.Conv2D(filters, size, strides=strides, padding="same",
                             activation="relu", name=name)(x)

    inputs = keras.Input((image_size, image_size, 3))
    x = conv(inputs, 64, 7, "conv1", strides=2)
    x = layers.MaxPooling2D(3, 2, padding="same")(x)
    x = conv(x, 64, 1, "conv2_reduce")
    x = conv(x, 192, 3, "conv2")
    x = layers.MaxPooling2D(3, 2, padding="same")(x)
    for i, spec in enumerate(_INCEPTION):
        if spec == "pool":
            x = layers.MaxPooling2D(3, 2, padding="same")(x)
            continue
        f1, f3r, f3, f5r, f5, fp = spec
        name = f"inception_{i}"
        branches = [
            conv(x, f1, 1, f"{name}_1x1"),
            conv(conv(x, f3r, 1, f"{name}_3x3_reduce"), f3, 3, f"{name}_3x3"),
            conv(conv(x, f5r, 1, f"{name}_5x5_reduce"), f5, 5, f"{name}_5x5"),
            conv(layers.MaxPooling2D(3, 1, padding="same")(x), fp, 1, f"{name}_pool_proj"),
        ]
        x = layers.Concatenate(name=f"{name}_output")(branches)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10, name="head")(x), name="googlenet")


def build_model(name, image_size, width):
    if name == "googlenet":
        return build_googlenet(image_size, width)
    shape = (image_size, image_size, 3)
    if name == "mobilenet_v2":
        return keras.applications.MobileNetV2(
            weights=None, input_shape=shape, alpha=width, classes=10,
            classifier_activation=None)
    return keras.applications.ResNet50(
        weights=None, input_shape=shape, classes=10, classifier_activation=None)


def remove_filters(model, fraction, rng, classifier):
    """Masks `fraction` of the filters of every evolvable layer (at least one
    filter survives), the classifier excepted."""
    for layer in model.layers:
        if isinstance(layer, EvoLayer) and layer.name != classifier:
            n = layer.cluster_mask.shape[0]
            dead = rng.choice(n, size=min(n - 1, int(round(fraction * n))), replace=False)
            mask = np.ones(n, bool)
            mask[dead] = False
            layer.set_masks(cluster_mask=mask)


def time_flatbuffers(paths, rounds, runs, warmup):
    """Latency stats per path: `runs` invokes a round for `rounds` rounds,
    interleaved (`tflite_bench.timer.time_rounds`), 1 thread, batch 1."""
    interpreters = []
    for path in paths.values():
        interpreter = make_interpreter(path, threads=1)
        fill_inputs(interpreter, seed=0)
        for _ in range(warmup):
            interpreter.invoke()
        interpreters.append(interpreter)
    total = runs * rounds * len(interpreters)
    with Progress(f"timing {len(interpreters)} models, {rounds} rounds", total) as bar:
        times = time_rounds(interpreters, [runs * rounds] * len(interpreters), rounds,
                            progress=bar, catch=())
    return {name: latency_stats(t) for name, t in zip(paths, times, strict=True)}


def main(argv):
    del argv
    # TF's SavedModel/converter chatter
    logging.set_verbosity(logging.INFO if FLAGS.verbose else logging.ERROR)
    keras.utils.set_random_seed(FLAGS.seed)
    rng = np.random.default_rng(FLAGS.seed)
    base = build_model(FLAGS.model, FLAGS.image_size, FLAGS.width)
    classifier = base.layers[-1].name
    shape = (FLAGS.calibration, FLAGS.image_size, FLAGS.image_size, 3)
    data = rng.uniform(-1, 1, shape).astype("float32")
    variants = [("dense", 0.0, True)]
    for fraction in (float(f) for f in FLAGS.removed):
        variants += [(f"masked-{fraction:.0%}", fraction, False),
                     (f"compacted-{fraction:.0%}", fraction, True)]
    rows, paths = {}, {}
    folder = tempfile.mkdtemp(prefix="compaction_speed_")
    for name, fraction, remove in variants:
        print(f"exporting {name} (int8)...", flush=True)
        evo = evolvable(base)
        remove_filters(evo, fraction, np.random.default_rng(FLAGS.seed + 1), classifier)
        path = os.path.join(folder, f"{name}.tflite")
        report = export_litert(evo, data, path=path, remove_channels=remove)
        kept = sum(k for k, _ in report.compaction.channels.values())
        total = sum(t for _, t in report.compaction.channels.values())
        rows[name] = {
            "model": name,
            "removed_fraction": fraction,
            "compacted": remove,
            "live_filters": sum(
                layer.count_clusters() for layer in evo.layers if isinstance(layer, EvoLayer)
            ),
            "filters_total": total,
            "executed_filters": kept,
            "weights": report.compaction.params_after,
            "size_bytes": report.size_bytes,
            "top1_agreement_vs_keras": report.top1_agreement,
            "operators": report.operators,
        }
        paths[name] = path
    print(f"timing {len(paths)} flatbuffers: {FLAGS.rounds} rounds x {FLAGS.runs} "
          "invokes, 1 thread, batch 1", flush=True)
    stats = time_flatbuffers(paths, FLAGS.rounds, FLAGS.runs, FLAGS.warmup)
    dense = stats["dense"]["median"]
    for name, row in rows.items():
        row["latency_ms"] = stats[name]
        row["speedup_vs_dense"] = dense / stats[name]["median"]
        if name.startswith("compacted"):
            masked = stats[name.replace("compacted", "masked")]["median"]
            row["speedup_vs_masked"] = masked / stats[name]["median"]
    print(f"\n{FLAGS.model} {FLAGS.image_size}x{FLAGS.image_size}, int8 LiteRT, "
          "1 thread, batch 1")
    header = (f"{'model':<16}{'live filters':>14}{'executed':>10}{'weights':>11}"
              f"{'size KB':>9}{'median ms':>11}{'p90 ms':>8}{'vs dense':>10}{'vs masked':>11}")
    print(header)
    for row in rows.values():
        s = row["latency_ms"]
        vs_masked = row.get("speedup_vs_masked")
        print(f"{row['model']:<16}{row['live_filters']:>7}/{row['filters_total']:<6}"
              f"{row['executed_filters']:>10}{row['weights']:>11,}"
              f"{row['size_bytes'] / 1024:>9.0f}{s['median']:>11.2f}{s['p90']:>8.2f}"
              f"{row['speedup_vs_dense']:>9.2f}x"
              + (f"{vs_masked:>10.2f}x" if vs_masked else f"{'':>11}"))
    result = {
        "benchmark": "compaction_speed",
        "config": {
            "model": FLAGS.model,
            "image_size": FLAGS.image_size,
            "width": FLAGS.width,
            "removed": [float(f) for f in FLAGS.removed],
            "rounds": FLAGS.rounds,
            "runs": FLAGS.runs,
            "warmup": FLAGS.warmup,
            "threads": 1,
            "batch": 1,
            "seed": FLAGS.seed,
            "keras": keras.__version__,
        },
        "rows": list(rows.values()),
    }
    save_result(FLAGS.json, result)


if __name__ == "__main__":
    define_flags()
    apputil.run(main)
