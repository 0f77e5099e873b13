"""Population trials on Ray vs one after another: wall time and lineage.

    python -m benchmarks.population_ray          # ~2 min on 2 cores

A Fashion-MNIST CNN (scikit-learn digits without the Debian package) evolves
`--generations` offspring with `--population` candidates each, every
candidate trained `--trial_steps` batches: once with the trials in this
process (1 TensorFlow thread), once on a local Ray cluster of `--workers`
workers with 1 thread each. Both lineages are fitted in this process with
1 thread, so they must be the same (candidates, factors, synapse counts;
fitness within 1e-4); the ratio of the wall times is the speedup. The Ray
run includes starting the workers (TensorFlow import, model rebuild), not
starting the cluster; `generation_s` splits the wall times by generation
(trials plus the generation's retraining, which is not parallel). Writes
`benchmarks/results/population_ray.json`.
"""

import time

from absl import flags

from benchmarks.common import save_result
from recipes import apputil

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    """Defines the benchmark's absl flags (called by `__main__` only)."""
    define = {"flag_values": flag_values}
    flags.DEFINE_integer("population", 4, "Candidates per generation.", **define)
    flags.DEFINE_integer("generations", 3, "Offspring of the lineage.", **define)
    flags.DEFINE_integer("trial_steps", 180, "Training batches of each candidate's trial.",
                         **define)
    flags.DEFINE_integer("workers", 2, "Ray workers (1 CPU, 1 thread each).", **define)
    flags.DEFINE_integer("seed", 0, "Lineage seed.", **define)
    flags.DEFINE_string("json", "benchmarks/results/population_ray.json", "Result file.", **define)
    apputil.define_verbose(flag_values)


VOLATILE = ("wall_time", "checkpoint", "fitness", "loss", "val_loss", "accuracy", "val_accuracy")


def lineage(data, executor):
    """Fits the ancestor and its lineage; returns (records, seconds)."""
    import keras

    import keras_evosynth as ke

    xt, yt, xv, yv = data
    keras.utils.set_random_seed(FLAGS.seed)
    L = keras.layers
    model = ke.evolvable(keras.Sequential([
        keras.Input(xt.shape[1:]),
        L.Conv2D(32, 3, activation="relu", name="conv1"),
        L.Conv2D(64, 3, activation="relu", name="conv2"),
        L.MaxPooling2D(name="pool"),
        L.Flatten(name="flat"),
        L.Dense(10, activation="softmax", name="classifier"),
    ], name="fashion_cnn"))  # fmt: skip
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])  # fmt: skip
    evolution = ke.EvolutionCallback(
        generations=FLAGS.generations, precision="int4", seed=FLAGS.seed,
        monitor="val_accuracy", population=FLAGS.population,
        selection_data=(xv, yv), trial_data=(xt, yt), trial_steps=FLAGS.trial_steps,
        executor=executor, verbose=1,
    )  # fmt: skip
    start = time.perf_counter()
    model.fit(xt, yt, validation_data=(xv, yv), epochs=1 + FLAGS.generations, batch_size=64,
              verbose=0, callbacks=[evolution])  # fmt: skip
    return evolution.records, time.perf_counter() - start


def main(argv):
    del argv
    import numpy as np
    import ray
    import tensorflow as tf

    from keras_evosynth.distributed import RayExecutor
    from recipes.apputil import quiet_tensorflow
    from recipes.datasets import load_classification

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    quiet_tensorflow(FLAGS.verbose)
    raw = load_classification("fashion_mnist", limit_train=6000, limit_test=1000)
    data = (raw.x_train, raw.y_train, raw.x_test, raw.y_test)  # float32 in [0, 1], int32
    print(f"--- sequential: {FLAGS.population} candidates x {FLAGS.generations} generations, "
          "1 thread", flush=True)
    sequential, sequential_s = lineage(data, None)
    ray.init(num_cpus=FLAGS.workers, include_dashboard=False, log_to_driver=False)
    print(f"--- Ray: {FLAGS.workers} workers, 1 thread each", flush=True)
    with RayExecutor(threads=1) as executor:
        distributed, ray_s = lineage(data, executor)
    ray.shutdown()
    def stable(records):
        return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]

    same = stable(sequential) == stable(distributed)
    pairs = zip(sequential, distributed, strict=False)  # same: same lengths
    gap = max(abs(a["fitness"] - b["fitness"]) for a, b in pairs)
    identical = bool(same and gap <= 1e-4)
    print(f"\nsequential {sequential_s:.1f} s, Ray {ray_s:.1f} s: {sequential_s / ray_s:.2f}x; "
          f"identical lineage: {identical} (largest fitness gap {gap:.2e})")
    save_result(FLAGS.json, {
        "benchmark": "population_ray",
        "command": "python -m benchmarks.population_ray",
        "config": {"population": FLAGS.population, "generations": FLAGS.generations,
                   "trial_steps": FLAGS.trial_steps, "workers": FLAGS.workers,
                   "threads_per_worker": 1, "driver_threads": 1, "seed": FLAGS.seed,
                   "train_images": len(data[0]), "selection_images": len(data[2])},
        "sequential_s": sequential_s, "ray_s": ray_s, "speedup": sequential_s / ray_s,
        "identical_lineage": identical, "largest_fitness_gap": gap,
        "generation_s": {"sequential": [r["wall_time"] for r in sequential],
                         "ray": [r["wall_time"] for r in distributed]},
        "candidates": [r["candidate"] for r in distributed],
        "synapses": [int(np.asarray(r["synapses"])) for r in distributed],
    })


if __name__ == "__main__":
    define_flags()
    apputil.run(main)
