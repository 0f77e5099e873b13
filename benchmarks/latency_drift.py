"""Latency tables on a loaded host: does a neighbour's load during the
measurement shift the prediction?

1. **Probe**: the empty model, three int8 conv micro-models (about 1 us to
   0.5 ms) and the whole int8 network, timed interleaved (median of
   `--repeats` `time_interleaved` calls) on a quiet host and while
   `--neighbours` processes of each `--loads` kind run beside them
   (`matmul`: NumPy matrix products, compute-bound; `memcopy`: 320 MB
   copies, memory-bound); each figure's ratio to the quiet one.
2. **Tables**: the network's `LatencyTable` measured twice into no cache,
   once quiet and once with the neighbours running for the first half of
   the quiet measurement's duration; the uncut network and random cuts
   (`--cuts` of every layer's filters removed) are exported (int8, the
   quiet table's rewrites) and timed interleaved on the quiet host; each
   table's prediction error, and the drift its reference recorded.

    python -m benchmarks.latency_drift --json benchmarks/results/latency_drift.json

Keep other work off the CPU while it runs (the quiet figures must be quiet).
"""

import subprocess
import sys
import threading
import time

import numpy as np
from absl import flags

from benchmarks.common import define_timing_flags, save_result, time_side_by_side
from benchmarks.latency_table import build, random_cut
from keras_evosynth import evolvable
from keras_evosynth.export import export_litert
from keras_evosynth.latency import LatencyTable
from keras_evosynth.latency.timing import (
    cpu_name,
    int8_flatbuffer,
    interpreter,
    micro_model,
    null_flatbuffer,
    time_interleaved,
)
from recipes import apputil

FLAGS = flags.FLAGS

LOADS = {
    "matmul": "import numpy as np\na = np.random.rand(512, 512)\nwhile True: a @ a",
    "memcopy": "import numpy as np\na = np.ones(40_000_000); b = np.empty_like(a)\n"
    "while True: np.copyto(b, a)",
}
# (input side, channels): 3x3 "same" int8 convolutions of about 1 us, 35 us, 0.5 ms
PROBES = ((8, 16), (28, 32), (56, 64))


def define_flags(flag_values=FLAGS):
    """Defines the benchmark's absl flags (called by `__main__` only)."""
    define = {"flag_values": flag_values}
    define_timing_flags(flag_values, "latency_drift", 10, "the cuts")
    flags.DEFINE_enum("model", "fashion_cnn", ["fashion_cnn", "mobilenet_v2", "detectnet"],
                      "Network (benchmarks.latency_table's).", **define)
    flags.DEFINE_integer("mobilenet_size", 96, "MobileNetV2 input side.", **define)
    flags.DEFINE_float("mobilenet_alpha", 0.35, "MobileNetV2 width.", **define)
    flags.DEFINE_list("loads", list(LOADS), "Neighbour kinds.", **define)
    flags.DEFINE_integer("neighbours", 3, "Neighbour processes of each kind.", lower_bound=1,
                         **define)
    flags.DEFINE_integer("repeats", 5, "time_interleaved calls per probe figure.", lower_bound=1,
                         **define)
    flags.DEFINE_list("cuts", ["0.4", "0.7"], "Fractions of filters removed per cut.", **define)
    flags.DEFINE_float("budget_ms", 40.0, "Invoke time per flatbuffer per round.", **define)
    apputil.define_verbose(flag_values)


class Neighbours:
    """`count` processes running `LOADS[kind]` until `stop()`."""

    def __init__(self, kind, count):
        self.procs = [subprocess.Popen([sys.executable, "-c", LOADS[kind]])
                      for _ in range(count)]
        time.sleep(2.0)  # let them start (NumPy import) before timing

    def stop(self):
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait()


def probe(whole):
    """`{condition: {model: ms}}` of the probe models quiet and loaded."""
    def conv(side, channels):
        signature = {"op": "conv2d", "input": (side, side), "kernel": (3, 3), "strides": (1, 1),
                     "padding": "same", "dilation": (1, 1), "activation": "relu"}
        return int8_flatbuffer(micro_model(signature, channels, channels))

    names = ["empty", *(f"conv {s}x{s}x{c}" for s, c in PROBES), "whole"]
    flatbuffers = [null_flatbuffer(), *(conv(s, c) for s, c in PROBES), whole]
    interps = [interpreter(f, 1) for f in flatbuffers]

    def medians():
        runs = [time_interleaved(interps, rounds=5) for _ in range(FLAGS.repeats)]
        return {n: float(np.median([r[i] for r in runs])) for i, n in enumerate(names)}

    result = {"quiet": medians()}
    for kind in FLAGS.loads:
        neighbours = Neighbours(kind, FLAGS.neighbours)
        try:
            result[f"{kind} x{FLAGS.neighbours}"] = medians()
        finally:
            neighbours.stop()
    quiet = result["quiet"]
    for condition, figures in result.items():
        print(f"{condition:<12}" + " ".join(f"{n} {ms:.4f} ms ({ms / quiet[n]:.3f}x)"
                                           for n, ms in figures.items()), flush=True)
    return result


def measure(model, load_s=0.0):
    """`(table, seconds)`, neighbours of every kind running for `load_s`."""
    neighbours = []

    def load():
        for kind in FLAGS.loads:
            neighbours.append(Neighbours(kind, FLAGS.neighbours))
        time.sleep(load_s)
        for n in neighbours:
            n.stop()

    thread = threading.Thread(target=load) if load_s else None
    if thread:
        thread.start()
    start = time.perf_counter()
    try:
        table = LatencyTable.measure(evolvable(model), verbose=int(FLAGS.verbose))
    finally:
        if thread:
            thread.join()
    return table, time.perf_counter() - start


def main(argv):
    del argv
    print(f"host CPU: {cpu_name()}, LiteRT XNNPACK, 1 thread, batch 1, int8", flush=True)
    base, data = build(FLAGS.model)
    whole = export_litert(evolvable(base), data).flatbuffer
    probes = probe(whole)
    quiet, quiet_s = measure(base)
    loaded, loaded_s = measure(base, load_s=quiet_s / 2)
    rng = np.random.default_rng(FLAGS.seed)
    cuts = [("uncut", evolvable(base))]
    for fraction in (float(f) for f in FLAGS.cuts):
        evo = evolvable(base)
        random_cut(evo, fraction, rng)
        cuts.append((f"random {fraction:.0%}", evo))
    flatbuffers = [export_litert(evo, data, space_to_depth=quiet).flatbuffer for _, evo in cuts]
    measured = time_side_by_side(flatbuffers, FLAGS.rounds, FLAGS.instances, FLAGS.budget_ms)
    rows = []
    for (label, evo), ms in zip(cuts, measured, strict=True):
        row = {"offspring": label, "measured_ms": float(ms)}
        for name, table in (("quiet", quiet), ("loaded", loaded)):
            row[f"{name}_predicted_ms"] = table.predict(evo)
            row[f"{name}_error"] = row[f"{name}_predicted_ms"] / ms - 1.0
        rows.append(row)
        print(f"{label:<12} measured {ms:.4f} ms, quiet table {row['quiet_error']:+.1%}, "
              f"loaded table {row['loaded_error']:+.1%}", flush=True)
    drift = {name: next(iter(t.models.values())).get("drift")
             for name, t in (("quiet", quiet), ("loaded", loaded))}
    print(f"reference drift seen: quiet x{drift['quiet']['spread']:.3f}, "
          f"loaded x{drift['loaded']['spread']:.3f}", flush=True)
    save_result(FLAGS.json, {
        "benchmark": "latency_drift",
        "config": {"model": FLAGS.model, "loads": FLAGS.loads, "neighbours": FLAGS.neighbours,
                   "repeats": FLAGS.repeats, "cuts": FLAGS.cuts, "rounds": FLAGS.rounds,
                   "instances": FLAGS.instances, "threads": 1, "seed": FLAGS.seed},
        "probe": probes,
        "tables": {"quiet_s": quiet_s, "loaded_s": loaded_s, "load_s": quiet_s / 2,
                   "drift": drift},
        "rows": rows,
    })


if __name__ == "__main__":
    define_flags()
    apputil.run(main)
