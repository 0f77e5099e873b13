"""Classifier recipe: evolve a CNN on Fashion-MNIST (or digits) and tabulate it.

Trains a float32 ancestor, then for each synaptic precision of the sweep runs
the evolutionary synthesis (`EvolutionCallback`, a resource target per
generation), and finally compacts, exports to int8 LiteRT and benchmarks every
generation against the float32 and int8 ancestors (`recipes.lineage_table`).

    python -m recipes.classifier --out_dir runs/fashion_mnist
    python -m recipes.classifier --dataset digits --generations 3 --out_dir runs/digits

Everything is written under `--out_dir`: `ancestor.keras` (and with
`--family=16,12,8` the same CNN trained from scratch at those widths,
`family_w16.keras` ..., compared with the offspring under the table; with
`--polish_epochs` every accepted offspring and every family width retrained
to its plateau at the offspring's rate, `int8-polished_g001.keras`,
`family_w16-polished.keras` ...), one lineage
directory per precision (`lineage_int4/`, ...), the .tflite files and
`lineage.md` / `lineage.json` / `lineage.png`. A killed run resumes where it
stopped when started again with the same flags.
"""

import os

import keras
import numpy as np
from absl import flags

from keras_evosynth import (
    EvolutionCallback,
    ParentDistiller,
    evolvable,
    export_litert,
    quantizers,
    summary,
)
from recipes import apputil, datasets, lineage_table
from recipes.apputil import (
    SYNTHESIS,
    define_verbose,
    environment_for,
    fit_lineage,
    latency_table_for,
    quiet_tensorflow,
    tfmot_wanted,
)
from recipes.classification import build_cnn, compile_classifier, tflite_accuracy

FLAGS = flags.FLAGS


def _valid_precisions(values):
    try:
        return all(quantizers.get(v) is not None for v in values) and bool(values)
    except (ValueError, TypeError):
        return False


def define_flags(flag_values=FLAGS):
    """Defines the app's absl flags (called by `__main__` only, so importing
    this module defines nothing).

    Example:

    >>> values = flags.FlagValues()
    >>> define_flags(values)
    >>> values["dataset"].default, values["precisions"].default, values["verbose"].default
    ('fashion_mnist', ['int8', 'int4'], False)
    """
    define = {"flag_values": flag_values}
    flags.DEFINE_enum("dataset", "fashion_mnist", ["fashion_mnist", "digits"], "Data set.",
                      **define)  # fmt: skip
    flags.DEFINE_list("precisions", ["int8", "int4"], "Synaptic precisions to evolve at (sweep).",
                      **define)  # fmt: skip
    flags.DEFINE_integer("generations", 6, "Offspring generations per precision.", lower_bound=1,
                         **define)  # fmt: skip
    flags.DEFINE_integer("ancestor_epochs", 6, "Epochs of the float32 ancestor.", lower_bound=1,
                         **define)  # fmt: skip
    flags.DEFINE_integer("epochs_per_generation", 2, "Retraining epochs per offspring.",
                         lower_bound=1, **define)  # fmt: skip
    flags.DEFINE_float(
        "keep", 0.6, "Fraction of the parent's MACs (filters) or synapses each offspring keeps.",
        **define,
    )
    flags.DEFINE_enum("synthesis", "filters", list(SYNTHESIS), "Which resource shrinks; see "
                      "apputil.", **define)  # fmt: skip
    define_verbose(flag_values)
    flags.DEFINE_integer("width", 32, "Filters of the first conv block.", lower_bound=1, **define)
    flags.DEFINE_integer("limit_train", 20000, "Training examples used (0 = all).", lower_bound=0,
                         **define)  # fmt: skip
    flags.DEFINE_integer("limit_test", 2000, "Test examples used (0 = all).", lower_bound=0,
                         **define)  # fmt: skip
    flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1, **define)
    flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate of the ancestor.",
                       lower_bound=0, **define)  # fmt: skip
    flags.DEFINE_float(
        "finetune_learning_rate",
        2e-4,
        "Adam learning rate of the offspring (their optimizer starts fresh each generation, "
        "so a smaller rate keeps it from disturbing the inherited weights).",
        lower_bound=0,
        **define,
    )
    flags.DEFINE_integer("seed", 0, "Seed of the ancestor and of the lineages.", lower_bound=0,
                         **define)  # fmt: skip
    flags.DEFINE_list("family", [], "Widths (first-block filters, below --width) of the same CNN "
                      "trained from scratch for --family_epochs: what a user tries instead of "
                      "evolving. Rows of lineage `family` in the table, each compared with the "
                      "best offspring no slower than it (lineage_table.family_comparison).",
                      **define)  # fmt: skip
    flags.DEFINE_integer("family_epochs", 0, "Epochs of each --family width; 0: the budget a "
                         "lineage spends, --ancestor_epochs + 1 + --generations x "
                         "--epochs_per_generation.", lower_bound=0, **define)  # fmt: skip
    flags.DEFINE_float("tolerance", 0.03, "An offspring whose test accuracy falls more than this "
                       "under the ancestor's is rolled back and resampled with a milder cut.",
                       lower_bound=0, **define)  # fmt: skip
    flags.DEFINE_float("distill_alpha", 0.0, "Distillation from the parent: each offspring "
                       "retrains on (1 - alpha) x its labels' loss + alpha x the MSE between its "
                       "logits and its parent's (keras_evosynth.ParentDistiller); 0: labels only.",
                       lower_bound=0, upper_bound=1, **define)  # fmt: skip
    flags.DEFINE_integer("polish_epochs", 0, "Each accepted offspring (generation >= 1), and "
                         "each --family width alike, retrained this many more epochs at "
                         "--finetune_learning_rate, its best epoch kept: rows of lineage "
                         "<precision>-polished (cached as <precision>-polished_gGGG.keras), and "
                         "family rows at the same slow final rate as the offspring. 0: none.",
                         lower_bound=0,
                         **define)  # fmt: skip
    flags.DEFINE_integer("runs", 100, "Timed LiteRT invokes per model.", lower_bound=1, **define)
    flags.DEFINE_string("out_dir", "runs/classifier", "Output directory.", **define)
    flags.DEFINE_enum(
        "tfmot",
        "auto",
        ["auto", "on", "off"],
        "Add the tfmot baseline (magnitude pruning + QAT, own process) at the synapse count of "
        "the smallest evolved generation; needs the `baselines` extra. auto: when it is "
        "installed.",
        **define,
    )
    flags.register_validator(
        "precisions", _valid_precisions, "--precisions: use aliases like int8,int4,int2,float32",
        **define,
    )
    flags.register_multi_flags_validator(
        ["family", "width"], _valid_family, "--family: whole widths below --width, e.g. 16,12,8",
        **define,
    )


def _valid_family(values):
    try:
        return all(0 < int(w) < values["width"] for w in values["family"])
    except ValueError:
        return False


ANCESTOR_SETTINGS = ("dataset", "width", "seed", "ancestor_epochs", "learning_rate",
                     "batch_size", "limit_train")  # fmt: skip


def train_ancestor(data, out_dir):
    """Trains the float32 ancestor into `out_dir/ancestor.keras` (its
    settings in `ancestor.json`), or loads it when it was made with the
    same settings (a mismatch is refused, naming them)."""
    settings = {name: FLAGS[name].value for name in ANCESTOR_SETTINGS}
    return train_cnn(data, os.path.join(out_dir, "ancestor.keras"), settings, "ancestor",
                     FLAGS.ancestor_epochs, lambda: _new_cnn(data, FLAGS.width))  # fmt: skip


def family_epochs():
    """`--family_epochs`, or the epochs a lineage trains for: the ancestor's,
    the one fine-tuning epoch at the lineage's precision, and the
    offspring's."""
    return FLAGS.family_epochs or (
        FLAGS.ancestor_epochs + 1 + FLAGS.generations * FLAGS.epochs_per_generation
    )


def train_family(data, out_dir):
    """`{width: model}` of `--family`: the CNN trained from scratch at each
    width for `family_epochs()` (cached as `out_dir/family_wW.keras`); with
    `--polish_epochs`, each then retrained that long at
    `--finetune_learning_rate` like the offspring (`family_wW-polished.keras`),
    so that the lineage's slower final rate is not what the comparison
    measures."""
    epochs = family_epochs()
    shared = {name: FLAGS[name].value for name in ANCESTOR_SETTINGS if name != "ancestor_epochs"}
    family = {}
    for width in sorted({int(w) for w in FLAGS.family}, reverse=True):
        path = os.path.join(out_dir, f"family_w{width}.keras")
        settings = {**shared, "width": width, "epochs": epochs}
        model = train_cnn(data, path, settings, f"family width {width}", epochs,
                          lambda width=width: _new_cnn(data, width))  # fmt: skip
        if FLAGS.polish_epochs:  # its record holds the base's: a retrained base is refused
            model = train_cnn(data, path.replace(".keras", "-polished.keras"),
                              {**_polish_settings(), "family": settings},
                              f"family width {width}, polished", FLAGS.polish_epochs,
                              lambda m=model: m, FLAGS.finetune_learning_rate)  # fmt: skip
        family[width] = model
    return family


def _polish_settings():
    return {flag: FLAGS[flag].value for flag in (
        "finetune_learning_rate", "batch_size", "seed", "polish_epochs")}


def _new_cnn(data, width):
    return build_cnn(data.x_train.shape[1:], data.num_classes, width)


def polish(data, lineages, out_dir, representative, space_to_depth=None):
    """`--polish_epochs`: every accepted offspring of `lineages`
    (`{precision: directory}`) retrained with `train_cnn` and exported to
    int8 as the table exports the offspring (`representative` data, the
    same `space_to_depth` rewrites), as `build_table` baselines of lineage
    `<precision>-polished`."""
    if not FLAGS.polish_epochs:
        return []
    rows = []
    for label, directory in lineages.items():
        for generation, checkpoint, _ in lineage_table.accepted_generations(directory):
            if generation < 1:
                continue
            name = f"{label}-polished_g{generation:03d}"
            settings = {**_polish_settings(), "offspring": os.path.relpath(checkpoint, out_dir)}
            model = train_cnn(data, os.path.join(out_dir, f"{name}.keras"), settings,
                              f"{label} generation {generation}, polished", FLAGS.polish_epochs,
                              lambda c=checkpoint: keras.models.load_model(c),
                              FLAGS.finetune_learning_rate)
            path = os.path.join(out_dir, f"{name}_int8.tflite")
            export_litert(model, representative, path=path, mode="int8",
                          space_to_depth=space_to_depth)
            rows.append({"lineage": f"{label}-polished", "generation": generation, "tflite": path,
                         **lineage_table.resources(model)})  # fmt: skip
            keras.backend.clear_session()
    return rows


def train_cnn(data, path, settings, role, epochs, build, learning_rate=None):
    """Trains `build()` (a new or loaded Keras model) for `epochs` at
    `learning_rate` (None: `--learning_rate`) into `path` (its `settings` in
    the `.json` beside it), or loads it when it was made with the same
    settings (a mismatch is refused, naming them). The weights kept are
    those of the epoch with the best test accuracy (Keras's `EarlyStopping`
    restoring them, never stopping early): the CNN overfits 20,000 images
    within a dozen epochs, and a later epoch can score several points
    lower."""
    import json

    settings = {**settings, "kept_epoch": "best"}  # older caches kept the last epoch
    record = path[: -len(".keras")] + ".json"
    if os.path.exists(path):
        if not os.path.exists(record):
            raise ValueError(f"{path} has no record of its settings ({record}): pass another "
                             "--out_dir, or delete it to retrain.")  # fmt: skip
        with open(record) as f:
            apputil.refuse_mismatch(path, json.load(f), settings)
        print(f"{role}: loading {path}")
        return keras.models.load_model(path)
    keras.utils.set_random_seed(FLAGS.seed)
    model = compile_classifier(
        build(), FLAGS.learning_rate if learning_rate is None else learning_rate)
    print(f"{role}: training for {epochs} epochs on {len(data.x_train)} images")
    model.fit(
        data.x_train,
        data.y_train,
        batch_size=FLAGS.batch_size,
        epochs=epochs,
        validation_data=(data.x_test, data.y_test),
        callbacks=[keras.callbacks.EarlyStopping(
            "val_accuracy", patience=epochs, restore_best_weights=True, verbose=1)],
        verbose=2,
    )  # fmt: skip
    tmp = path + ".part.keras"
    model.save(tmp)
    with open(record, "w") as f:
        json.dump(settings, f, indent=1)
    os.replace(tmp, path)
    return model


def evolve(ancestor, data, precision, directory, latency_table=None):
    """One lineage at `precision`; resumes from `directory` when it exists
    (`latency_table`: the ancestor's, for `--synthesis=latency`)."""
    model = evolvable(ancestor, precision=precision)
    if FLAGS.distill_alpha:  # the callback makes each parent the teacher
        model = ParentDistiller(model, alpha=FLAGS.distill_alpha)
    model = compile_classifier(model, FLAGS.finetune_learning_rate)
    callback = EvolutionCallback(
        generations=FLAGS.generations,
        epochs_per_generation=FLAGS.epochs_per_generation,
        ancestor_epochs=1,  # the float ancestor fine-tuned at this precision
        precision=precision,
        environment=environment_for(FLAGS.synthesis, FLAGS.keep, latency_table),
        monitor="val_accuracy",
        tolerance=FLAGS.tolerance,
        seed=FLAGS.seed,
        directory=directory,
    )
    fit_lineage(
        model,
        callback,
        data.x_train,
        data.y_train,
        batch_size=FLAGS.batch_size,
        validation_data=(data.x_test, data.y_test),
        verbose=0,
    )
    summary(getattr(model, "student", model))
    return callback


def tfmot_baseline(data, ancestor, lineages, out_dir):
    """Trains the tfmot baseline at the smallest offspring's synapse count;
    returns `build_table` baseline rows (none when tfmot is not wanted)."""
    import json

    if not tfmot_wanted(FLAGS.tfmot):
        print("tfmot baseline: skipped (--tfmot=off or tensorflow-model-optimization missing)")
        return []
    if FLAGS.width != 32:
        print("tfmot baseline: skipped (the shared architecture is built at --width=32)")
        return []
    from tflite_bench.baselines.tfmot import train_baseline

    sparsity, _, stats = lineage_table.baseline_sparsity(ancestor, lineages)
    out = os.path.join(out_dir, "tfmot_int8.tflite")
    summary_path = out + ".json"
    if not os.path.exists(summary_path):
        print(f"tfmot baseline: pruning the same CNN to {sparsity:.1%} sparsity + QAT")
        paths = {}
        for split, x, y in (
            ("train", data.x_train, data.y_train),
            ("test", data.x_test, data.y_test),
        ):
            paths[split] = os.path.join(out_dir, f"{split}.npz")
            np.savez(paths[split], x=x, y=y)
        result = train_baseline(
            paths["train"],
            out,
            val_data=paths["test"],
            arch="recipes.classification:build_cnn",
            sparsity=sparsity,
            epochs=FLAGS.ancestor_epochs,
            prune_epochs=2,
            qat_epochs=1,
            batch_size=FLAGS.batch_size,
        )
        with open(summary_path, "w") as f:
            json.dump(result, f, indent=1)
    with open(summary_path) as f:
        result = json.load(f)
    return [
        {
            "lineage": "tfmot-pruned+QAT",
            "tflite": out,
            "bits": 8,
            "synapses": round((1 - result["kernel_sparsity"]) * stats.total_synapses),
            "filters": stats.clusters,
            "macs": stats.macs,  # zeros stay in dense kernels
        }
    ]


def main(argv):
    del argv
    quiet_tensorflow(FLAGS.verbose)
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    data = datasets.load_classification(
        FLAGS.dataset, FLAGS.limit_train or None, FLAGS.limit_test or None
    )
    print(f"data: {data.name}, train {data.x_train.shape}, test {data.x_test.shape}")
    ancestor = train_ancestor(data, FLAGS.out_dir)
    family = train_family(data, FLAGS.out_dir)
    table = None
    if FLAGS.synthesis == "latency":
        table = latency_table_for(ancestor, FLAGS.out_dir)
    lineages = {}
    for precision in FLAGS.precisions:
        directory = os.path.join(FLAGS.out_dir, f"lineage_{precision}")
        print(f"--- evolving at {precision} -> {directory}")
        evolve(ancestor, data, precision, directory, table)
        lineages[precision] = directory
    rng = np.random.default_rng(FLAGS.seed)
    representative = data.x_train[rng.choice(len(data.x_train), 200, replace=False)]
    rows = lineage_table.build_table(
        ancestor,
        lineages,
        representative,
        FLAGS.out_dir,
        evaluate=tflite_accuracy(data.x_test, data.y_test),
        runs=FLAGS.runs,
        baselines=tfmot_baseline(data, ancestor, lineages, FLAGS.out_dir)
        + polish(data, lineages, FLAGS.out_dir, representative, table),
        space_to_depth=table, metric_name="top-1 accuracy", family=family,
        spread="metric_spread",
    )
    print(lineage_table.markdown_table(rows))
    print(f"wrote {FLAGS.out_dir}/lineage.md, lineage.json, lineage.png")


if __name__ == "__main__":
    define_flags()
    apputil.run(main)
