"""Carry trained DetectNets to another machine: `python -m recipes.detectnet.cache`.

    python -m recipes.detectnet.cache --cache_dir=runs/detectnet_paper \\
        --to=benchmarks/results/detectnet_paper/cache
    cp -r benchmarks/results/detectnet_paper/cache/. runs/detectnet_paper/   # on the new machine

A `--cache_dir` of `recipes.detectnet.evolve` holds the ancestor and the family
widths (`ancestor/`, `family/width_W/`, `family/width_W-polished/`), each a
`model.keras` saved with its Adam state (73 MB for the width-1.0 ancestor) next
to `settings.json` and `metrics.json`. `pack` writes each finished one to `--to`
without the optimizer (24 MB for that ancestor: the weights, the masks and the
dtype policies, which is all a later step reads), with its two records, in the
same layout; copied into a cache directory, the recipe loads it as its own
after the usual settings check (`train.check_cache`). Trainings still in
progress (a `backup/` and no `model.keras`) are skipped and named.
"""

import os
import shutil

from absl import app, flags

RECORDS = ("settings.json", "metrics.json")


def trained_models(cache_dir):
    """The folders under `cache_dir`, relative to it and sorted, that hold a
    finished DetectNet (`model.keras` with `settings.json`)."""
    found = []
    for folder, _, names in os.walk(cache_dir):
        if "model.keras" in names and "settings.json" in names:
            found.append(os.path.relpath(folder, cache_dir))
    return sorted(found)


def without_optimizer(model):
    """A copy of `model` with the same layers (names, configs, dtype
    policies) and every weight, uncompiled: saved, it carries no optimizer
    state."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def pack(cache_dir, destination, print_fn=print):
    """Writes every finished model of `cache_dir` (`trained_models`) to
    `destination` in the same layout, without its optimizer state, with its
    records; returns the folders written. Raises ValueError when `cache_dir`
    holds none."""
    import keras

    import recipes.detectnet  # noqa: F401  (registers the losses a saved DetectNet names)

    folders = trained_models(cache_dir)
    if not folders:
        raise ValueError(f"{cache_dir} holds no finished DetectNet (a folder with model.keras "
                         "and settings.json): train one first, e.g. python -m "
                         "recipes.detectnet.evolve --cache_dir=...")  # fmt: skip
    for folder, subfolders, names in os.walk(cache_dir):
        if "backup" in subfolders and "model.keras" not in names:
            print_fn(f"skipped {folder}: its training is still in progress")
    for relative in folders:
        source, target = os.path.join(cache_dir, relative), os.path.join(destination, relative)
        os.makedirs(target, exist_ok=True)
        for name in RECORDS:
            if os.path.exists(os.path.join(source, name)):
                shutil.copyfile(os.path.join(source, name), os.path.join(target, name))
        model = keras.models.load_model(os.path.join(source, "model.keras"), compile=False)
        path = os.path.join(target, "model.keras")
        without_optimizer(model).save(path + ".tmp.keras")  # written last: marks it whole
        os.replace(path + ".tmp.keras", path)
        keras.backend.clear_session()
        before = os.path.getsize(os.path.join(source, "model.keras"))
        after = os.path.getsize(path)
        print_fn(f"{relative}: {before / 2**20:.1f} MB -> {path} ({after / 2**20:.1f} MB)")
    return folders


def define_flags(flag_values=flags.FLAGS):
    flags.DEFINE_string("cache_dir", None, "The cache to pack (evolve's --cache_dir).",
                        flag_values=flag_values)  # fmt: skip
    flags.DEFINE_string("to", None, "Where to write the packed models (same layout).",
                        flag_values=flag_values)  # fmt: skip
    flags.mark_flags_as_required(["cache_dir", "to"], flag_values=flag_values)


def main(argv):
    del argv
    try:
        pack(flags.FLAGS.cache_dir, flags.FLAGS.to)
    except ValueError as error:
        raise app.UsageError(str(error)) from error


if __name__ == "__main__":
    define_flags()
    app.run(main)
