"""How well does the latency table predict measured int8 LiteRT latency?

For each network (the CPU-default DetectNet, keras.applications MobileNetV2
with `weights=None`, the Fashion-MNIST CNN of `recipes.classifier`) the
ancestor's `LatencyTable` is measured on this host (its time is reported;
a cache folder makes a second run re-time nothing), then offspring are made:

- random filter cuts: the same fraction (10 to 90 %) of the filters of every
  sampled layer removed at random, and "mixed" cuts with a random fraction
  (0 to 90 %) for each layer;
- evolved cuts: `genetics.sample_offspring` at decreasing cluster factors
  (the paper's heredity on the model's own weights, filter-level).

Every offspring is compacted and exported to int8 (`export_litert`), all
flatbuffers of one network are timed in this process, interleaved round by
round (LiteRT, 1 thread, batch 1), and compared with `table.predict`. Two
errors are reported: *absolute* (predicted ms vs measured ms; the table was
timed minutes earlier, and these shared hosts drift) and *anchored*
(predicted ratio to the ancestor x the ancestor's latency measured in the
same run, how a cached table is meant to be used; DESIGN.md §5).

    python -m benchmarks.latency_table --json benchmarks/results/latency_table.json
"""

import time

import keras
import numpy as np
from absl import app, flags, logging

from benchmarks.common import define_timing_flags, save_result, time_side_by_side
from keras_evosynth import evolvable, genetics
from keras_evosynth.export import export_litert
from keras_evosynth.latency import LatencyTable
from recipes import apputil

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    """Defines the benchmark's absl flags (called by `__main__` only)."""
    define = {"flag_values": flag_values}
    define_timing_flags(flag_values, "latency_table", 10, "weights, cuts and data",
                        cache_dir="bench_out/latency_cache")
    flags.DEFINE_list("models", ["detectnet", "mobilenet_v2", "fashion_cnn"], "Networks.", **define)
    flags.DEFINE_integer("mobilenet_size", 224, "MobileNetV2 input side.", **define)
    flags.DEFINE_float("mobilenet_alpha", 1.0, "MobileNetV2 width multiplier.", **define)
    flags.DEFINE_list("random_cuts", ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8",
                                      "0.9"], "Fractions of filters removed at random.", **define)
    flags.DEFINE_integer("mixed_cuts", 4, "Offspring with a random fraction per layer.", **define)
    flags.DEFINE_list("evolved_factors", ["1.0", "0.7", "0.45", "0.25"],
                      "Cluster factors R_c of the evolved offspring.", **define)
    flags.DEFINE_float("budget_ms", 40.0, "Invoke time per model per round.", **define)
    flags.DEFINE_integer("dense_below", 32, "LatencyTable.measure's dense_below (0: sparse grid).",
                         **define)
    apputil.define_verbose(flag_values)


def build(name):
    """`(model, calibration data)` for one of the benchmark's networks."""
    rng = np.random.default_rng(FLAGS.seed)
    if name == "detectnet":
        from recipes.detectnet.model import detectnet

        model = detectnet(input_size=(128, 384), width=0.25, batch_norm="all")
        data = rng.uniform(0, 255, (8, 128, 384, 3))
    elif name == "mobilenet_v2":
        size = FLAGS.mobilenet_size
        model = keras.applications.MobileNetV2(
            weights=None, input_shape=(size, size, 3), alpha=FLAGS.mobilenet_alpha, classes=10)
        data = rng.uniform(-1, 1, (8, size, size, 3))
    elif name == "fashion_cnn":
        from recipes.classification import build_cnn

        model = build_cnn((28, 28, 1), 10, width=32)
        data = rng.uniform(0, 1, (8, 28, 28, 1))
    else:
        raise app.UsageError(f"unknown model {name!r}")
    return model, data.astype("float32")


def random_cut(model, fraction, rng):
    """Removes `fraction` of every sampled layer's filters (one survives);
    `fraction=None` draws a fraction in [0, 0.9] for each layer."""
    genomes, layers = genetics.genomes_from_model(model)
    for genome, layer in zip(genomes, layers, strict=True):
        if genome.protected:
            continue
        n = genome.cluster_mask.size
        cut = rng.uniform(0.0, 0.9) if fraction is None else fraction
        mask = np.ones(n, bool)
        mask[rng.choice(n, size=min(n - 1, int(round(cut * n))), replace=False)] = False
        layer.set_masks(cluster_mask=mask)
    # At R = e every live synapse and cluster survives the draw; what the
    # sampler still removes is what evolution removes too: synapses reading
    # dead channels, and filters left without any live synapse (a constant
    # output, which int8 XNNPACK cannot requantize).
    genetics.sample_offspring(model, genetics.MAX_FACTOR, genetics.MAX_FACTOR)


def offspring(base):
    """`[(label, evo model)]`: the ancestor, random and evolved cuts."""
    rng = np.random.default_rng(FLAGS.seed + 1)
    result = [("ancestor", evolvable(base))]
    for fraction in (float(f) for f in FLAGS.random_cuts):
        evo = evolvable(base)
        random_cut(evo, fraction, rng)
        result.append((f"random {fraction:.0%}", evo))
    for i in range(FLAGS.mixed_cuts):
        evo = evolvable(base)
        random_cut(evo, None, rng)
        result.append((f"mixed {i + 1}", evo))
    for i, factor in enumerate(float(f) for f in FLAGS.evolved_factors):
        evo = evolvable(base)
        genetics.sample_offspring(evo, factor, genetics.MAX_FACTOR, seed=FLAGS.seed,
                                  generation=1, candidate=i)
        result.append((f"evolved R_c={factor:g}", evo))
    return result


def run_model(name):
    base, data = build(name)
    print(f"\n== {name}: measuring its latency table", flush=True)
    start = time.perf_counter()
    table = LatencyTable.measure(evolvable(base), cache_dir=FLAGS.cache_dir,
                                 dense_below=FLAGS.dense_below)
    measure_s = time.perf_counter() - start
    rows, flatbuffers, failures = [], [], []
    children = offspring(base)
    print(f"exporting {len(children)} offspring (int8)...", flush=True)
    for label, evo in children:
        stats = genetics.genomes_from_model(evo)[0]
        live = sum(int(g.cluster_mask.sum()) for g in stats)
        try:
            report = export_litert(evo, data, space_to_depth=table)
        except RuntimeError as error:  # LiteRT's XNNPACK sometimes refuses a model
            print(f"  {label}: export failed, skipped ({str(error)[:120]})", flush=True)
            failures.append({"offspring": label, "error": str(error)[:300]})
            continue
        flatbuffers.append(report.flatbuffer)
        rows.append({"offspring": label, "live_filters": live,
                     "predicted_ms": table.predict(evo), "size_bytes": report.size_bytes})
    print(f"timing {len(rows)} flatbuffers interleaved: {FLAGS.rounds} rounds, "
          f"{FLAGS.instances} interpreter(s) each", flush=True)
    measured = time_side_by_side(flatbuffers, FLAGS.rounds, FLAGS.instances, FLAGS.budget_ms)
    anchor_ratio = measured[0] / rows[0]["predicted_ms"]
    for row, ms in zip(rows, measured, strict=True):
        row["measured_ms"] = float(ms)
        row["error"] = row["predicted_ms"] / ms - 1.0
        row["anchored_ms"] = row["predicted_ms"] * anchor_ratio
        row["anchored_error"] = row["anchored_ms"] / ms - 1.0
    cut = rows[1:]
    summary = {
        "model": name,
        "table_measure_s": measure_s,
        "table_points": table.timed_points,
        "offspring": len(cut),
        "export_failures": failures,
        "median_abs_error": float(np.median([abs(r["error"]) for r in cut])),
        "worst_abs_error": float(max(abs(r["error"]) for r in cut)),
        "median_anchored_error": float(np.median([abs(r["anchored_error"]) for r in cut])),
        "worst_anchored_error": float(max(abs(r["anchored_error"]) for r in cut)),
        "rows": rows,
    }
    print(f"{name}: table measured in {measure_s:.0f}s ({table.timed_points} points timed)")
    print(f"{'offspring':<20}{'filters':>8}{'predicted':>11}{'measured':>10}{'error':>8}"
          f"{'anchored':>10}")
    for r in rows:
        print(f"{r['offspring']:<20}{r['live_filters']:>8}{r['predicted_ms']:>9.3f}ms"
              f"{r['measured_ms']:>8.3f}ms{r['error']:>+8.1%}{r['anchored_error']:>+10.1%}")
    print(f"median |error| {summary['median_abs_error']:.1%}, worst "
          f"{summary['worst_abs_error']:.1%}; anchored: median "
          f"{summary['median_anchored_error']:.1%}, worst {summary['worst_anchored_error']:.1%}")
    return summary


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO if FLAGS.verbose else logging.ERROR)
    keras.utils.set_random_seed(FLAGS.seed)
    results = [run_model(name) for name in FLAGS.models]
    print("\nmodel            offspring  median err  worst err  median anchored  worst anchored")
    for r in results:
        print(f"{r['model']:<17}{r['offspring']:>9}{r['median_abs_error']:>12.1%}"
              f"{r['worst_abs_error']:>11.1%}{r['median_anchored_error']:>17.1%}"
              f"{r['worst_anchored_error']:>16.1%}")
    save_result(FLAGS.json, {
        "benchmark": "latency_table",
        "config": {"models": FLAGS.models, "random_cuts": FLAGS.random_cuts,
                   "evolved_factors": FLAGS.evolved_factors, "rounds": FLAGS.rounds,
                   "budget_ms": FLAGS.budget_ms, "instances": FLAGS.instances,
                   "threads": 1, "batch": 1,
                   "mobilenet_size": FLAGS.mobilenet_size,
                   "mobilenet_alpha": FLAGS.mobilenet_alpha, "seed": FLAGS.seed,
                   "dense_below": FLAGS.dense_below},
        "models": results,
    })


if __name__ == "__main__":
    define_flags()
    apputil.run(main)
