"""Quick start demo (about 1 minute on 2 CPU cores).

Trains a small CNN on scikit-learn's digits (8x8 images), evolves it for four
generations at 4-bit synaptic precision with filter-level synthesis, compacts
every generation, exports it to int8 LiteRT and scores the flatbuffers:

    python -m recipes.quickstart [--out_dir runs/quickstart] [--fresh]

Seeded: two fresh runs give the same lineage (synapses, filters, accuracy).
Rerun in the same `--out_dir`, it resumes an unfinished lineage, or says in one
line that the lineage is complete and rebuilds its table; `--fresh` deletes
the previous run's outputs (`QUICKSTART_OUTPUTS`) first.

The printed table has no latency column: one inference of this network takes
about 5 us, where LiteRT's per-invoke overhead decides the timing (the int8
ancestor came out 0.81x as fast as float32 on one 2-core host, 1.68x on
another). `lineage.json` keeps the timings; the Fashion-MNIST and DetectNet
results (docs/results.md) time networks large enough to measure.

It reads like the library's intended use: `evolvable` -> `model.fit` with an
`EvolutionCallback` -> `export_litert` -> `tflite_bench.compare` (the last two
through `recipes.lineage_table`).
"""

import glob
import math
import os
import shutil

import keras
from absl import flags

import keras_evosynth as ke
from keras_evosynth.lineage import Lineage
from recipes import apputil, datasets, lineage_table
from recipes.apputil import define_verbose, quiet_tensorflow
from recipes.classification import (
    build_cnn,
    compile_classifier,
    tflite_accuracy,
)

FLAGS = flags.FLAGS

# What a run writes into --out_dir (what --fresh deletes; nothing else there is touched)
QUICKSTART_OUTPUTS = ("lineage", "*.tflite", "lineage.md", "lineage.json", "lineage.png")
# The printed table: the lineage table's columns less bits and the timings
# (too short to measure on this network, see the module docstring)
COLUMNS = [
    ("lineage", "{}"),
    ("generation", "{}"),
    ("rollbacks", "{}"),
    ("synapses", "{:,}"),
    ("filters", "{:,}"),
    ("macs", "{:,}"),
    ("synaptic_efficiency", "{:.2f}x"),
    ("accuracy", "{:.4f}"),
    ("size_bytes", "{:,}"),
]


def define_flags(flag_values=FLAGS):
    """Defines the demo's absl flags (called by `__main__` only)."""
    flags.DEFINE_string("out_dir", "runs/quickstart", "Output directory (resumes when it "
                        "exists).", flag_values=flag_values)  # fmt: skip
    flags.DEFINE_integer("generations", 4, "Offspring generations.", lower_bound=1,
                         flag_values=flag_values)  # fmt: skip
    flags.DEFINE_bool("fresh", False, "Delete the previous run's outputs in --out_dir (its "
                      "lineage, flatbuffers and table) and start afresh.",
                      flag_values=flag_values)  # fmt: skip
    define_verbose(flag_values)


def remove_outputs(out_dir):
    """Deletes what a previous run wrote into `out_dir` (`QUICKSTART_OUTPUTS`)
    and returns the deleted paths, sorted; other files stay.

    Example:

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> for name in ("lineage.md", "int4_g001_int8.tflite", "notes.txt"):
    ...     open(os.path.join(folder, name), "w").close()
    >>> [os.path.basename(p) for p in remove_outputs(folder)]
    ['int4_g001_int8.tflite', 'lineage.md']
    >>> sorted(os.listdir(folder))
    ['notes.txt']
    """
    paths = sorted({path for pattern in QUICKSTART_OUTPUTS
                    for path in glob.glob(os.path.join(out_dir, pattern))})  # fmt: skip
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    return paths


def printed_table(rows):
    """The demo's table (`COLUMNS`) of `lineage_table.build_table`'s rows."""
    return lineage_table.markdown_table(
        [{**row, "accuracy": row.get("metric")} for row in rows], COLUMNS
    )


def main(argv):
    del argv
    quiet_tensorflow(FLAGS.verbose)
    keras.utils.set_random_seed(0)
    data = datasets.load_classification("digits")
    if FLAGS.fresh:
        removed = remove_outputs(FLAGS.out_dir)
        print(f"--fresh: deleted {len(removed)} previous output(s) in {FLAGS.out_dir}")
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    lineage = os.path.join(FLAGS.out_dir, "lineage")
    try:  # a damaged log is reported (a torn last line repaired) before any training
        Lineage(lineage).records()
    except ValueError as error:
        raise ValueError(f"{error} (--fresh deletes the previous run's outputs in "
                         f"{FLAGS.out_dir} and starts afresh)") from error

    # 1. A plain Keras ancestor, trained in float32.
    ancestor = compile_classifier(build_cnn(data.x_train.shape[1:], 10, width=16))
    ancestor.fit(data.x_train, data.y_train, batch_size=32, epochs=15, verbose=0)
    print("ancestor accuracy:", ancestor.evaluate(data.x_test, data.y_test, verbose=0)[1])

    # 2. Evolve it: int4 synapses; each offspring keeps ~65 % of its parent's
    #    MACs by losing whole filters (every synapse of a live filter survives).
    model = compile_classifier(ke.evolvable(ancestor, precision="int4"), learning_rate=3e-4)
    evolution = ke.EvolutionCallback(
        generations=FLAGS.generations,
        epochs_per_generation=3,
        ancestor_epochs=2,
        precision="int4",
        environment=ke.ResourceTarget(
            fraction=0.65, resource="macs", solve="cluster", fixed_factor=math.e
        ),  # = recipes.apputil.environment_for("filters", 0.65)
        monitor="val_accuracy",
        tolerance=0.02,
        seed=0,
        directory=lineage,
    )
    # `evolution.epochs`: the most epochs the lineage still needs (all of them
    # for a new one, fewer for one resumed after a kill, 0 for a complete
    # one); the callback stops training once the lineage is complete.
    try:
        epochs = evolution.epochs
    except ValueError as error:  # damaged lineage, other settings: one line (apputil.run)
        raise ValueError(f"{error} (--fresh deletes the previous run's outputs in "
                         f"{FLAGS.out_dir} and starts afresh)") from error
    if not epochs:
        print(f"{evolution.lineage.directory} already holds this complete lineage: nothing "
              "is evolved, its table is rebuilt (--fresh or another --out_dir starts afresh)")
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=32,
              validation_data=(data.x_test, data.y_test), verbose=0, callbacks=[evolution])
    ke.summary(model)

    # 3. Compact + int8 LiteRT every generation, scored from the flatbuffer.
    rows = lineage_table.build_table(
        ancestor,
        {"int4": evolution.lineage.directory},
        representative=data.x_train[:200],
        out_dir=FLAGS.out_dir,
        evaluate=tflite_accuracy(data.x_test, data.y_test),
        runs=200,
        metric_name="top-1 accuracy",
    )
    print(printed_table(rows))
    print(f"(no latency column: one inference takes {rows[0]['latency_ms'] * 1e3:.0f} us, too "
          "short to time against LiteRT's per-invoke overhead; lineage.json keeps the timings)")


if __name__ == "__main__":
    define_flags()
    apputil.run(main)
