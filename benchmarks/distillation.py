"""How many epochs does an offspring need to recover, with and without the
parent as teacher (`keras_evosynth.ParentDistiller`)?

The CPU-default DetectNet ancestor of `recipes.detectnet.evolve` (trained
once, cached in `--out_dir`) becomes an int8 evolvable parent; one offspring
is sampled from it with `LatencyTarget(table, fraction=1 - --cut)` on the
ancestor's `LatencyTable` (a 30 % cut of its predicted int8 latency by
default), and the same offspring is retrained
`--epochs` epochs twice from the same weights, with the same optimizer and
data order:

- `labels`: the DetectNet losses alone;
- `distilled`: `ParentDistiller(offspring, teacher=parent, alpha=--alpha)` with the
  parent's coverage and bbox maps as soft targets
  (`recipes.detectnet.losses.DISTILLATION_LOSSES`).

After every epoch the DIGITS mAP on the validation scenes is computed; an
offspring has recovered when it is within `--within` mAP points of the
parent (scored the same way before the cut).

    python -m benchmarks.distillation --json benchmarks/results/distillation.json
"""

import time

import keras
from absl import flags

from benchmarks.common import detectnet_default, save_result
from recipes import apputil

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    """Defines the benchmark's absl flags (called by `__main__` only)."""
    define = {"flag_values": flag_values}
    flags.DEFINE_string("out_dir", "runs/latency_target/detectnet", "Ancestor and latency table.",
                        **define)
    flags.DEFINE_float("cut", 0.3, "Share of the parent's predicted int8 latency the offspring "
                       "loses.", **define)
    flags.DEFINE_integer("epochs", 6, "Retraining epochs of each variant.", **define)
    flags.DEFINE_float("alpha", 0.5, "ParentDistiller alpha (teacher term weight).", **define)
    flags.DEFINE_float("learning_rate", 3e-4, "Adam rate of the retraining.", **define)
    flags.DEFINE_float("within", 1.0, "Recovered: mAP within this many points of the parent.",
                       **define)
    flags.DEFINE_integer("seed", 0, "Seed of the data and the offspring.", **define)
    flags.DEFINE_string("json", "bench_out/distillation.json", "Where to write results.", **define)
    apputil.define_verbose(flag_values)


def offspring_of(parent, table):
    """The parent's offspring at `--cut` of its predicted latency."""
    import keras_evosynth as ke
    from keras_evosynth import genetics

    child = keras.models.clone_model(parent)
    child.set_weights(parent.get_weights())
    env = ke.LatencyTarget(table, fraction=1.0 - FLAGS.cut)
    genomes, layers = genetics.genomes_from_model(child, "int8")
    expected, current = env.resource_model(child, genomes)
    factors = env.factors(expected, current, current, 1, 1)
    masks = genetics.sample_masks(genomes, factors.cluster_factor, factors.synapse_factor,
                                  FLAGS.seed, 1, 0, 0, round_to=factors.round_to)
    genetics.apply_masks(layers, masks, "int8")
    return child


def retrain(child, parent, distil, data):
    """Per-epoch DIGITS mAP of `child` retrained (a copy; `parent` as teacher
    when `distil`)."""
    import keras_evosynth as ke
    from recipes.detectnet import evolve, losses

    x, grid, xv, yv, scale, batch_size = data
    student = keras.models.clone_model(child)
    student.set_weights(child.get_weights())
    model = ke.ParentDistiller(student, parent, alpha=FLAGS.alpha,
                               distillation_loss=losses.DISTILLATION_LOSSES) if distil else student
    model.compile(keras.optimizers.Adam(FLAGS.learning_rate), loss=losses.losses(),
                  loss_weights=losses.LOSS_WEIGHTS)
    keras.utils.set_random_seed(FLAGS.seed)  # same data order for both
    score = evolve.DetectionScore((xv.astype("uint8"), yv), xv.shape[1:3], scale)
    history = model.fit(x, {"coverage": grid, "bboxes": grid}, batch_size=batch_size,
                        epochs=FLAGS.epochs, callbacks=[score], verbose=2)
    return [float(v) for v in history.history["detection_mAP"]]


def main(argv):
    del argv
    import keras_evosynth as ke
    from recipes.apputil import latency_table_for, quiet_tensorflow
    from recipes.detectnet import evaluate as scoring

    quiet_tensorflow(FLAGS.verbose)
    dn = detectnet_default(FLAGS.out_dir, FLAGS.seed)
    ancestor, xv, yv, scale = dn.ancestor, dn.xv, dn.yv, dn.scale
    data = (dn.x, dn.grid, xv, yv, scale, dn.values.batch_size)
    parent = ke.evolvable(ancestor, precision="int8")
    table = latency_table_for(ancestor, FLAGS.out_dir)
    parent_map = scoring.score(parent.predict(xv, batch_size=20, verbose=0), yv,
                               scale=scale)["mAP"]
    child = offspring_of(parent, table)
    child_map = scoring.score(child.predict(xv, batch_size=20, verbose=0), yv,
                              scale=scale)["mAP"]
    kept = table.predict(child) / table.predict(parent)
    print(f"parent (int8): {parent_map:.1f} mAP; offspring keeps {kept:.1%} of its predicted "
          f"latency, {child_map:.1f} mAP before retraining", flush=True)
    results = {}
    for name, distil in (("labels", False), ("distilled", True)):
        start = time.perf_counter()
        print(f"--- retraining ({name})", flush=True)
        curve = retrain(child, parent, distil, data)
        recovered = next((i + 1 for i, v in enumerate(curve)
                          if v >= parent_map - FLAGS.within), None)
        results[name] = {"mAP_per_epoch": curve, "epochs_to_recover": recovered,
                         "best_mAP": max(curve), "seconds": time.perf_counter() - start}
    print(f"\nepochs to come within {FLAGS.within:g} mAP of the parent ({parent_map:.1f}):")
    for name, r in results.items():
        curve = " ".join(f"{v:.1f}" for v in r["mAP_per_epoch"])
        print(f"  {name:<10} {r['epochs_to_recover'] or f'not in {FLAGS.epochs}':>8}   "
              f"mAP per epoch: {curve}")
    save_result(FLAGS.json, {
        "benchmark": "distillation",
        "config": {"cut": FLAGS.cut, "epochs": FLAGS.epochs, "alpha": FLAGS.alpha,
                   "learning_rate": FLAGS.learning_rate, "within": FLAGS.within,
                   "seed": FLAGS.seed, "validation_scenes": len(xv)},
        "parent_mAP": parent_map, "offspring_mAP_before": child_map,
        "offspring_predicted_latency_fraction": kept, "variants": results,
    })


if __name__ == "__main__":
    define_flags()
    apputil.run(main)
