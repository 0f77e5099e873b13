"""Small helpers shared by the recipe apps."""

import math

from keras_evosynth import LatencyTarget, ResourceTarget

# How a recipe's offspring shrink (`--synthesis`):
# - "filters": each offspring keeps `keep` of its parent's MACs by losing whole
#   filters (R_c solved, R_s = e so every synapse of a live filter survives):
#   compaction turns all of it into speed.
# - "synapses": the paper's probabilities on both levels (R_c = R_s solved for
#   `keep` of the synapses): higher synaptic efficiency, mostly unstructured.
# - "latency": each offspring keeps `keep` of its parent's *predicted int8
#   LiteRT latency* (a `LatencyTable` measured on this host), per-layer
#   cluster factors where the time goes, whole filters only.
SYNTHESIS = ("filters", "synapses", "latency")


def fit_lineage(model, evolution, x, y, callbacks=(), loggers=(), **fit_kwargs):
    """`model.fit` for the epochs `evolution`'s lineage still needs
    (`EvolutionCallback.epochs`: 0 for a complete lineage, which then only
    loads its records), with the callbacks in the order the lineage numbers
    need.

    Args:
        model: The compiled evolvable model.
        evolution: Its `EvolutionCallback`, put after `callbacks` so that
            metrics they add reach it.
        x, y: Training data.
        callbacks: Other callbacks (those adding the monitored metric).
        loggers: Callbacks put after `evolution` (`TensorBoard`,
            `CSVLogger`), so that they record the lineage numbers it adds to
            the epoch logs (`generation`, `synapses`, ...).
        **fit_kwargs: Passed to `fit` (batch size, validation data, ...).
    """
    model.fit(x, y, epochs=evolution.epochs, callbacks=[*callbacks, evolution, *loggers],
              **fit_kwargs)


def tfmot_wanted(mode):
    """Whether a recipe's `--tfmot` (`auto`, `on`, `off`) asks for the tfmot
    baseline: `auto` when tensorflow-model-optimization is installed (looked
    up without importing it, which would switch this process to tf_keras)."""
    import importlib.util

    if mode == "off":
        return False
    installed = importlib.util.find_spec("tensorflow_model_optimization") is not None
    if mode == "on" and not installed:
        raise ValueError(
            "--tfmot=on needs tensorflow-model-optimization and tf-keras: "
            "pip install 'keras-evosynth[baselines]'."
        )
    return installed


def environment_for(synthesis, keep, latency_table=None, adaptive=False, sensitivity_data=None,
                    max_layer_cut=None, remove_branches=False, vanish=False):
    """The environment of a `--synthesis` choice: a `ResourceTarget`, or for
    `"latency"` a `LatencyTarget` on the ancestor's `latency_table` (see
    `latency_table_for`); `adaptive`: the adaptive step; `sensitivity_data`:
    `(x, y)` for the latency pressure's Taylor sensitivity; `max_layer_cut`:
    the per-layer cap of latency targets; `remove_branches`: latency targets
    may remove whole inception branches; `vanish`: a branch member whose
    draws leave no filter takes its branch with it, any synthesis).

    Example:

    >>> environment_for("filters", 0.7).solve
    'cluster'
    >>> environment_for("synapses", 0.7, adaptive=True).adaptive
    True
    """
    common = {"fraction": keep, "adaptive": adaptive, "vanish": vanish}
    if synthesis == "latency":
        return LatencyTarget(latency_table, sensitivity_data=sensitivity_data,
                             max_layer_cut=max_layer_cut, remove_branches=remove_branches,
                             **common)
    if synthesis == "filters":
        return ResourceTarget(resource="macs", solve="cluster", fixed_factor=math.e, **common)
    if synthesis == "synapses":
        return ResourceTarget(resource="synapses", solve="both", **common)
    raise ValueError(f"synthesis must be one of {SYNTHESIS}, got {synthesis!r}.")


def latency_table_for(model, out_dir, print_fn=print):
    """Measures (or reads from `out_dir/latency_cache`) the int8 LiteRT
    latency table of `model` on this host, for `--synthesis=latency`."""
    import os

    import keras_evosynth as ke

    evo = ke.evolvable(model)
    table = ke.LatencyTable.measure(evo, cache_dir=os.path.join(out_dir, "latency_cache"))
    print_fn(f"latency table: {table.path} ({len(table.entries)} op signatures, predicted "
             f"ancestor {table.predict(evo):.3f} ms)")
    return table


def define_verbose(flag_values=None):
    """Defines the recipes' `--verbose` flag (read before TensorFlow loads
    by `tflite_bench.quiet.quiet_startup`, then by `quiet_tensorflow`)."""
    from absl import flags

    flags.DEFINE_bool("verbose", False, "Show TensorFlow's, absl's and LiteRT's log lines, the "
                      "native ones included (hidden by default).",
                      flag_values=flags.FLAGS if flag_values is None else flag_values)


def define_population(flag_values=None):
    """Defines the recipes' population flags: `--population`,
    `--trial_steps`, `--ray_address` and `--ray_resources`."""
    from absl import flags

    define = {"flag_values": flags.FLAGS if flag_values is None else flag_values}
    flags.DEFINE_integer("population", 1, "Candidates sampled per generation; with more than 1 "
                         "each is trained --trial_steps batches and the fittest is kept.",
                         **define)  # fmt: skip
    flags.DEFINE_integer("trial_steps", 20, "Training batches of each candidate's trial.",
                         **define)  # fmt: skip
    flags.DEFINE_string("ray_address", "", "Run the population's trials on Ray: 'local' starts "
                        "a cluster on this machine, 'auto' joins the running one (ray start "
                        "--head on one host, ray start --address=HEAD:6379 on the others), or "
                        "HOST:PORT. Empty: one after another here.", **define)  # fmt: skip
    flags.DEFINE_list("ray_resources", ["CPU:1"], "Ray resources of one trial worker, e.g. "
                      "CPU:4 or GPU:1,CPU:2.", **define)  # fmt: skip


def population_settings(values):
    """`EvolutionCallback` keywords from the population flags: `population`,
    `trial_steps` and, with `--ray_address`, a `RayExecutor`.

    >>> from types import SimpleNamespace as S
    >>> population_settings(S(population=1, trial_steps=20, ray_address="",
    ...                       ray_resources=["CPU:1"]))
    {}
    """
    if values.population < 1 or values.trial_steps < 1:
        raise ValueError(f"--population and --trial_steps must be >= 1, got "
                         f"{values.population} and {values.trial_steps}.")  # fmt: skip
    if values.population == 1:
        if values.ray_address:
            raise ValueError("--ray_address runs population trials: pass --population > 1.")
        return {}
    settings = {"population": values.population, "trial_steps": values.trial_steps}
    if values.ray_address:
        from keras_evosynth.distributed import RayExecutor

        resources = {}
        for item in values.ray_resources:
            name, _, amount = item.partition(":")
            try:
                resources[name.strip()] = float(amount)
            except ValueError:
                raise ValueError(f"--ray_resources: {item!r} is not NAME:AMOUNT.") from None
        address = None if values.ray_address == "local" else values.ray_address
        settings["executor"] = RayExecutor(address=address, resources_per_candidate=resources)
    return settings


STRATEGIES = ("none", "mirrored", "multi_worker")
PRECISION_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
# `--mixed_precision=auto`: the fastest of these, measured (`fastest_policy`)
AUTO_POLICY = "auto"
MULTI_WORKER_REFUSAL = (
    "--strategy=multi_worker is refused: Keras 3 with the TensorFlow backend fails under "
    "tf.distribute.MultiWorkerMirroredStrategy even for a plain model (upstream "
    "keras-team/keras#20585; reproduced here with 2 local workers). Use --strategy=mirrored "
    "(all GPUs of one host), or spread evolution's trials over hosts with --population and "
    "--ray_address."
)


def define_distribution(flag_values=None):
    """Defines `--strategy`, `--mixed_precision` and `--tensorboard`."""
    from absl import flags

    define = {"flag_values": flags.FLAGS if flag_values is None else flag_values}
    flags.DEFINE_enum("strategy", "none", list(STRATEGIES), "tf.distribute strategy: mirrored "
                      "trains data-parallel on all visible GPUs (all logical CPU devices when "
                      "there is no GPU); multi_worker is refused (keras-team/keras#20585).",
                      **define)  # fmt: skip
    flags.DEFINE_enum("mixed_precision", "float32", [AUTO_POLICY, *PRECISION_POLICIES], "Keras "
                      "dtype policy; evolvable layers keep masks and quantizer maths in float32. "
                      "auto: the fastest on this host, timed on a few training steps of the "
                      "model (mixed_bfloat16 on CPUs with AMX/AVX512-BF16, float32 on others; "
                      "cached in --out_dir).", **define)  # fmt: skip
    flags.DEFINE_bool("tensorboard", False, "Write TensorBoard logs to --out_dir/logs (needs "
                      "the tensorboard package: keras-evosynth[tensorboard]).", **define)


# CPU features that decide whether bfloat16 trains fast: the same model name
# ("Intel(R) Xeon(R) Processor") is reported by hosts with and without AMX
# (one measured mixed_bfloat16 2.6x faster than float32, the other 1.5x slower)
BFLOAT16_FEATURES = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512_fp16")


def cpu_features(names=BFLOAT16_FEATURES, cpuinfo="/proc/cpuinfo"):
    """The features of `names` that this CPU reports (its `flags` line in
    `cpuinfo`; none where the file is missing, as on macOS).

    Example:

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix="cpuinfo", delete=False) as f:
    ...     _ = f.write("flags : fpu avx512_bf16 avx2")
    >>> cpu_features(cpuinfo=f.name)
    ['avx512_bf16']
    """
    try:
        with open(cpuinfo) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    flags = next((set(line.split(":", 1)[1].split()) for line in lines
                  if line.startswith("flags")), set())  # fmt: skip
    return [name for name in names if name in flags]


def _host_key():
    """What decides the fastest policy: the CPU model, its bfloat16 features
    (`cpu_features`) and the visible GPUs."""
    import tensorflow as tf

    from tflite_bench.bench import host_facts

    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    return {"cpu": host_facts()["processor"], "cpu_features": cpu_features(), "gpus": gpus}


def fastest_policy(build, batch, out_dir=None, steps=3, print_fn=print):
    """The fastest Keras dtype policy for training `build()` on this host,
    by measurement: for each candidate (float32 and mixed_bfloat16 on a CPU;
    mixed_float16 too with a GPU), one warm-up `train_on_batch` and the
    median of `steps` timed ones. The answer is cached in
    `out_dir/precision_policy.json` with the host it was measured on, and
    measured again on another host.

    Args:
        build: `build()` returns the compiled model, built under the current
            global policy.
        batch: `(x, y)` of one training batch.
        out_dir: Where the answer is cached (None: not cached).
        steps: Timed steps per policy.
        print_fn: Progress printer (None: silent).

    Returns:
        `(policy name, {policy: median seconds per step})`.
    """
    import json
    import os
    import time

    import keras
    import numpy as np

    print_fn = print_fn or (lambda line: None)
    host = _host_key()
    path = os.path.join(out_dir, "precision_policy.json") if out_dir else None
    if path and os.path.exists(path):
        with open(path) as f:
            cached = json.load(f)
        if cached.get("host") == host:
            print_fn(f"precision policy: {cached['policy']} (measured earlier, {path})")
            return cached["policy"], cached["seconds_per_step"]
    candidates = ["float32", "mixed_bfloat16"] + (["mixed_float16"] if host["gpus"] else [])
    before = keras.mixed_precision.global_policy().name
    seconds = {}
    try:
        for policy in candidates:
            keras.mixed_precision.set_global_policy(policy)
            model = build()
            model.train_on_batch(*batch)  # traces
            times = []
            for _ in range(steps):
                start = time.perf_counter()
                model.train_on_batch(*batch)
                times.append(time.perf_counter() - start)
            seconds[policy] = float(np.median(times))
            del model
            keras.backend.clear_session()
    finally:
        keras.mixed_precision.set_global_policy(before)
    policy = min(seconds, key=seconds.get)
    timings = ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in seconds.items())
    print_fn(f"precision policy: {policy} (a training step: {timings})")
    if path:
        os.makedirs(out_dir, exist_ok=True)
        with open(path, "w") as f:
            json.dump({"policy": policy, "seconds_per_step": seconds, "host": host}, f, indent=1)
    return policy, seconds


def refuse_mismatch(where, stored, current):
    """Raises ValueError naming every setting of `stored` (what a cached
    model was made with) that differs from `current` (what the flags ask
    for now): a cache is never silently reused under other settings.

    Example:

    >>> refuse_mismatch("runs/x/ancestor.keras", {"width": 16, "seed": 0},
    ...                 {"width": 32, "seed": 0})
    Traceback (most recent call last):
    ...
    ValueError: runs/x/ancestor.keras was made with other settings (width: 16 there, 32 now): ...
    """
    differing = [f"{k}: {stored[k]!r} there, {current[k]!r} now" for k in stored
                 if k in current and stored[k] != current[k]]  # fmt: skip
    if differing:
        raise ValueError(f"{where} was made with other settings ({'; '.join(differing)}): "
                         "pass another --out_dir, or delete it to start afresh.")


def distribution_strategy(name):
    """The `tf.distribute` strategy of a `--strategy` value.

    Example:

    >>> distribution_strategy("none").num_replicas_in_sync
    1
    >>> distribution_strategy("multi_worker")
    Traceback (most recent call last):
    ...
    ValueError: --strategy=multi_worker is refused: Keras 3 with the TensorFlow backend ...
    """
    import tensorflow as tf

    if name == "multi_worker":
        raise ValueError(MULTI_WORKER_REFUSAL)
    if name == "none":
        return tf.distribute.get_strategy()
    if name != "mirrored":
        raise ValueError(f"--strategy must be one of {STRATEGIES}, got {name!r}.")
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([device.name for device in devices])


def quiet_tensorflow(verbose=False):
    """Keeps the converter's INFO chatter (Python's absl and TensorFlow
    loggers) out of the recipe's progress output; `verbose=True` (a recipe's
    `--verbose`) lets all of it through, the converter's native log lines
    included (`KERAS_EVOSYNTH_VERBOSE=1`). TensorFlow's native lines at
    import are `tflite_bench.quiet.quiet_startup`'s, which runs earlier."""
    import os

    import tensorflow as tf
    from absl import logging

    from tflite_bench.quiet import VERBOSE_ENV

    if verbose:
        os.environ[VERBOSE_ENV] = "1"
        logging.set_verbosity(logging.INFO)
        tf.get_logger().setLevel("INFO")
        return
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("ERROR")


# The packages of this repository: their flags are an app's own (`complete_help`)
PROJECT_PACKAGES = ("recipes", "benchmarks", "keras_evosynth", "tflite_bench")


def _exit_zero(help_flag):
    """absl's help flag class `help_flag`, exiting 0 instead of 1 after the
    help it prints on stdout."""

    class ExitZero(help_flag):
        def __init__(self):
            super().__init__()
            self.allow_override = True  # replaces absl's own in FlagValues

        def parse(self, argument):
            try:
                super().parse(argument)
            except SystemExit as exit:
                if exit.code == 1:
                    raise SystemExit(0) from None
                raise

    ExitZero.__name__ = ExitZero.__qualname__ = help_flag.__name__
    return ExitZero


def complete_help(flag_values=None):
    """Makes an absl app's `--help` list every flag it accepts and exit 0.

    absl's `--help` lists the key flags of the main module only: the flags
    it defines itself, not those that functions of other modules define for
    it (`define_verbose`, `define_distribution`,
    `recipes.detectnet.train.define_flags`, ...), which only `--helpfull`
    shows amid absl's and TensorFlow's own. Here every flag defined by a
    module of `PROJECT_PACKAGES` becomes a key flag of the main module; and
    `--help`, `--helpshort`, `--helpfull` and `--helpxml` exit with status
    0 (absl's exit 1). Call it once all flags are defined, before `app.run` (`run`
    does).

    Args:
        flag_values: The app's `FlagValues` (absl's global `FLAGS` by
            default).

    Example:

    >>> from absl import flags
    >>> values = flags.FlagValues()
    >>> define_verbose(values)
    >>> complete_help(values)
    >>> import sys
    >>> [flag.name for flag in values.get_key_flags_for_module(sys.argv[0])]
    ['verbose']
    """
    import sys

    from absl import app, flags

    flag_values = flags.FLAGS if flag_values is None else flag_values
    main_module = sys.argv[0]  # absl's name for __main__ (FlagValues.main_module_help)
    for module, defined in list(flag_values.flags_by_module_dict().items()):
        if module != main_module and module.split(".")[0] in PROJECT_PACKAGES:
            for flag in defined:
                flag_values.register_key_flag_for_module(main_module, flag)
    if flag_values is flags.FLAGS:
        app.define_help_flags()  # absl's (idempotent), replaced by ones exiting 0:
        for help_flag in (app.HelpFlag, app.HelpshortFlag, app.HelpfullFlag, app.HelpXMLFlag):
            flags.DEFINE_flag(_exit_zero(help_flag)(), flag_values, module_name="absl.app")


def run(main, argv=None):
    """`absl.app.run(main, argv)`, with a complete `--help` that exits 0
    (`complete_help`) and the errors a user can fix (bad flags,
    damaged lineage or settings, missing or unloadable files: `ValueError`
    and `OSError`) reported as one line on stderr and exit status 1 instead
    of a traceback. `KERAS_EVOSYNTH_TRACEBACK=1` shows the traceback.

    Example:

    >>> def main(argv):
    ...     raise ValueError("Lineage log x/lineage.jsonl is damaged at line 2.")
    >>> import contextlib, io, sys
    >>> err = io.StringIO()
    >>> with contextlib.redirect_stderr(err):
    ...     try:
    ...         run(main, argv=["recipe"])
    ...     except SystemExit as exit:
    ...         code = exit.code
    >>> code, err.getvalue().splitlines()[-1]
    (1, 'error: Lineage log x/lineage.jsonl is damaged at line 2.')
    """
    import os
    import sys

    from absl import app

    def guarded(argv):
        try:
            return main(argv)
        except (ValueError, OSError) as error:
            if os.environ.get("KERAS_EVOSYNTH_TRACEBACK"):
                raise
            print(f"error: {error}", file=sys.stderr, flush=True)
            sys.exit(1)

    complete_help()
    app.run(guarded, argv=argv)
