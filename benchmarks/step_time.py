"""Training step time: Evo layers vs plain Keras layers on the same network.

Builds one CNN (plain Keras), makes evolvable copies at the requested
precisions, and times `train_on_batch` for each, interleaving the models
round by round so machine noise hits them alike. Prints a table and writes
JSON. The issue's target is an Evo/plain ratio <= 1.2.

    python -m benchmarks.step_time --json bench_out/step_time.json
"""

import os
import statistics
import time

import keras
import numpy as np
from absl import flags

from benchmarks.common import save_result
from keras_evosynth import evolvable
from recipes import apputil

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    """Defines the benchmark's absl flags (called by `__main__` only)."""
    define = {"flag_values": flag_values}
    flags.DEFINE_list("precisions", ["float32", "int8", "int4"], "Evo precisions to time.",
                      **define)
    flags.DEFINE_integer("batch_size", 64, "Batch size.", **define)
    flags.DEFINE_integer("image_size", 28, "Square input size.", **define)
    flags.DEFINE_integer("width", 32, "Filters of the first conv (doubles twice).", **define)
    flags.DEFINE_integer("rounds", 30, "Timed rounds (one step per model per round).", **define)
    flags.DEFINE_integer("warmup", 5, "Untimed steps per model first.", **define)
    flags.DEFINE_string("json", "bench_out/step_time.json", "Where to write the results.", **define)
    apputil.define_verbose(flag_values)


def build_cnn(image_size, width):
    """A small VGG-style classifier (conv-BN-ReLU blocks, dense head)."""
    inputs = keras.Input((image_size, image_size, 1))
    x = inputs
    for i in range(3):
        x = keras.layers.Conv2D(width * 2**i, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def _compiled(model):
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def time_models(models, x, y, rounds, warmup):
    """Median seconds per `train_on_batch` for each model, interleaved."""
    for model in models.values():
        for _ in range(warmup):
            model.train_on_batch(x, y)
    times = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv):
    del argv
    keras.utils.set_random_seed(0)
    plain = build_cnn(FLAGS.image_size, FLAGS.width)
    models = {"plain": _compiled(plain)}
    for precision in FLAGS.precisions:
        models[f"evo-{precision}"] = _compiled(evolvable(plain, precision=precision))
    rng = np.random.default_rng(0)
    x = rng.random((FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, 1), "float32")
    y = rng.integers(0, 10, FLAGS.batch_size)
    medians = time_models(models, x, y, FLAGS.rounds, FLAGS.warmup)
    base = medians["plain"]
    rows = [
        {"model": name, "median_step_ms": 1000 * t, "ratio_vs_plain": t / base}
        for name, t in medians.items()
    ]
    print(f"{'model':<14}{'median step (ms)':>18}{'vs plain':>10}")
    for row in rows:
        print(f"{row['model']:<14}{row['median_step_ms']:>18.2f}{row['ratio_vs_plain']:>9.2f}x")
    result = {
        "benchmark": "train_step_time",
        "config": {
            "batch_size": FLAGS.batch_size,
            "image_size": FLAGS.image_size,
            "width": FLAGS.width,
            "rounds": FLAGS.rounds,
            "warmup": FLAGS.warmup,
            "cpu_count": os.cpu_count(),
            "keras": keras.__version__,
        },
        "rows": rows,
    }
    save_result(FLAGS.json, result)


if __name__ == "__main__":
    define_flags()
    apputil.run(main)
