"""What the benchmark scripts share: their timing and output flags, the
CPU-default DetectNet setting, timing flatbuffers side by side and writing
the JSON result."""

import json
import os

from absl import flags

from tflite_bench.bench import host_facts


def define_timing_flags(flag_values, name, rounds, seed_help, cache_dir=None):
    """Defines the flags every timing benchmark has: `--rounds`,
    `--instances`, `--seed` (`seed_help`: what it seeds), `--json`
    (`bench_out/<name>.json`) and, with `cache_dir`, the latency-table
    cache folder `--cache_dir`."""
    define = {"flag_values": flag_values}
    flags.DEFINE_integer("rounds", rounds, "Interleaved timing rounds.", **define)
    flags.DEFINE_integer("instances", 2, "Interpreters per flatbuffer (their mean is reported).",
                         **define)
    if cache_dir is not None:
        flags.DEFINE_string("cache_dir", cache_dir, "Latency-table cache folder.", **define)
    flags.DEFINE_integer("seed", 0, f"Seed of {seed_help}.", **define)
    flags.DEFINE_string("json", f"bench_out/{name}.json", "Where to write results.", **define)


def save_result(path, result):
    """Adds the host facts to `result`, writes it as JSON to `path` (folders
    created) and says where."""
    result = {**result, "host": host_facts()}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {path}")


def time_side_by_side(flatbuffers, rounds, instances=1, budget_ms=40.0):
    """Median invoke ms of each flatbuffer (LiteRT, 1 thread), all timed in
    this process, interleaved round by round; each figure is the mean over
    `instances` interpreters of the model, so that one interpreter's
    placement in memory does not decide it."""
    import numpy as np

    from keras_evosynth.latency.timing import interpreter, time_interleaved

    interps = [interpreter(f, 1) for f in flatbuffers for _ in range(instances)]
    times = time_interleaved(interps, rounds=rounds, budget_ms=budget_ms, max_runs=1000)
    return np.mean(np.reshape(times, (len(flatbuffers), instances)), axis=1)


def detectnet_default(out_dir, seed):
    """The CPU-default DetectNet of `recipes.detectnet.evolve` with its data.

    The ancestor is trained once into `out_dir/ancestor` (or loaded from
    there). Returns a namespace: `values` (the recipe's flag values),
    `ancestor`, float32 `x` / `xv` images, `grid` (training targets), `yv`
    (validation labels) and `scale` (KITTI's pixel-threshold scale).
    """
    import types

    from absl import flags

    from recipes.detectnet import evaluate as scoring
    from recipes.detectnet import evolve, targets, train

    values = flags.FlagValues()
    evolve.define_flags(values)
    values(["benchmark"])
    values.out_dir, values.seed = out_dir, seed
    # the settings of the recorded results (before augmentation and --plateau existed)
    values.augment, values.epochs, values.plateau = False, 15, 0
    ancestor = evolve.ancestor_model(values)
    size = (values.image_height, values.image_width)
    x, y, xv, yv = train.generated_scenes(size, values.num_train, values.num_val, values.seed)
    return types.SimpleNamespace(
        values=values, ancestor=ancestor, x=x.astype("float32"), xv=xv.astype("float32"),
        grid=targets.encode_batch(y, size), yv=yv, scale=scoring.kitti_scale(size[0]))
