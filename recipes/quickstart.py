"""Quick start demo (about two minutes on 2 CPU cores).

Trains a small CNN on scikit-learn's digits, evolves it for a few generations
at 4-bit synaptic precision with filter-level synthesis, compacts every
generation, exports it to int8 LiteRT and benchmarks it against the float32
and int8 ancestors:

    python -m recipes.quickstart [--out_dir runs/quickstart]

It reads like the library's intended use: `evolvable` -> `model.fit` with an
`EvolutionCallback` -> `export_tflite` -> `tflite_bench.compare` (the last two
through `recipes.lineage_table`).
"""

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from absl import flags  # noqa: E402

import keras_evosynth as ke  # noqa: E402
from recipes import apputil, datasets, lineage_table  # noqa: E402
from recipes.apputil import define_verbose, fit_lineage, quiet_tensorflow  # noqa: E402
from recipes.classification import (  # noqa: E402
    build_cnn,
    compile_classifier,
    tflite_accuracy,
)

flags.DEFINE_string("out_dir", "runs/quickstart", "Output directory (resumes when it exists).")
flags.DEFINE_integer("generations", 4, "Offspring generations.", lower_bound=1)
define_verbose()
FLAGS = flags.FLAGS


def main(argv):
    del argv
    quiet_tensorflow(FLAGS.verbose)
    keras.utils.set_random_seed(0)
    data = datasets.load_classification("digits")
    os.makedirs(FLAGS.out_dir, exist_ok=True)

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
        directory=os.path.join(FLAGS.out_dir, "lineage"),
    )
    # = model.fit(..., epochs=enough, callbacks=[evolution]); the callback stops
    # training when the lineage is complete, and a rerun resumes (or skips) it.
    fit_lineage(
        model,
        evolution,
        data.x_train,
        data.y_train,
        batch_size=32,
        validation_data=(data.x_test, data.y_test),
        verbose=0,
    )
    ke.summary(model)

    # 3. Compact + int8 LiteRT + benchmark every generation.
    rows = lineage_table.build_table(
        ancestor,
        {"int4": evolution.lineage.directory},
        representative=data.x_train[:200],
        out_dir=FLAGS.out_dir,
        evaluate=tflite_accuracy(data.x_test, data.y_test),
        runs=200,
        metric_name="top-1 accuracy",
    )
    print(lineage_table.markdown_table(rows))


if __name__ == "__main__":
    apputil.run(main)
