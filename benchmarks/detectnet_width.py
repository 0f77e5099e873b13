"""How much room does the CPU-default DetectNet leave for synthesis? (issue 10)

Two bounds on what any filter cut can reach, measured on this host:

1. **Speed**: the CPU-default DetectNet (128x384, `batch_norm="all"`) at
   uniformly thinner widths (every trunk convolution scaled alike, about what
   a lineage that cuts every layer the same reaches), untrained, exported to
   int8 LiteRT directly, with the stem rewritten space-to-depth
   (`space_to_depth=["conv1_7x7_s2"]`) and with the wide rewrite
   (`{"conv1_7x7_s2": 2}`), plus the float32 export of the widest, all timed
   in this process, interleaved round by round (LiteRT, XNNPACK, 1 thread).
2. **Accuracy** (`--train_widths`): the same network trained from scratch to
   its plateau at those widths (`recipes.detectnet.train`, the settings of
   `recipes.detectnet.evolve`'s ancestor: 1,000 generated scenes, 500
   validation scenes, `--plateau=4 --epochs=60`; cached in
   `--out_dir/width_W`, about 12 min per width on 2 cores): if a thin network
   trained from scratch scores far below the ancestor, the ancestor is not
   over-parameterized for the scenes and a lineage cannot keep its accuracy
   at that size either.

    python -m benchmarks.detectnet_width --train_widths=0.1 \\
        --json benchmarks/results/detectnet_width.json
"""

import json
import os
import subprocess
import sys

import numpy as np
from absl import app, flags, logging

from benchmarks.common import define_timing_flags, save_result, time_side_by_side
from recipes import apputil

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    """Defines the benchmark's absl flags (called by `__main__` only)."""
    define = {"flag_values": flag_values}
    define_timing_flags(flag_values, "detectnet_width", 15, "weights, scenes and calibration data")
    flags.DEFINE_list("widths", ["0.25", "0.2", "0.15", "0.1"], "Width multipliers; the first is "
                      "the reference (the CPU default is 0.25).", **define)
    flags.DEFINE_list("train_widths", [], "Widths to train from scratch to their plateau (cached).",
                      **define)
    flags.DEFINE_string("out_dir", "runs/detectnet_width", "Where trained widths are cached.",
                        **define)
    apputil.define_verbose(flag_values)


STEM = "conv1_7x7_s2"
FORMS = {"direct": None, "space_to_depth": [STEM], "wide": {STEM: 2}}
TRAIN_FLAGS = ["--plateau=4", "--epochs=60", "--num_train=1000", "--num_val=500"]


def trained(width):
    """`metrics.json` of `width` trained from scratch (trained once, cached)."""
    out = os.path.join(FLAGS.out_dir, f"width_{width:g}")
    path = os.path.join(out, "metrics.json")
    if not os.path.exists(path):
        print(f"training width {width:g} from scratch into {out} ...", flush=True)
        subprocess.run([sys.executable, "-m", "recipes.detectnet.train", f"--width={width}",
                        f"--seed={FLAGS.seed}", f"--out_dir={out}", *TRAIN_FLAGS], check=True)
    with open(path) as f:
        return json.load(f)


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO if FLAGS.verbose else logging.ERROR)
    from keras_evosynth import stats
    from keras_evosynth.export import export_litert
    from keras_evosynth.latency.timing import cpu_name
    from recipes.detectnet.model import detectnet

    widths = [float(w) for w in FLAGS.widths]
    rng = np.random.default_rng(FLAGS.seed)
    data = rng.uniform(0, 255, (16, 128, 384, 3)).astype("float32")
    print(f"host CPU: {cpu_name()}, LiteRT XNNPACK, 1 thread, batch 1", flush=True)
    flatbuffers, labels, rows = [], [], []
    for width in widths:
        model = detectnet(input_size=(128, 384), width=width, batch_norm="all")
        row = {"width": width, "synapses": stats.summary(model, print_fn=None).synapses}
        forms = dict(FORMS)
        if width == widths[0]:
            forms["float32"] = None
        for form, selection in forms.items():
            mode = "float32" if form == "float32" else "int8"
            try:
                report = export_litert(model, data, mode=mode, space_to_depth=selection)
            except RuntimeError as error:  # XNNPACK refuses a collapsed random filter
                row[f"{form}_error"] = str(error)[:200]
                continue
            flatbuffers.append(report.flatbuffer)
            labels.append((row, form))
        rows.append(row)
    print(f"timing {len(flatbuffers)} flatbuffers interleaved, {FLAGS.rounds} rounds",
          flush=True)
    for (row, form), ms in zip(labels, time_side_by_side(flatbuffers, FLAGS.rounds,
                                                         FLAGS.instances), strict=True):
        row[f"{form}_ms"] = float(ms)
    reference = rows[0]
    for width in FLAGS.train_widths:
        metrics = trained(float(width))
        row = next((r for r in rows if r["width"] == float(width)), None)
        if row is None:
            raise app.UsageError(f"--train_widths {width} is not in --widths")
        row["trained_mAP"] = metrics["convergence"]["kept_mAP"]
        row["trained_epochs"] = metrics["convergence"]["epochs_run"]
    print(f"{'width':>6} {'synapses':>9} {'fewer':>6} {'direct':>8} {'s2d':>8} {'wide':>8}"
          f" {'vs ref int8':>11} {'vs ref f32':>10} {'mAP':>6}")
    for row in rows:
        row["synaptic_efficiency"] = reference["synapses"] / row["synapses"]
        fastest = min(row.get(f"{f}_ms", np.inf) for f in FORMS)
        row["speedup_vs_reference_int8"] = reference["direct_ms"] / fastest
        row["speedup_vs_reference_float32"] = reference["float32_ms"] / fastest
        cells = [f"{row.get(f'{f}_ms', float('nan')):8.3f}" for f in FORMS]
        print(f"{row['width']:6.3g} {row['synapses']:9,d} {row['synaptic_efficiency']:5.1f}x "
              + " ".join(cells) + f" {row['speedup_vs_reference_int8']:10.2f}x"
              f" {row['speedup_vs_reference_float32']:9.2f}x"
              f" {row.get('trained_mAP', float('nan')):6.1f}")
    print(f"reference width {reference['width']:g} float32: {reference['float32_ms']:.3f} ms")
    save_result(FLAGS.json, {
        "benchmark": "detectnet_width",
        "config": {"widths": widths, "train_widths": FLAGS.train_widths,
                   "train_flags": TRAIN_FLAGS, "rounds": FLAGS.rounds,
                   "instances": FLAGS.instances, "threads": 1, "batch": 1,
                   "seed": FLAGS.seed},
        "rows": rows,
    })


if __name__ == "__main__":
    define_flags()
    apputil.run(main)
