"""How well does the latency table predict every `keras.applications` network?

For each constructor of `keras.applications` (`--networks`, default all 40:
MobileNet, MobileNetV2/V3, EfficientNet(V2), ResNet(V2), DenseNet,
Inception(ResNet), Xception, NASNet, VGG, ConvNeXt, ...) the network is built
with `weights=None`, `classes=10`, at `--size` (96x96) or, where the
constructor refuses that, the smallest input it accepts; made evolvable
(`ke.evolvable`, with `skip_unsupported=True` where it holds layers such as
`SeparableConv2D`); its `LatencyTable` measured on this host (timed: the
seconds are the network's measuring time; a cache folder makes a rerun time
nothing, and such a row says so). Then offspring are drawn:

- random filter cuts keeping `--keep` (100 %, 60 %, 30 %) of every evolvable
  layer's filters, at random (`benchmarks.latency_table.random_cut`; the
  100 % one is the uncut network);
- one evolved cut: a `LatencyTarget(table, fraction=--evolved_keep)` draw,
  the per-layer cluster factors a latency-target generation would sample with (`EvolutionCallback`'s
  synthesis step, without the training).

Every offspring is compacted and exported to int8 LiteRT (`export_litert`,
random representative data, strided stems rewritten where the table says so),
all flatbuffers of one network are timed in this process, interleaved round
by round (1 thread, batch 1), and compared with `table.predict`. Errors are
relative, `predicted / measured - 1`; *anchored* ones rescale the prediction
by the uncut network's measured/predicted ratio (DESIGN.md §5). A network
that fails (build, conversion, measuring, export, timing) gets a row with its
error and the benchmark goes on; results are written after every network, and
a rerun skips the networks already measured in `--json` and runs the failed
ones again (`--fresh` starts over).

    python -m benchmarks.latency_zoo --json benchmarks/results/latency_zoo.json
    python -m benchmarks.latency_zoo --networks=MobileNetV3Small,ResNet50
"""

import gc
import json
import os
import re
import time

import numpy as np
from absl import flags

from benchmarks.common import save_result, time_side_by_side
from recipes import apputil

FLAGS = flags.FLAGS
# what tells two hosts of one model name apart for int8 inference speed
INT8_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")

# What the zoo run is judged against (issue 28 item 2): relative error of the
# prediction over all offspring of all networks, of the uncut networks, and
# the table's measuring time per network.
TARGETS = {"median_error": 0.10, "worst_error": 0.25, "uncut_error": 0.10,
           "measure_seconds": 300.0}


def define_flags(flag_values=FLAGS):
    """Defines the benchmark's absl flags (called by `__main__` only)."""
    define = {"flag_values": flag_values}
    flags.DEFINE_list("networks", ["all"], "keras.applications constructors to run ('all': "
                      "every one).", **define)
    flags.DEFINE_integer("size", 96, "Input side; a network that refuses it is built at the "
                         "smallest side it accepts.", **define)
    flags.DEFINE_list("keep", ["1.0", "0.6", "0.3"], "Random cuts: fraction of every evolvable "
                      "layer's filters kept (1.0: the uncut network).", **define)
    flags.DEFINE_float("evolved_keep", 0.6, "Evolved cut: the fraction of the predicted latency "
                       "a LatencyTarget draw keeps (0: none).", **define)
    flags.DEFINE_integer("rounds", 10, "Interleaved timing rounds.", **define)
    flags.DEFINE_float("budget_ms", 40.0, "Invoke time per model per round.", **define)
    flags.DEFINE_integer("instances", 2, "Interpreters per flatbuffer (their mean is reported).",
                         **define)
    flags.DEFINE_string("cache_dir", "bench_out/latency_zoo_cache", "Latency-table cache folder.",
                        **define)
    flags.DEFINE_integer("step", 8, "LatencyTable.measure's channel grid step.", **define)
    flags.DEFINE_integer("coarse", 3, "LatencyTable.measure's points per axis before refining.",
                         **define)
    flags.DEFINE_integer("dense_below", 32, "LatencyTable.measure's dense_below (0: sparse grid).",
                         **define)
    flags.DEFINE_float("refine", 0.1, "LatencyTable.measure's refine threshold.", **define)
    flags.DEFINE_enum("untimed", "ignore", ["ignore", "raise"], "LatencyTable.measure's "
                      "untimed: a layer the table cannot time is priced in the fixed remainder "
                      "and listed in the network's row, or fails the network.", **define)
    flags.DEFINE_integer("seed", 0, "Seed of weights, cuts and data.", **define)
    flags.DEFINE_string("json", "bench_out/latency_zoo.json", "Where to write results (read "
                        "first: networks already there are skipped).", **define)
    flags.DEFINE_string("markdown", None, "Also write the Markdown table here.", **define)
    flags.DEFINE_bool("fresh", False, "Run every network again, ignoring --json's rows.",
                      **define)
    apputil.define_verbose(flag_values)


def constructors():
    """`{name: constructor}` of every network in `keras.applications` (the
    public functions of its modules, deduplicated by name: `resnet.ResNet50`
    is `resnet50.ResNet50`)."""
    import inspect

    import keras

    found = {}
    for name in dir(keras.applications):
        value = getattr(keras.applications, name)
        candidates = ([getattr(value, n) for n in dir(value)] if inspect.ismodule(value)
                      else [value])
        for fn in candidates:
            if inspect.isfunction(fn) and fn.__name__[:1].isupper():
                found.setdefault(fn.__name__, fn)
    return dict(sorted(found.items()))


def selected(names, available):
    """The networks `--networks` asks for, in its order (`all`: every one).

    >>> selected(["all"], {"A": 1, "B": 2})
    ['A', 'B']
    >>> selected(["B"], {"A": 1, "B": 2})
    ['B']
    >>> selected(["C"], {"A": 1, "B": 2})
    Traceback (most recent call last):
    ...
    ValueError: --networks: no keras.applications constructor named ['C']; available: A, B.
    """
    if [n.lower() for n in names] == ["all"]:
        return list(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"--networks: no keras.applications constructor named {unknown}; "
                         f"available: {', '.join(available)}.")
    return list(dict.fromkeys(names))


_AT_LEAST = re.compile(r"at least (\d+)x(\d+)")


def build(constructor, size):
    """`constructor(weights=None, classes=10)` at `size` x `size`, or at the
    smallest input it accepts when it names one larger (`Input size must be
    at least 75x75`). Returns `(model, side)`."""
    import keras

    def make(side):
        keras.utils.set_random_seed(FLAGS.seed)
        return constructor(weights=None, input_shape=(side, side, 3), classes=10)

    try:
        return make(size), size
    except ValueError as error:
        found = _AT_LEAST.search(str(error))
        if found is None or int(found.group(1)) <= size:
            raise
        side = max(int(found.group(1)), int(found.group(2)))
        return make(side), side


def make_evolvable(base):
    """`(evolvable model, skipped)`: `skip_unsupported=True` only where the
    network holds layers `evolvable` cannot mask (`skipped`: their count)."""
    from keras_evosynth import evolvable
    from keras_evosynth.conversion import unsupported_layers

    skipped = len(unsupported_layers(base))
    return evolvable(base, skip_unsupported=skipped > 0), skipped


def evolved_cut(evo, table, keep, seed):
    """One latency-target offspring drawn in place: the per-layer cluster
    factors `LatencyTarget(table, fraction=keep)` solves for
    on `table`, sampled as `EvolutionCallback` samples a generation.
    Returns the expected kept fraction of the predicted latency."""
    from keras_evosynth import LatencyTarget, genetics

    env = LatencyTarget(table, fraction=keep, round_to=8)
    genomes, layers = genetics.genomes_from_model(evo)
    expected, current = env.resource_model(evo, genomes)
    factors = env.factors(expected=expected, current=current, ancestor=current, generation=1,
                          generations=1)
    masks = genetics.sample_masks(genomes, factors.cluster_factor, factors.synapse_factor,
                                  seed, 1, 0, 0, round_to=factors.round_to,
                                  vanish=factors.vanish)
    genetics.apply_masks(layers, masks)
    return factors.expected


def offspring(base, table):
    """`[(label, evolvable model, facts)]`: the random cuts (`--keep`), then
    the evolved one (`facts`: the draw's expected kept fraction of the
    predicted latency); an offspring that cannot be drawn holds its error
    instead of a model."""
    from benchmarks.latency_table import random_cut

    rng = np.random.default_rng(FLAGS.seed + 1)
    result = []
    for keep in (float(k) for k in FLAGS.keep):
        evo, _ = make_evolvable(base)
        if keep < 1.0:
            random_cut(evo, 1.0 - keep, rng)
        result.append(("uncut" if keep == 1.0 else f"random {keep:.0%} kept", evo, {}))
    if FLAGS.evolved_keep > 0:
        label = f"evolved, latency {FLAGS.evolved_keep:.0%}"
        evo, _ = make_evolvable(base)
        try:
            expected = evolved_cut(evo, table, FLAGS.evolved_keep, FLAGS.seed)
            result.append((label, evo, {"expected_latency_fraction": expected}))
        except Exception as error:  # noqa: BLE001 - recorded in the network's row
            result.append((label, _describe(error), {}))
    return result


def _describe(error):
    return f"{type(error).__name__}: {str(error).strip()[:400]}"


def _live_filters(evo):
    from keras_evosynth import genetics

    return sum(int(g.cluster_mask.sum()) for g in genetics.genomes_from_model(evo)[0])


def _representative(base, side):
    """Random calibration data in the range the network expects: [0, 255]
    where it rescales its input itself (EfficientNet, MobileNetV3, ConvNeXt),
    [-1, 1] otherwise."""
    import keras

    rng = np.random.default_rng(FLAGS.seed)
    preprocessing = any(isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization))
                        for layer in base.layers[:4])
    low, high = (0.0, 255.0) if preprocessing else (-1.0, 1.0)
    return rng.uniform(low, high, (8, side, side, 3)).astype("float32")


def run_network(name, constructor):
    """The network's row: its predictions against the measured latencies,
    or, where a step failed, that step and its error."""
    from keras_evosynth.export import export_litert
    from keras_evosynth.latency import LatencyTable
    from tflite_bench.bench import host_facts

    # each row names its host (a rerun on another machine resumes the zoo there)
    row = {"network": name, "status": "error", "cpu": host_facts()["processor"],
           "cpu_features": apputil.cpu_features(INT8_FEATURES)}
    started = time.perf_counter()
    stage = "build"
    try:
        base, side = build(constructor, FLAGS.size)
        row.update(input_size=side, params=int(base.count_params()))
        stage = "evolvable"
        evo, skipped = make_evolvable(base)
        row["unsupported_layers_skipped"] = skipped
        stage = "measure"
        print(f"\n== {name} ({side}x{side}): measuring its latency table", flush=True)
        start = time.perf_counter()
        table = LatencyTable.measure(evo, threads=1, cache_dir=FLAGS.cache_dir, step=FLAGS.step,
                                     coarse=FLAGS.coarse, refine=FLAGS.refine,
                                     dense_below=FLAGS.dense_below, untimed=FLAGS.untimed)
        row.update(measure_s=time.perf_counter() - start, table_points=table.timed_points,
                   table_cached=table.timed_points == 0)
        row["untimed_layers"] = table.untimed_layers().get(evo.name, [])
        stage = "offspring"
        data = _representative(base, side)
        rows, flatbuffers, failures = [], [], []
        for label, child, facts in offspring(base, table):
            if isinstance(child, str):
                failures.append({"offspring": label, "stage": "draw", "error": child})
                continue
            try:
                predicted = table.predict(child)
                report = export_litert(child, data, mode="int8", space_to_depth=table)
            except Exception as error:  # noqa: BLE001 - XNNPACK refusals, converter errors
                print(f"  {label}: failed, skipped ({_describe(error)[:160]})", flush=True)
                failures.append({"offspring": label, "stage": "export",
                                 "error": _describe(error)})
                continue
            flatbuffers.append(report.flatbuffer)
            rows.append({"offspring": label, "live_filters": _live_filters(child),
                         "predicted_ms": predicted, "size_bytes": report.size_bytes,
                         "int8_max_abs_error": report.max_abs_error, **facts})
        row["export_failures"] = failures
        if not rows:
            raise RuntimeError("no offspring could be exported")
        stage = "timing"
        print(f"timing {len(rows)} flatbuffers interleaved: {FLAGS.rounds} rounds, "
              f"{FLAGS.instances} interpreter(s) each", flush=True)
        measured = time_side_by_side(flatbuffers, FLAGS.rounds, FLAGS.instances, FLAGS.budget_ms)
        row.update(summarize(rows, measured))
        row["status"] = "ok"
    except Exception as error:  # noqa: BLE001 - one network's failure is its row
        row.update(stage=stage, error=_describe(error))
        print(f"  {name}: {stage} failed: {row['error'][:300]}", flush=True)
    row["seconds"] = time.perf_counter() - started
    return row


def summarize(rows, measured):
    """Errors of `rows` (dicts with `offspring` and `predicted_ms`) against
    `measured` ms: each row's, and the network's median / worst / uncut.

    >>> rows = [{"offspring": "uncut", "predicted_ms": 1.1},
    ...         {"offspring": "cut", "predicted_ms": 0.4}]
    >>> s = summarize(rows, [1.0, 0.5])
    >>> [round(s[k], 3) for k in ("uncut_error", "median_abs_error", "worst_abs_error")]
    [0.1, 0.15, 0.2]
    >>> round(s["rows"][1]["anchored_error"], 3)
    -0.273
    """
    uncut = next((r for r in rows if r["offspring"] == "uncut"), None)
    ratio = None
    for r, ms in zip(rows, measured, strict=True):
        r["measured_ms"] = float(ms)
        r["error"] = r["predicted_ms"] / ms - 1.0
        if r is uncut:
            ratio = ms / r["predicted_ms"]
    for r in rows:
        r["anchored_error"] = None if ratio is None else r["predicted_ms"] * ratio / r[
            "measured_ms"] - 1.0
        if uncut is not None:
            r["predicted_vs_uncut"] = r["predicted_ms"] / uncut["predicted_ms"]
            r["measured_vs_uncut"] = r["measured_ms"] / uncut["measured_ms"]
    errors = [abs(r["error"]) for r in rows]
    anchored = [abs(r["anchored_error"]) for r in rows
                if r is not uncut and r["anchored_error"] is not None]
    return {
        "offspring": len(rows),
        "uncut_error": None if uncut is None else uncut["error"],
        "median_abs_error": float(np.median(errors)),
        "worst_abs_error": float(max(errors)),
        "median_anchored_error": float(np.median(anchored)) if anchored else None,
        "worst_anchored_error": float(max(anchored)) if anchored else None,
        "rows": rows,
    }


def judge(networks):
    """The zoo against `TARGETS`: pooled relative errors of every offspring
    of every network that ran, the worst uncut error, the longest measuring
    (tables read from the cache excluded).

    >>> ok = {"status": "ok", "uncut_error": -0.05, "measure_s": 200.0, "table_cached": False,
    ...       "rows": [{"error": -0.05}, {"error": 0.12}, {"error": 0.3}]}
    >>> verdict = judge([ok, {"status": "error"}])
    >>> verdict["median_error"]["value"], verdict["worst_error"]["met"]
    (0.12, False)
    >>> verdict["networks_ok"], verdict["networks_failed"], verdict["all_met"]
    (1, 1, False)
    """
    ran = [n for n in networks if n.get("status") == "ok"]
    errors = [abs(r["error"]) for n in ran for r in n["rows"]]
    uncut = [abs(n["uncut_error"]) for n in ran if n.get("uncut_error") is not None]
    measured = [n["measure_s"] for n in ran if not n.get("table_cached")]
    values = {
        "median_error": float(np.median(errors)) if errors else None,
        "worst_error": float(max(errors)) if errors else None,
        "uncut_error": float(max(uncut)) if uncut else None,
        "measure_seconds": float(max(measured)) if measured else None,
    }
    verdict = {key: {"limit": TARGETS[key], "value": value,
                     "met": None if value is None else value <= TARGETS[key]}
               for key, value in values.items()}
    verdict["networks_ok"] = len(ran)
    verdict["networks_failed"] = len(networks) - len(ran)
    verdict["all_met"] = bool(ran) and all(v["met"] for k, v in verdict.items()
                                           if k in TARGETS) and len(ran) == len(networks)
    return verdict


def _pct(value):
    return "-" if value is None else f"{value:+.1%}"


def markdown(networks, verdict):
    """The results as a Markdown table, then the targets."""
    lines = [
        "| network | input | table measured | points | offspring | uncut error | median "
        "abs error | worst abs error | median / worst anchored | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for n in networks:
        if n.get("status") != "ok":
            lines.append(f"| {n['network']} | {n.get('input_size', '-')} | - | - | - | - | - "
                         f"| - | - | {n.get('stage', '?')} failed: "
                         f"{n.get('error', '?')[:120].replace('|', '/')} |")
            continue
        measured = "cached" if n["table_cached"] else f"{n['measure_s']:.0f} s"
        anchored = (f"{_pct(n['median_anchored_error'])[1:]} / "
                    f"{_pct(n['worst_anchored_error'])[1:]}")
        note = "; ".join(
            [f"{len(n['export_failures'])} offspring failed"] * bool(n["export_failures"])
            + [f"{n['unsupported_layers_skipped']} layers not evolvable"]
            * bool(n["unsupported_layers_skipped"])
            + [f"untimed: {', '.join(n['untimed_layers'])}"] * bool(n.get("untimed_layers"))
            + [f"evolved draw expected {r['expected_latency_fraction']:.0%} of the latency, "
               f"predicted {r['predicted_vs_uncut']:.0%}, measured {r['measured_vs_uncut']:.0%}"
               for r in n["rows"] if "expected_latency_fraction" in r
               and "predicted_vs_uncut" in r])
        uncut_ms = next((r["measured_ms"] for r in n["rows"] if r["offspring"] == "uncut"), None)
        size = f"{n['input_size']}" + ("" if uncut_ms is None else f" ({uncut_ms:.2f} ms)")
        lines.append(
            f"| {n['network']} | {size} | {measured} | {n['table_points']} | {n['offspring']} "
            f"| {_pct(n['uncut_error'])} | {n['median_abs_error']:.1%} "
            f"| {n['worst_abs_error']:.1%} | {anchored} | {note} |")
    lines.append("")
    for key, limit in TARGETS.items():
        v = verdict[key]
        shown = "-" if v["value"] is None else (
            f"{v['value']:.0f} s" if key == "measure_seconds" else f"{v['value']:.1%}")
        bound = f"{limit:.0f} s" if key == "measure_seconds" else f"{limit:.0%}"
        status = {True: "met", False: "NOT met", None: "no data"}[v["met"]]
        lines.append(f"- {key.replace('_', ' ')}: {shown} (target <= {bound}): {status}")
    lines.append(f"- networks: {verdict['networks_ok']} ran, {verdict['networks_failed']} failed")
    return "\n".join(lines)


def load_previous(path):
    """`{network: row}` already in `path` (none when it is missing), error
    rows included (`main` runs those again)."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        previous = json.load(f)
    if previous.get("benchmark") != "latency_zoo":
        raise ValueError(f"{path} is not a latency_zoo result; pass --fresh or another --json.")
    return {n["network"]: n for n in previous.get("networks", [])}


def to_run(names, done):
    """The networks of `names` a resumed run measures: those without a row
    in `done` (`load_previous`) and those whose row is an error.

    >>> to_run(["A", "B", "C"], {"A": {"status": "ok"}, "B": {"status": "error"}})
    ['B', 'C']
    """
    return [n for n in names if n not in done or done[n]["status"] == "error"]


def main(argv):
    del argv
    import keras

    from recipes.apputil import quiet_tensorflow

    quiet_tensorflow(FLAGS.verbose)
    available = constructors()
    names = selected(FLAGS.networks, available)
    try:
        keeps = [float(k) for k in FLAGS.keep]
    except ValueError:
        keeps = [-1.0]
    if not all(0.0 < k <= 1.0 for k in keeps) or not 0.0 <= FLAGS.evolved_keep < 1.0:
        raise ValueError(f"--keep must be fractions in (0, 1] and --evolved_keep in [0, 1), got "
                         f"{','.join(FLAGS.keep)} and {FLAGS.evolved_keep}.")
    done = {} if FLAGS.fresh else load_previous(FLAGS.json)
    config = {"networks": names, "size": FLAGS.size, "keep": FLAGS.keep,
              "evolved_keep": FLAGS.evolved_keep, "rounds": FLAGS.rounds,
              "budget_ms": FLAGS.budget_ms, "instances": FLAGS.instances, "threads": 1,
              "batch": 1, "step": FLAGS.step, "coarse": FLAGS.coarse,
              "dense_below": FLAGS.dense_below, "refine": FLAGS.refine,
              "untimed": FLAGS.untimed, "seed": FLAGS.seed, "weights": None, "classes": 10}
    todo = to_run(names, done)
    failed = [n for n in todo if n in done]
    if failed:
        print(f"failed in {FLAGS.json}, running again: {', '.join(failed)}")
    skipped = [n for n in names if n not in todo]
    if skipped:
        print(f"already in {FLAGS.json} (--fresh runs them again): {', '.join(skipped)}")
    for name in todo:
        done[name] = run_network(name, available[name])
        keras.backend.clear_session()
        gc.collect()
        results = [done[n] for n in names if n in done] + [
            row for n, row in done.items() if n not in names]
        save_result(FLAGS.json, {"benchmark": "latency_zoo", "config": config,
                                 "targets": judge(results), "networks": results})
    results = [done[n] for n in names]  # the table shows the networks asked for
    table = markdown(results, judge(results))
    print("\nint8 LiteRT, 1 thread, batch 1, interleaved; error = predicted / measured - 1\n")
    print(table)
    if FLAGS.markdown:
        os.makedirs(os.path.dirname(FLAGS.markdown) or ".", exist_ok=True)
        with open(FLAGS.markdown, "w") as f:
            f.write(table + "\n")
        print(f"wrote {FLAGS.markdown}")


if __name__ == "__main__":
    define_flags()
    apputil.run(main)
