"""The experiment: evolutionary synthesis of DetectNet under precision sweeps.

    python -m recipes.detectnet.evolve --quick              # smoke run, width 0.25, minutes
    python -m recipes.detectnet.evolve --out_dir=runs/detectnet_paper \
        --synthesis=latency --remove_branches               # the paper's regime (see README)
    python -m recipes.detectnet.evolve --precisions=int4 --synthesis=filters --out_dir=runs/dn4

1. Trains the float32 ancestor until its validation mAP plateaus
   (`recipes.detectnet.train.run`, `--plateau=4`, at most `--epochs=60`): by
   default the paper's network, the full-width (`--width=1.0`) GoogLeNet
   DetectNet, on 3,000 generated 384x128 KITTI-format scenes (or
   `--kitti_root`), in the fastest Keras policy this host trains it in
   (`--mixed_precision=auto`: timed, bfloat16 on AMX CPUs), or loads it from
   `--cache_dir/ancestor/model.keras` (default `--out_dir`) after checking
   that it was trained with the same settings. 384x128 rather than KITTI's
   1248x384: a 2-core CPU trains the full trunk at this size in about a
   minute per 1,000 scenes, and the latency structure the paper exploits
   (stem, per-op costs, inception branches) is the same.
   With `--family` (default widths 0.5, 0.35, 0.25, 0.15) the same network
   is also trained from scratch at each thinner width with the same scenes,
   augmentation, schedule and policy (cached in `--cache_dir/family`): what
   a user would try first, timed and tabulated with the lineages.
2. For each precision of `--precisions` (default float32, int8, int4, int2),
   evolves it with `EvolutionCallback` (fitness: DIGITS mAP on the 500
   validation images, computed every epoch, averaged over the last
   `--fitness_epochs` of each retraining, generation 0 included; rollback past
   `--tolerance` mAP points; the coverage/bbox heads protected), each
   offspring keeping `--keep` of its parent's MACs (`--synthesis=filters`,
   the default) or of its predicted int8 LiteRT latency
   (`--synthesis=latency`, with the Taylor `--sensitivity`); this host's
   `LatencyTable` is measured once either way (cached in `--cache_dir`) for the
   records and the space-to-depth export; with `--adaptive` (default) the cut grows
   after an accepted offspring and halves after a rollback. The lineage table
   shows each row's `mAP_spread` (bootstrap standard deviation over the
   validation images): choose `--tolerance` above it.
3. Compacts and exports every accepted generation to int8 LiteRT, scores the
   *converted* flatbuffer (DIGITS mAP, KITTI AP) and benchmarks all of them
   against the float32 and int8 ancestors (`recipes.lineage_table`):
   `--out_dir/lineage.{md,json,png}`, with the headline (the fastest
   generation within 1 mAP point of the float32 ancestor against the
   targets) under the table.
4. With `--tfmot` (auto: when tensorflow-model-optimization is installed),
   adds the tfmot baseline to the same table: the ancestor magnitude-pruned
   by tfmot to the synapse count of the smallest evolved generation, then
   int8 (`recipes.detectnet.tfmot_baseline`, its own process).

Resumable: rerun with the same flags and it continues where it stopped.
`--population=4` samples four candidates per generation, trains each
`--trial_steps` batches and keeps the one with the best mAP; with
`--ray_address=auto` the candidates train side by side on a Ray cluster
(`ray start --head` here, `ray start --address=HEAD:6379` on the other hosts;
`--ray_resources=GPU:1` gives each trial a GPU), with the same lineage.
Full KITTI on GPUs (the paper's setting; docs/detectnet.md says which
archives to download; not yet run on a GPU here):

    python -m recipes.detectnet.evolve --kitti_root=/data/kitti --image_height=384 \\
        --image_width=1248 --width=1.0 --learning_rate=1e-4 --epochs=30 \\
        --num_train=6000 --num_val=1481 --generations=8 --epochs_per_generation=4 \\
        --strategy=mirrored --mixed_precision=mixed_float16 --family= \\
        --out_dir=runs/detectnet_kitti_full

The latency table and the lineage table time LiteRT on the machine that runs
the command: run the export and timing on the deployment CPU (the same
command there resumes the finished lineages and only exports and times).
"""

import functools
import os
import types

import keras
from absl import flags

from recipes import apputil
from recipes.apputil import (
    SYNTHESIS,
    distribution_strategy,
    environment_for,
    fit_lineage,
    latency_table_for,
    population_settings,
    quiet_tensorflow,
    tfmot_wanted,
)
from recipes.detectnet import data, losses, train
from recipes.detectnet import evaluate as scoring
from recipes.detectnet.callbacks import DetectionScore, detection_scores

TFMOT_MAX_EPOCHS = 6
HEADLINE_WITHIN = 1.0  # "accuracy preserved": within 1 DIGITS-mAP point of the float32 ancestor
# --quick: the whole experiment (ancestor, the four lineages, latency table,
# export, timing, tfmot) on little data, to check that it runs end to end
QUICK = {"width": 0.25, "num_train": 300, "num_val": 100, "epochs": 4, "plateau": 0,
         "generations": 2, "epochs_per_generation": 1, "fitness_epochs": 1, "runs": 20,
         "tfmot_epochs": 1, "family": ["0.125"], "mixed_precision": "float32",
         "out_dir": "runs/detectnet_quick"}  # fmt: skip
# The paper's ancestor (width 1.0) and the thinner DetectNets a user would
# train from scratch instead (about 4x, 8x, 16x and 43x fewer synapses)
FAMILY = ["0.5", "0.35", "0.25", "0.15"]
EXTRA_COLUMNS = [("mAP_spread", "±{:.1f}"), ("ap_easy", "{:.1f}"), ("ap_moderate", "{:.1f}"),
                 ("ap_hard", "{:.1f}")]


def define_flags(flag_values=flags.FLAGS):
    """Defines the app's flags: `train`'s plus the evolution's.

    Example:

    >>> values = flags.FlagValues()
    >>> define_flags(values)
    >>> values["precisions"].default, values["synthesis"].default, values["plateau"].default
    (['float32', 'int8', 'int4', 'int2'], 'filters', 4)
    >>> values["width"].default, values["family"].default, values["mixed_precision"].default
    (1.0, ['0.5', '0.35', '0.25', '0.15'], 'auto')
    """
    train.define_flags(flag_values)
    flag_values.set_default("out_dir", "runs/detectnet_evolve")
    # the paper's ancestor: the full GoogLeNet trunk, trained in the fastest
    # policy this host has (bfloat16 on AMX CPUs), on 3,000 scenes so that its
    # training and validation mAP stay within the bootstrap spread
    flag_values.set_default("width", 1.0)
    flag_values.set_default("num_train", 3000)
    flag_values.set_default("mixed_precision", "auto")
    # >= 500 scenes: on 200 the DIGITS mAP of one model moves by ~2-3 points
    # between draws of the validation set (the lineage table's mAP_spread)
    flag_values.set_default("num_val", 500)
    # a converged ancestor: "preserved accuracy" is measured against it
    flag_values.set_default("epochs", 60)
    flag_values.set_default("plateau", 4)
    define = {"flag_values": flag_values}
    apputil.define_population(flag_values)
    flags.DEFINE_list("precisions", ["float32", "int8", "int4", "int2"], "Synaptic precisions, "
                      "one lineage each.", **define)  # fmt: skip
    flags.DEFINE_string("cache_dir", None, "Where the ancestor, the family, the training "
                        "policy and the latency table are cached (default: --out_dir), so that "
                        "several experiments (--out_dir each) share them.", **define)
    flags.DEFINE_list("family", FAMILY, "Widths of the DetectNet a user would train instead: "
                      "each trained from scratch like the ancestor (same scenes, augmentation, "
                      "schedule and policy; cached in --cache_dir/family/width_W), exported and "
                      "timed with the lineages, and compared with them at equal measured "
                      "latency. Empty: none.", **define)  # fmt: skip
    flags.DEFINE_integer("polish_epochs", 0, "Each --family width is then retrained this many "
                         "epochs on the offspring's schedule (--finetune_learning_rate, decayed "
                         "by --finetune_decay), its best epoch kept, cached in "
                         "--cache_dir/family/width_W-polished: the low-rate retraining every "
                         "offspring (and generation 0) gets, given to the thinner networks too. "
                         "0: the family as trained to its plateau.", **define)  # fmt: skip
    flags.DEFINE_integer("generations", 6, "Offspring per lineage.", **define)
    flags.DEFINE_integer("epochs_per_generation", 4, "Retraining epochs per offspring.", **define)
    flags.DEFINE_float("finetune_learning_rate", 3e-4, "Adam rate at the start of each "
                       "retraining (generation 0 too).", **define)  # fmt: skip
    flags.DEFINE_float("finetune_decay", 0.5, "The rate is multiplied by this after every epoch "
                       "of a retraining, so that its last epochs (the fitness) train as slowly "
                       "as the converged ancestor's; 1: constant.", **define)  # fmt: skip
    flags.DEFINE_float("keep", 0.8, "Fraction of the parent's MACs (or predicted latency, "
                       "--synthesis=latency) each offspring keeps.",
                       **define)  # fmt: skip
    flags.DEFINE_enum("synthesis", "filters", list(SYNTHESIS), "See recipes.apputil.", **define)
    flags.DEFINE_float("tolerance", 3.0, "Rollback past this loss of DIGITS mAP points.", **define)
    flags.DEFINE_integer("fitness_epochs", 2, "Fitness: mean DIGITS mAP of the last this many "
                         "epochs of each retraining (<= --epochs_per_generation).", **define)
    flags.DEFINE_bool("sensitivity", True, "With --synthesis=latency: divide each layer's "
                      "latency pressure by its filters' Taylor importance on 128 training "
                      "scenes, so layers that carry the mAP are cut less.", **define)
    flags.DEFINE_bool("remove_branches", False, "With --synthesis=latency: an offspring may "
                      "lose whole inception branches (1x1, 5x5, pool) where that saves more "
                      "latency per strength lost than trimming filters "
                      "(ResourceTarget(remove_branches=True)).", **define)
    flags.DEFINE_float("distill_alpha", 0.0, "Distillation from the parent: each offspring "
                       "(generation 0 too) retrains as keras_evosynth.ParentDistiller(offspring, "
                       "teacher=parent, alpha=this) with the DetectNet distillation losses "
                       "(recipes.detectnet.losses.DISTILLATION_LOSSES); 0: labels only.",
                       **define)  # fmt: skip
    flags.DEFINE_bool("vanish", False, "Layers that may vanish: an inception branch whose "
                      "sampled filters all die goes as a whole (its Concatenate keeps the other "
                      "branches; compaction removes the ops) instead of keeping one filter "
                      "(ResourceTarget(vanish=True)).", **define)  # fmt: skip
    flags.DEFINE_bool("quick", False, "A ~10 min smoke run of the whole experiment: "
                      + ", ".join(f"--{k}={v}" for k, v in QUICK.items())
                      + " (flags given explicitly win).", **define)  # fmt: skip
    flags.DEFINE_bool("adaptive", True, "Adaptive step: the cut grows 1.5x after an accepted "
                      "offspring and halves after a rollback (ResourceTarget(adaptive=True)); "
                      "off: every generation cuts to --keep, halved per rollback.", **define)
    flags.DEFINE_bool("latency_table", True, "Measure this host's int8 LiteRT latency table "
                      "(cached in --out_dir) with any --synthesis: the lineage records get its "
                      "predicted latency, and the export rewrites strided stems space-to-depth "
                      "where it measured that faster. --synthesis=latency needs it.",
                      **define)  # fmt: skip
    flags.DEFINE_integer("runs", 100, "Timed LiteRT invokes per model.", **define)
    flags.DEFINE_enum("tfmot", "auto", ["auto", "on", "off"], "Add the tfmot baseline (magnitude "
                      "pruning + int8, own process) at the synapse count of the smallest evolved "
                      "generation; auto: when tensorflow-model-optimization is installed.",
                      **define)  # fmt: skip
    flags.DEFINE_integer("tfmot_epochs", 0, "Pruning epochs of the tfmot baseline; 0: one "
                         "lineage's retraining (generations x epochs_per_generation), at most "
                         f"{TFMOT_MAX_EPOCHS}.", **define)  # fmt: skip


def apply_quick(values):
    """With `--quick`, sets the `QUICK` values of the flags not given on the
    command line (absl `FlagValues`).

    Example:

    >>> values = flags.FlagValues()
    >>> define_flags(values)
    >>> values(["evolve", "--quick", "--generations=3"])
    ['evolve']
    >>> apply_quick(values)
    >>> values.num_train, values.generations, values.out_dir
    (300, 3, 'runs/detectnet_quick')
    """
    if not values.quick:
        return
    for name, value in QUICK.items():
        if not values[name].present:
            values[name].value = value


def check_evolution_flags(values):
    """Raises ValueError for out-of-range evolution settings, before any work."""
    from keras_evosynth import quantizers

    for precision in values.precisions:
        quantizers.get(precision)
    for name in ("generations", "epochs_per_generation", "runs", "fitness_epochs"):
        if getattr(values, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(values, name)}.")
    if values.fitness_epochs > values.epochs_per_generation:
        raise ValueError(f"--fitness_epochs ({values.fitness_epochs}) must be <= "
                         f"--epochs_per_generation ({values.epochs_per_generation}).")
    if not 0 < values.keep < 1:
        raise ValueError(f"--keep must be in (0, 1), got {values.keep}.")
    if not 0 < values.finetune_decay <= 1:
        raise ValueError(f"--finetune_decay must be in (0, 1], got {values.finetune_decay}.")
    if not 0 < values.finetune_learning_rate < 1:
        raise ValueError(f"--finetune_learning_rate must be in (0, 1), got "
                         f"{values.finetune_learning_rate}.")  # fmt: skip
    if values.synthesis == "latency" and not values.latency_table:
        raise ValueError("--synthesis=latency needs --latency_table.")
    if values.remove_branches and values.synthesis != "latency":
        raise ValueError("--remove_branches needs --synthesis=latency.")
    if not 0 <= values.distill_alpha <= 1:
        raise ValueError(f"--distill_alpha must be in [0, 1], got {values.distill_alpha}.")
    if values.tolerance < 0:
        raise ValueError(f"--tolerance must be >= 0, got {values.tolerance}.")
    for width in values.family:
        try:
            value = float(width)
        except ValueError:
            raise ValueError(f"--family: {width!r} is not a width.") from None
        if not 0 < value < values.width:
            raise ValueError(f"--family widths must be in (0, --width={values.width:g}), got "
                             f"{width}.")  # fmt: skip
    if values.tfmot_epochs < 0:
        raise ValueError(f"--tfmot_epochs must be >= 0, got {values.tfmot_epochs}.")
    if values.polish_epochs < 0:
        raise ValueError(f"--polish_epochs must be >= 0, got {values.polish_epochs}.")
    tfmot_wanted(values.tfmot)  # raises for --tfmot=on without tfmot
    population_settings(values)  # raises for bad population flags


def detection_map(source, image_size, scale, fit, network):
    """A population candidate's fitness (`trial_score`): its DIGITS mAP on
    the validation source."""
    return detection_scores(network, source, image_size, scale, fit)["mAP"]


def tflite_scores(images, labels, scale):
    """`evaluate(path)` for the lineage table: DIGITS mAP and KITTI AP of the
    flatbuffer's outputs on the validation images (batch 1)."""
    from tflite_bench.host import run_signature

    def evaluate(path):
        outputs = run_signature(path, images)
        result = scoring.score(outputs, labels, scale=scale)
        return {"metric": result["mAP"], **{k: result[k] for k, _ in EXTRA_COLUMNS}}

    return evaluate


def trained_model(values, directory, role, print_fn=print, data_sources=None, width=None):
    """Trains a DetectNet with the flags' settings (at `width`, default
    `--width`) into `directory`, or loads it from there when its recorded
    settings match (`train.check_cache`: a mismatch is refused, naming the
    differing settings); `role` names it in the progress lines."""
    settings = train_settings(values)
    settings.out_dir = directory
    if width is not None:
        settings.width = width
    path = os.path.join(directory, "model.keras")
    if os.path.exists(path):  # (train.run checks a training in progress itself)
        train.check_cache(directory, settings)
        print_fn(f"{role}: loading {path}")
        return keras.models.load_model(path)
    until = f"until it plateaus (--plateau={values.plateau}), at most " if values.plateau else ""
    print_fn(f"{role}: training width {settings.width:g} {until}{values.epochs} epochs "
             f"({settings.mixed_precision}) -> {path}")  # fmt: skip
    train.run(settings, print_fn=print_fn, data_sources=data_sources)
    keras.backend.clear_session()
    # reloaded, so that its variables belong to no tf.distribute strategy
    # (the lineages build under their own)
    return keras.models.load_model(path)


def cache_dir(values):
    """`--cache_dir`, or `--out_dir` without it."""
    return values.cache_dir or values.out_dir


def ancestor_model(values, print_fn=print, data_sources=None):
    """Trains the ancestor into `cache_dir(values)/ancestor` or loads it from there
    (`data_sources`: `train.sources(values)`, when the caller has them)."""
    return trained_model(values, os.path.join(cache_dir(values), "ancestor"), "ancestor",
                         print_fn, data_sources)  # fmt: skip


def family_models(values, print_fn=print, data_sources=None):
    """`{width: model}` of `--family`: the DetectNet trained from scratch at
    each width like the ancestor, cached in `cache_dir(values)/family/width_W`
    (with `--polish_epochs`, then retrained like an offspring: `polished`)."""
    models = {}
    for w in values.family:
        directory = os.path.join(cache_dir(values), "family", f"width_{w}")
        role = f"family width {w}"
        model = trained_model(values, directory, role, print_fn, data_sources, float(w))
        if values.polish_epochs:
            model = polished(model, directory, role, values, data_sources, print_fn)
        models[float(w)] = model
    return models


def polished(model, directory, role, values, data_sources=None, print_fn=print):
    """`--polish_epochs`: `model` (trained into `directory`) retrained that
    many epochs on the offspring's schedule (Adam from
    `--finetune_learning_rate`, times `--finetune_decay` each epoch), the
    weights of its best validation epoch kept; cached in `directory +
    "-polished"` with the base's settings and the schedule (a cache made
    otherwise is refused, naming what differs). A killed polish starts over
    (it is a few epochs)."""
    import json

    out = directory + "-polished"
    path = os.path.join(out, "model.keras")
    settings = {"base": train.cached_settings(directory), "polish_epochs": values.polish_epochs,
                "finetune_learning_rate": values.finetune_learning_rate,
                "finetune_decay": values.finetune_decay}  # fmt: skip
    record_path = os.path.join(out, "settings.json")
    if os.path.exists(path):
        with open(record_path) as handle:
            stored = json.load(handle)
        differ = sorted(k for k in settings.keys() | stored.keys()
                        if settings.get(k) != stored.get(k))  # fmt: skip
        if differ:
            raise ValueError(f"{out} was polished with other settings ({', '.join(differ)}): "
                             "pass another --cache_dir, or delete it to start afresh.")
        print_fn(f"{role}, polished: loading {path}")
        return keras.models.load_model(path)
    train_source, val_source = data_sources or train.sources(values, print_fn)
    size = (values.image_height, values.image_width)
    epochs = values.polish_epochs
    print_fn(f"{role}: polishing {epochs} epoch(s) from rate {values.finetune_learning_rate:g} "
             f"-> {path}")  # fmt: skip
    rows = []
    train.compile_detectnet(model, values.finetune_learning_rate)
    keras.utils.set_random_seed(values.seed)
    # never stops early (patience: every epoch); restores the best epoch's weights
    keeper = keras.callbacks.EarlyStopping("detection_mAP", mode="max", patience=epochs,
                                           restore_best_weights=True)  # fmt: skip
    model.fit(
        train.training_dataset(train_source, train_settings(values)), epochs=epochs, verbose=0,
        shuffle=False, callbacks=[  # the dataset shuffles
            keras.callbacks.LearningRateScheduler(lambda epoch, rate: decayed_rate(
                values.finetune_learning_rate, values.finetune_decay, epoch, epochs)),
            DetectionScore(val_source, size, scoring.kitti_scale(size[0]), values.fit,
                           lambda epoch, result, logs: rows.append(result)),
            keeper,
        ])  # fmt: skip
    best = keeper.best_epoch
    print_fn(f"{role}, polished: DIGITS mAP {rows[best]['mAP']:.1f} (epoch {best + 1} of "
             f"{epochs} kept)")  # fmt: skip
    os.makedirs(out, exist_ok=True)
    for name, content in (("settings.json", settings), ("metrics.json", {
            "settings": settings, "epochs": rows, "kept_epoch": best + 1})):
        with open(os.path.join(out, name), "w") as handle:
            json.dump(content, handle, indent=1)
    model.save(os.path.join(out, ".tmp-model.keras"))  # the model, written last, marks it done
    os.replace(os.path.join(out, ".tmp-model.keras"), path)
    keras.backend.clear_session()
    return keras.models.load_model(path)


def decayed_rate(start, decay, epoch, epochs):
    """`EvolutionCallback(learning_rate=)`: `start * decay ** epoch` within a
    retraining (`epochs` long).

    >>> [round(decayed_rate(3e-4, 0.3, e, 3), 7) for e in range(3)]
    [0.0003, 9e-05, 2.7e-05]
    """
    del epochs
    return start * decay**epoch


def train_settings(values):
    """The `train.SETTINGS` attributes of the flags, as a picklable namespace
    (a population's trial data is built from it on Ray workers)."""
    return types.SimpleNamespace(**{name: getattr(values, name) for name in train.SETTINGS})


def evolve(ancestor, precision, sources, directory, values, latency_table=None,
           population=None, strategy=None):  # fmt: skip
    """One lineage at `precision`, resumed from `directory` when it exists
    (`sources`: `(train_source, val_source)` of `train.sources`;
    `latency_table`: the ancestor's (needed by `--synthesis=latency`; its
    predictions go into the records);
    `population`: `apputil.population_settings(values)`, one executor for all
    lineages; `strategy`: the `tf.distribute` strategy to build under)."""
    import tensorflow as tf

    import keras_evosynth as ke

    train_source, val_source = sources
    size = (values.image_height, values.image_width)
    scale = scoring.kitti_scale(size[0])
    settings = train_settings(values)
    population = dict(population or {})
    if population:  # trials train on the training set, score by mAP
        population.update(
            trial_data=functools.partial(train.training_dataset, train_source, settings),
            trial_score=functools.partial(detection_map, val_source, size, scale, values.fit))
    with (strategy or tf.distribute.get_strategy()).scope():
        model = ke.evolvable(ancestor, precision=precision)
        if values.distill_alpha:  # the callback makes each parent the teacher
            model = ke.ParentDistiller(model, alpha=values.distill_alpha,
                                       distillation_loss=losses.DISTILLATION_LOSSES)  # fmt: skip
        train.compile_detectnet(model, values.finetune_learning_rate)
    evolution = ke.EvolutionCallback(
        generations=values.generations,
        epochs_per_generation=values.epochs_per_generation,
        ancestor_epochs=values.fitness_epochs,
        precision=precision,
        environment=environment_for(
            values.synthesis, values.keep, latency_table, values.adaptive,
            train.labelled_batch(train_source, size, values.fit)
            if values.sensitivity and values.synthesis == "latency" else None,
            remove_branches=values.remove_branches, vanish=values.vanish),
        monitor="detection_mAP",
        mode="max",
        fitness_epochs=values.fitness_epochs,
        learning_rate=functools.partial(decayed_rate, values.finetune_learning_rate,
                                        values.finetune_decay),  # fmt: skip
        tolerance=values.tolerance,
        seed=values.seed,
        directory=directory,
        latency_table=latency_table,
        **population,
    )
    # TensorBoard after the callback: it records the generation, synapses,
    # MACs and predicted latency that the callback adds to the epoch logs
    loggers = ([keras.callbacks.TensorBoard(os.path.join(directory, "logs"))]
               if values.tensorboard else [])
    fit_lineage(model, evolution, train.training_dataset(train_source, settings), None,
                callbacks=[DetectionScore(val_source, size, scale, values.fit)],
                loggers=loggers, shuffle=False, verbose=0)  # the dataset shuffles
    return evolution


def tfmot_baseline(ancestor, lineages, values):
    """Runs (or, on resume, reuses) the tfmot baseline at the synapse count of
    the smallest accepted generation; returns `build_table` baseline rows
    (none when `--tfmot` does not ask for it)."""
    import json

    from recipes import lineage_table
    from recipes.detectnet.tfmot_baseline import run_baseline

    if not tfmot_wanted(values.tfmot):
        print("tfmot baseline: skipped (--tfmot=off or tensorflow-model-optimization missing)")
        return []
    sparsity, smallest, stats = lineage_table.baseline_sparsity(ancestor, lineages)
    if sparsity <= 0:
        print("tfmot baseline: skipped (no generation has fewer synapses than the ancestor)")
        return []
    epochs = values.tfmot_epochs or min(
        values.generations * values.epochs_per_generation, TFMOT_MAX_EPOCHS
    )
    out = os.path.join(values.out_dir, "tfmot_int8.tflite")
    summary_path = out + ".json"
    result = None
    if os.path.exists(summary_path) and os.path.exists(out):
        with open(summary_path) as f:
            result = json.load(f)
        if result.get("sparsity_target") != sparsity or result.get("epochs") != epochs:
            result = None  # other lineages or settings: redo it
    if result is None:
        print(f"tfmot baseline: pruning the ancestor to {sparsity:.1%} sparsity ({smallest:,} "
              f"synapses), {epochs} epoch(s), then int8")  # fmt: skip
        settings = {name: getattr(values, name) for name in (
            "image_height", "image_width", "width", "batch_norm", "kitti_root", "num_train",
            "seed", "batch_size")}  # fmt: skip
        settings["learning_rate"] = values.finetune_learning_rate
        result = run_baseline(ancestor, out, summary_path, sparsity, epochs, settings)
    else:
        print(f"tfmot baseline: reusing {out}")
    return [
        {
            "lineage": f"tfmot-pruned+{result['method']}",
            "tflite": out,
            "bits": 8,
            "synapses": result["kernel_nonzero"],
            "filters": stats.clusters,
            "macs": stats.macs,  # zeros stay in dense kernels
        }
    ]


def main(argv):
    del argv
    from recipes import lineage_table

    values = flags.FLAGS
    apply_quick(values)
    train.check_flags(values)
    check_evolution_flags(values)
    quiet_tensorflow(values.verbose)
    os.makedirs(values.out_dir, exist_ok=True)
    sources = train.sources(values, print)  # scanned once, for the ancestor and the lineages
    values.mixed_precision = train.resolve_policy(values, sources[0], cache_dir=cache_dir(values))
    ancestor = ancestor_model(values, data_sources=sources)
    family = family_models(values, data_sources=sources)
    size = (values.image_height, values.image_width)
    keras.mixed_precision.set_global_policy(values.mixed_precision)
    strategy = distribution_strategy(values.strategy)
    table = latency_table_for(ancestor, cache_dir(values)) if values.latency_table else None
    lineages = {}
    population = population_settings(values)
    for precision in values.precisions:
        directory = os.path.join(values.out_dir, f"lineage_{precision}")
        print(f"--- evolving at {precision} -> {directory}")
        evolve(ancestor, precision, sources, directory, values, table, population, strategy)
        lineages[precision] = directory
    if "executor" in population:
        population["executor"].close()
    keras.mixed_precision.set_global_policy("float32")  # compaction and export in float32
    x = data.images_of(sources[0], size, 64, values.fit).astype("float32")
    xv = data.images_of(sources[1], size, fit=values.fit).astype("float32")
    yv, scale = data.labels_of(sources[1]), scoring.kitti_scale(size[0])
    rows = lineage_table.build_table(
        ancestor, lineages, representative=x, out_dir=values.out_dir,
        evaluate=tflite_scores(xv, yv, scale), runs=values.runs, extra_columns=EXTRA_COLUMNS,
        baselines=tfmot_baseline(ancestor, lineages, values), space_to_depth=table,
        metric_name="DIGITS mAP", within=HEADLINE_WITHIN, family=family,
    )  # fmt: skip
    print(lineage_table.markdown_table(rows, extra=EXTRA_COLUMNS))
    print(f"wrote {values.out_dir}/lineage.md, lineage.json, lineage.png")
    lineage_table.deploy_bundle(rows, os.path.join(values.out_dir, "deployed"), size,
                                within=HEADLINE_WITHIN)  # fmt: skip


if __name__ == "__main__":
    define_flags()
    apputil.run(main)
