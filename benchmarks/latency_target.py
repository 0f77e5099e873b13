"""Ablation: MAC-target vs latency-target evolution, same ancestor, same seed.

For each network, one trained ancestor is evolved twice at int8 with
`EvolutionCallback`, `--generations` offspring each keeping `--keep` of its
parent's resource by losing whole filters, the same retraining, no rollback:

- `macs`: `ResourceTarget(resource="macs", solve="cluster", fixed_factor=e)`
  (the recipes' `--synthesis=filters`);
- `latency`: `LatencyTarget(latency_table, ...)` with the
  ancestor's `LatencyTable` measured on this host (the recipes'
  `--synthesis=latency`), by default with `remove_branches=True` (whole
  inception branches may go; `--noremove_branches`: filters only).

Every accepted generation of both lineages is exported to int8 LiteRT and
scored from the flatbuffer; all flatbuffers of one network (the int8
ancestor first) are timed in this process, interleaved round by round
(1 thread, batch 1, median). Networks:

- `detectnet`: the CPU-default DetectNet ancestor of `recipes.detectnet.evolve`
  (width 0.25, 384x128, generated scenes; trained once and cached in
  `--out_dir`), fitness = DIGITS mAP, 3 retraining epochs per generation;
- `mobilenet_v2`: keras.applications MobileNetV2 (`weights=None`, alpha 1.0,
  BatchNormalization momentum 0.9 for the short training) on Fashion-MNIST
  padded to 32x32x3, top-1 accuracy.

    python -m benchmarks.latency_target --json benchmarks/results/latency_target.json
"""

import os
import time

import keras
import numpy as np
from absl import flags

from benchmarks.common import detectnet_default, save_result
from recipes import apputil

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    """Defines the benchmark's absl flags (called by `__main__` only)."""
    define = {"flag_values": flag_values}
    flags.DEFINE_list("models", ["detectnet", "mobilenet_v2"], "Networks.", **define)
    flags.DEFINE_integer("generations", 3, "Offspring per lineage.", **define)
    flags.DEFINE_float("keep", 0.7, "Kept fraction of the parent's MACs / predicted latency.",
                       **define)
    flags.DEFINE_string("out_dir", "runs/latency_target", "Ancestors, tables, lineages.", **define)
    flags.DEFINE_integer("rounds", 10, "Interleaved timing rounds.", **define)
    flags.DEFINE_integer("seed", 0, "Seed of data, ancestor and lineages.", **define)
    flags.DEFINE_integer("mobilenet_train", 12000, "Fashion-MNIST training images (MobileNetV2).",
                         **define)
    flags.DEFINE_integer("mobilenet_epochs", 4, "Ancestor epochs (MobileNetV2).", **define)
    flags.DEFINE_bool("sensitivity", True, "Latency mode divides each layer's pressure by its "
                      "filters' Taylor importance on 128 training samples (sensitivity_data).",
                      **define)
    flags.DEFINE_float("max_layer_cut", None, "Latency mode: the largest fraction of a layer's "
                       "filters one generation may remove (LatencyTarget max_layer_cut); "
                       "unset: no cap beyond MIN_LAYER_FACTOR.", **define)
    flags.DEFINE_bool("remove_branches", True, "Latency mode may remove whole inception branches "
                      "(LatencyTarget(remove_branches=True)).", **define)
    flags.DEFINE_string("json", "bench_out/latency_target.json", "Where to write results.",
                        **define)
    apputil.define_verbose(flag_values)


MODES = ("macs", "latency")


def environment(mode, table, sample):
    from recipes.apputil import environment_for

    if mode == "latency":
        return environment_for("latency", FLAGS.keep, table,
                               sensitivity_data=sample if FLAGS.sensitivity else None,
                               max_layer_cut=FLAGS.max_layer_cut,
                               remove_branches=FLAGS.remove_branches)
    return environment_for("filters", FLAGS.keep, table)


def detectnet_setup():
    """`(ancestor, fit(model, callback), evaluate(path), representative)`."""
    from recipes.apputil import fit_lineage
    from recipes.detectnet import evolve, losses

    dn = detectnet_default(os.path.join(FLAGS.out_dir, "detectnet"), FLAGS.seed)
    values, ancestor, x, grid, xv, yv, scale = (
        dn.values, dn.ancestor, dn.x, dn.grid, dn.xv, dn.yv, dn.scale)

    score = evolve.DetectionScore((xv.astype("uint8"), yv), xv.shape[1:3], scale)

    def fit(model, callback):
        model.compile(keras.optimizers.Adam(values.finetune_learning_rate),
                      loss=losses.losses(), loss_weights=losses.LOSS_WEIGHTS)
        fit_lineage(model, callback, x, {"coverage": grid, "bboxes": grid},
                    callbacks=[score],
                    batch_size=values.batch_size, verbose=0)

    settings = {"monitor": "detection_mAP", "mode": "max",
                "epochs_per_generation": values.epochs_per_generation}
    sample = (x[:128], {"coverage": grid[:128], "bboxes": grid[:128]})
    return (ancestor, fit, evolve.tflite_scores(xv, yv, scale), x[:64], settings, "DIGITS mAP",
            sample)


def mobilenet_setup():
    from recipes import datasets
    from recipes.apputil import fit_lineage
    from recipes.classification import compile_classifier, tflite_accuracy

    data = datasets.load_classification("fashion_mnist", FLAGS.mobilenet_train, 2000)

    def prepare(images):  # 28x28x1 in [0, 1] -> 32x32x3
        images = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
        return np.repeat(images, 3, axis=-1).astype("float32")

    x, xt = prepare(data.x_train), prepare(data.x_test)
    path = os.path.join(FLAGS.out_dir, "mobilenet_v2", "ancestor.keras")
    if os.path.exists(path):
        ancestor = keras.models.load_model(path)
    else:
        keras.utils.set_random_seed(FLAGS.seed)
        ancestor = keras.applications.MobileNetV2(
            weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None)
        for layer in ancestor.layers:  # 0.999 leaves the statistics stale after 4 epochs
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
        compile_classifier(ancestor)
        print(f"mobilenet_v2: training the ancestor {FLAGS.mobilenet_epochs} epochs", flush=True)
        ancestor.fit(x, data.y_train, batch_size=64, epochs=FLAGS.mobilenet_epochs, verbose=2)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        ancestor.save(path)

    def fit(model, callback):
        compile_classifier(model, 3e-4)
        fit_lineage(model, callback, x, data.y_train, batch_size=64,
                    validation_data=(xt, data.y_test), verbose=0)

    settings = {"monitor": "val_accuracy", "mode": "max", "epochs_per_generation": 1}
    sample = (x[:128], data.y_train[:128])
    return ancestor, fit, tflite_accuracy(xt, data.y_test), x[:64], settings, "accuracy", sample


def at_equal_metric(rows):
    """The comparison at equal accuracy: each mode's final generation
    against the fastest generation of the other mode (generation 0
    included) that scores at least as well.

    >>> rows = [{"lineage": m, "generation": g, "metric": a, "speedup_vs_int8_ancestor": s}
    ...         for m, g, a, s in [("macs", 0, 80, 1.0), ("macs", 1, 70, 1.5), ("macs", 2, 60, 3),
    ...                            ("latency", 0, 80, 1.0), ("latency", 2, 72, 2.4)]]
    >>> at_equal_metric(rows)["latency_vs_macs_at_equal_metric"]
    2.4
    """
    def best(mode, floor):
        speeds = [r["speedup_vs_int8_ancestor"] for r in rows
                  if r["lineage"] == mode and r["metric"] >= floor]
        return max(speeds) if speeds else None

    final = {m: [r for r in rows if r["lineage"] == m][-1] for m in MODES}
    macs_there = best("macs", final["latency"]["metric"])
    return {
        "macs_speedup_at_latency_final_metric": macs_there,
        "latency_vs_macs_at_equal_metric": (
            final["latency"]["speedup_vs_int8_ancestor"] / macs_there if macs_there else None),
    }


def run_model(name):
    import keras_evosynth as ke
    from keras_evosynth.latency.timing import interpreter, time_interleaved
    from keras_evosynth.layers import EvoLayer
    from recipes.apputil import latency_table_for

    setup = detectnet_setup if name == "detectnet" else mobilenet_setup
    ancestor, fit, evaluate, representative, settings, metric, sample = setup()
    out = os.path.join(FLAGS.out_dir, name)
    table = latency_table_for(ancestor, out)
    lineages = {}
    for mode in MODES:
        start = time.perf_counter()
        model = ke.evolvable(ancestor, precision="int8")
        callback = ke.EvolutionCallback(
            generations=FLAGS.generations, ancestor_epochs=1, precision="int8",
            environment=environment(mode, table, sample), seed=FLAGS.seed,
            directory=os.path.join(out, f"lineage_{mode}"), latency_table=table, **settings)
        print(f"--- {name}: {mode}-target lineage", flush=True)
        fit(model, callback)
        lineages[mode] = (callback.records, time.perf_counter() - start)
    rows, flatbuffers = [], []
    folder = os.path.join(out, "tflite")
    os.makedirs(folder, exist_ok=True)
    candidates = [("int8 ancestor", None, ke.evolvable(ancestor, precision="int8"))]
    for mode, (records, _) in lineages.items():
        for record in records:
            if record["accepted"]:
                saved = keras.models.load_model(
                    os.path.join(out, f"lineage_{mode}", record["checkpoint"]), compile=False)
                candidates.append((mode, record, saved))
    print(f"exporting and scoring {len(candidates)} models (int8)...", flush=True)
    for label, record, model in candidates:
        generation = 0 if record is None else record["generation"]
        path = os.path.join(folder, f"{label.replace(' ', '_')}_{generation}.tflite")
        report = ke.export_litert(model, representative, path, space_to_depth=table)
        stats = ke.summary(model, print_fn=None)
        rows.append({
            "lineage": label, "generation": generation, "synapses": stats.synapses,
            "filters": stats.clusters, "macs": stats.macs,
            "predicted_ms": table.predict(model), "metric": evaluate(path)["metric"],
            "size_bytes": report.size_bytes,
            "removed_layers": sorted(  # whole branches gone (no live filter)
                layer.name for layer in model.layers
                if isinstance(layer, EvoLayer) and not np.any(layer.cluster_mask.numpy())),
        })
        flatbuffers.append(report.flatbuffer)
    print(f"timing {len(rows)} flatbuffers interleaved, {FLAGS.rounds} rounds", flush=True)
    measured = time_interleaved([interpreter(f, 1) for f in flatbuffers], rounds=FLAGS.rounds,
                                budget_ms=40.0, max_runs=1000)
    for row, ms in zip(rows, measured, strict=True):
        row["measured_ms"] = ms
        row["speedup_vs_int8_ancestor"] = measured[0] / ms
    final = {mode: [r for r in rows if r["lineage"] == mode][-1] for mode in MODES}
    gain = {mode: final[mode]["speedup_vs_int8_ancestor"] for mode in MODES}
    summary = {
        "model": name, "metric": metric, "rows": rows,
        "lineage_seconds": {mode: lineages[mode][1] for mode in MODES},
        "final": final,
        "latency_vs_macs_speedup_ratio": gain["latency"] / gain["macs"],
        "metric_difference_latency_minus_macs": (
            final["latency"]["metric"] - final["macs"]["metric"]),
        **at_equal_metric(rows),
    }
    print(f"\n{name} ({metric}), int8 LiteRT, 1 thread, batch 1, interleaved")
    print(f"{'lineage':<15}{'gen':>4}{'synapses':>10}{'filters':>8}{'MMAC':>8}{'predicted':>11}"
          f"{'measured':>10}{'speedup':>9}{metric:>12}")
    for r in rows:
        print(f"{r['lineage']:<15}{r['generation']:>4}{r['synapses']:>10,}{r['filters']:>8}"
              f"{r['macs'] / 1e6:>8.2f}{r['predicted_ms']:>9.3f}ms{r['measured_ms']:>8.3f}ms"
              f"{r['speedup_vs_int8_ancestor']:>8.2f}x{r['metric']:>12.4g}")
    print(f"latency mode: {gain['latency']:.2f}x vs MAC mode {gain['macs']:.2f}x "
          f"({summary['latency_vs_macs_speedup_ratio']:.2f}x more), {metric} "
          f"{summary['metric_difference_latency_minus_macs']:+.4g}")
    return summary


def main(argv):
    del argv
    from recipes.apputil import quiet_tensorflow

    quiet_tensorflow(FLAGS.verbose)
    results = [run_model(name) for name in FLAGS.models]
    save_result(FLAGS.json, {
        "benchmark": "latency_target",
        "config": {"models": FLAGS.models, "generations": FLAGS.generations,
                   "keep": FLAGS.keep, "precision": "int8", "rounds": FLAGS.rounds,
                   "threads": 1, "batch": 1, "seed": FLAGS.seed,
                   "mobilenet_train": FLAGS.mobilenet_train,
                   "mobilenet_epochs": FLAGS.mobilenet_epochs,
                   "sensitivity": FLAGS.sensitivity,
                   "max_layer_cut": FLAGS.max_layer_cut,
                   "remove_branches": FLAGS.remove_branches},
        "models": results,
    })


if __name__ == "__main__":
    define_flags()
    apputil.run(main)
