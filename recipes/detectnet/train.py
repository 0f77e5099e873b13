"""Trains one DetectNet and scores it (DIGITS mAP, KITTI AP).

    python -m recipes.detectnet.train                      # CPU default, a few minutes
    python -m recipes.detectnet.train --kitti_root=/data/kitti --image_height=384 \\
        --image_width=1248 --width=1.0 --learning_rate=2e-4 --epochs=30   # GPU

Without `--kitti_root` it trains on generated KITTI-format scenes
(`scenes.generate`, seeds `--seed` for training and `--seed + 1` for
validation). With it, the first `--num_train` images of
`training/image_2` train and the next `--num_val` validate (padded to the
image size, as DIGITS pads KITTI to 1248x384). Prints the scores after every
epoch; writes `metrics.json` (per-epoch scores, the settings, the same scores
on as many training images, and with `--plateau` where it converged) and
`model.keras` to `--out_dir`. `--plateau=4 --epochs=60` trains to
convergence: 4 epochs without a 1-point mAP gain cut the learning rate, 4
more stop training, and the best epoch's weights are kept.
"""

import json
import os
import time

import numpy as np
from absl import app, flags

from recipes.detectnet import data

SETTINGS = ("kitti_root", "image_height", "image_width", "width", "batch_norm", "num_train",
            "num_val", "epochs", "batch_size", "learning_rate", "seed", "out_dir", "augment",
            "fit", "cache", "strategy", "mixed_precision", "tensorboard", "plateau")  # fmt: skip
# --plateau: an epoch "improves" when the validation DIGITS mAP beats the best so far by
# this many points (the epoch-to-epoch noise of a 200-500 scene validation set is ~2-3)
PLATEAU_DELTA = 1.0
PLATEAU_FACTOR = 0.3  # learning-rate multiplier after the first plateau
# The settings that make a trained model what it is: a cached model trained
# with other values of these is refused (`check_cache`), never silently reused.
CACHE_KEYS = ("kitti_root", "image_height", "image_width", "width", "batch_norm", "num_train",
              "num_val", "batch_size", "learning_rate", "seed", "augment", "fit",
              "mixed_precision", "plateau")  # fmt: skip


def define_flags(flag_values=flags.FLAGS):
    """Defines the app's absl flags (called by `__main__` only, so importing
    this module defines nothing).

    Args:
        flag_values: Where to define them (absl's global `FLAGS` by default).

    Example:

    >>> values = flags.FlagValues()
    >>> define_flags(values)
    >>> values["num_train"].default, values["batch_norm"].default
    (1000, 'all')
    """
    define = {"flag_values": flag_values}
    flags.DEFINE_string("kitti_root", None, "KITTI root (training/image_2, label_2); "
                        "default: generated scenes.", **define)  # fmt: skip
    flags.DEFINE_integer("image_height", 128, "Input height, a multiple of 16.", **define)
    flags.DEFINE_integer("image_width", 384, "Input width, a multiple of 16.", **define)
    flags.DEFINE_float("width", 0.25, "Width multiplier of the trunk, in (0, 4].", **define)
    flags.DEFINE_enum("batch_norm", "all", ["lrn", "all", "none"], "Where to normalise.", **define)
    flags.DEFINE_integer("num_train", 1000, "Training images.", **define)
    flags.DEFINE_integer("num_val", 200, "Validation images.", **define)
    flags.DEFINE_integer("epochs", 15, "Training epochs (with --plateau: at most).", **define)
    flags.DEFINE_integer("plateau", 0, "Train to convergence: after this many epochs without a "
                         f"{PLATEAU_DELTA:g}-point gain in validation DIGITS mAP the learning "
                         f"rate drops {1 / PLATEAU_FACTOR:.1f}x; after as many more, training "
                         "stops and keeps the best epoch's weights. 0: exactly --epochs.",
                         **define)  # fmt: skip
    flags.DEFINE_integer("batch_size", 10, "Batch size (DIGITS: 10).", **define)
    flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (DIGITS: 2e-4).", **define)
    flags.DEFINE_integer("seed", 0, "Seed of the scenes and the initial weights.", **define)
    flags.DEFINE_string("out_dir", "runs/detectnet_train", "Where to write results.", **define)
    flags.DEFINE_bool("augment", True, "DIGITS' DetectNet augmentation while training (shift "
                      "32 px, flip, scale, hue, desaturation; recipes.detectnet.augment).",
                      **define)  # fmt: skip
    flags.DEFINE_enum("fit", "pad", list(data.FITS), "How --kitti_root images reach the input "
                      "size: pad (right/bottom, as DIGITS), resize, or none (all must match).",
                      **define)  # fmt: skip
    flags.DEFINE_string("cache", "none", "Cache decoded --kitti_root images: none, memory, or a "
                        "file prefix (tf.data cache on disk).", **define)  # fmt: skip
    from recipes.apputil import define_distribution, define_verbose

    define_distribution(flag_values)
    define_verbose(flag_values)


def check_flags(values):
    """Raises ValueError for out-of-range settings (before any work starts).

    Args:
        values: An object with the flag attributes (e.g. `absl.flags.FLAGS`).

    Example:

    >>> import types
    >>> check_flags(types.SimpleNamespace(image_height=100, image_width=384,
    ...     width=0.25, num_train=10, num_val=10, epochs=1, batch_size=2,
    ...     learning_rate=1e-3, kitti_root=None, fit="pad", strategy="none",
    ...     mixed_precision="float32"))
    Traceback (most recent call last):
    ...
    ValueError: --image_height=100 and --image_width=384 must be positive multiples of 16.
    """
    if min(values.image_height, values.image_width) < 16 or (
        values.image_height % 16 or values.image_width % 16
    ):
        raise ValueError(
            f"--image_height={values.image_height} and --image_width={values.image_width} "
            f"must be positive multiples of 16."
        )
    if not 0 < values.width <= 4:
        raise ValueError(f"--width must be in (0, 4], got {values.width}.")
    for name in ("num_train", "num_val", "epochs", "batch_size"):
        if getattr(values, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(values, name)}.")
    if values.plateau < 0:
        raise ValueError(f"--plateau must be >= 0 (0: off), got {values.plateau}.")
    if not 0 < values.learning_rate < 1:
        raise ValueError(f"--learning_rate must be in (0, 1), got {values.learning_rate}.")
    if values.kitti_root is not None and not os.path.isdir(values.kitti_root):
        raise ValueError(f"--kitti_root={values.kitti_root!r} is not a directory.")
    from recipes.apputil import AUTO_POLICY, MULTI_WORKER_REFUSAL, PRECISION_POLICIES, STRATEGIES

    if values.fit not in data.FITS:
        raise ValueError(f"--fit must be one of {', '.join(data.FITS)}, got {values.fit!r}.")
    if values.strategy == "multi_worker":
        raise ValueError(MULTI_WORKER_REFUSAL)
    if values.strategy not in STRATEGIES:
        raise ValueError(f"--strategy must be one of {', '.join(STRATEGIES)}, got "
                         f"{values.strategy!r}.")  # fmt: skip
    if getattr(values, "tensorboard", False):
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise ValueError("--tensorboard needs the tensorboard package: "
                             "pip install 'keras-evosynth[tensorboard]'.")  # fmt: skip
    if values.mixed_precision not in (AUTO_POLICY, *PRECISION_POLICIES):
        raise ValueError(f"--mixed_precision must be one of {AUTO_POLICY}, "
                         f"{', '.join(PRECISION_POLICIES)}, got {values.mixed_precision!r}.")


def cached_settings(directory):
    """The `CACHE_KEYS` settings a model in `directory` was trained with
    (`settings.json`, written when training starts, or the `settings` of
    `metrics.json`), or None when the directory has no record of them."""
    for name, key in (("settings.json", None), ("metrics.json", "settings")):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            with open(path) as handle:
                stored = json.load(handle)
            stored = stored[key] if key else stored
            return {k: stored[k] for k in CACHE_KEYS if k in stored}
    return None


def check_cache(directory, settings):
    """Raises ValueError when `directory` holds a model (finished, or a
    training in progress) made with other `CACHE_KEYS` settings than
    `settings` (`--mixed_precision=auto` must be resolved first), naming
    every differing setting; does nothing for a directory without one.

    Example:

    >>> import tempfile, types
    >>> folder = tempfile.mkdtemp()
    >>> with open(os.path.join(folder, "settings.json"), "w") as f:
    ...     json.dump({"width": 1.0, "num_train": 3000}, f)
    >>> check_cache(folder, types.SimpleNamespace(width=0.25, num_train=3000))
    Traceback (most recent call last):
    ...
    ValueError: ... was made with other settings (width: 1.0 there, 0.25 now): ...
    """
    stored = cached_settings(directory)
    model = os.path.join(directory, "model.keras")
    if stored is None:
        if os.path.exists(model) or os.path.isdir(os.path.join(directory, "backup")):
            raise ValueError(f"{directory} holds a model with no record of its settings "
                             "(settings.json or metrics.json): pass another --out_dir, or "
                             "delete it to retrain.")  # fmt: skip
        return
    from recipes.apputil import refuse_mismatch

    refuse_mismatch(directory, stored, {k: getattr(settings, k) for k in stored
                                        if hasattr(settings, k)})  # fmt: skip


def resolve_policy(settings, source, print_fn=print, cache_dir=None):
    """`settings.mixed_precision`, with `auto` replaced by the fastest policy
    for training this DetectNet on this host (`apputil.fastest_policy`,
    timed on one batch of `source`, cached in `cache_dir`, default
    `settings.out_dir`)."""
    from recipes.apputil import AUTO_POLICY, fastest_policy

    if settings.mixed_precision != AUTO_POLICY:
        return settings.mixed_precision
    size = (settings.image_height, settings.image_width)
    batch = labelled_batch(source, size, settings.fit, settings.batch_size)
    policy, _ = fastest_policy(lambda: compiled_detectnet(settings), batch,
                               cache_dir or settings.out_dir, print_fn=print_fn)  # fmt: skip
    return policy


def compiled_detectnet(settings):
    """The DetectNet of `settings` (input size, width, batch norm), compiled
    with the DetectNet losses and Adam at `settings.learning_rate`, built
    under the current dtype policy and distribution strategy."""
    from recipes.detectnet.model import detectnet

    batch_norm = None if settings.batch_norm == "none" else settings.batch_norm
    model = detectnet((settings.image_height, settings.image_width), settings.width, batch_norm)
    return compile_detectnet(model, settings.learning_rate)


def compile_detectnet(model, learning_rate):
    """`model` compiled with the DetectNet losses and Adam at `learning_rate`
    (a fresh optimizer); returns it."""
    import keras

    from recipes.detectnet import losses

    model.compile(keras.optimizers.Adam(learning_rate), loss=losses.losses(),
                  loss_weights=losses.LOSS_WEIGHTS)  # fmt: skip
    return model


def labelled_batch(source, image_size, fit="pad", count=128):
    """`(images, targets)` arrays of the first `count` examples of `source`,
    unaugmented: images float32, targets `{"coverage", "bboxes"}` encoded
    for the DetectNet losses."""
    from recipes.detectnet import targets

    grid = targets.encode_batch(data.labels_of(source)[:count], image_size)
    images = data.images_of(source, image_size, count, fit).astype("float32")
    return images, {"coverage": grid, "bboxes": grid}


def generated_scenes(image_size, num_train, num_val, seed):
    """`(train_images, train_labels, val_images, val_labels)` of generated
    scenes (seeds `seed` and `seed + 1`), images uint8, in memory: the CPU
    default's tiny data (KITTI folders are streamed, see `sources`).

    Example:

    >>> x, y, xv, yv = generated_scenes((64, 96), 3, 2, seed=0)
    >>> x.shape, len(yv)
    ((3, 64, 96, 3), 2)
    """
    from recipes.detectnet import scenes

    train = list(scenes.generate(num_train, seed=seed, image_size=image_size))
    val = list(scenes.generate(num_val, seed=seed + 1, image_size=image_size))
    return (np.stack([s.image for s in train]), [s.objects for s in train],
            np.stack([s.image for s in val]), [s.objects for s in val])  # fmt: skip


def sources(settings, print_fn=None):
    """`(train_source, val_source)` for `recipes.detectnet.data.dataset`.

    With `settings.kitti_root`: the first `num_train` examples of
    `training/` train and the next `num_val` validate, files streamed
    (`data.scan` checks them all first). Without: generated scenes in memory
    (`generated_scenes`), small enough at the CPU default.
    """
    size = (settings.image_height, settings.image_width)
    wanted = settings.num_train + settings.num_val
    if settings.kitti_root is None:
        x, y, xv, yv = generated_scenes(size, settings.num_train, settings.num_val,
                                        settings.seed)  # fmt: skip
        return (x, y), (xv, yv)
    examples = data.scan(settings.kitti_root, size, fit=settings.fit, limit=wanted,
                         print_fn=print_fn)  # fmt: skip
    if len(examples) < wanted:
        raise ValueError(
            f"--kitti_root={settings.kitti_root!r} has {len(examples)} images, fewer than "
            f"--num_train + --num_val = {wanted}."
        )
    return examples[: settings.num_train], examples[settings.num_train :]


def cache_argument(value):
    """`data.dataset`'s `cache` for a `--cache` value (none, memory, a path)."""
    return {"none": None, "memory": ""}.get(value, value)


def training_dataset(source, settings):
    """The shuffled (and, with `--augment`, augmented) training batches."""
    from recipes.detectnet.augment import Augmentation

    return data.dataset(
        source, (settings.image_height, settings.image_width), settings.batch_size,
        shuffle=True, augmentation=Augmentation() if settings.augment else None,
        seed=settings.seed, cache=cache_argument(settings.cache), fit=settings.fit,
    )  # fmt: skip


def _drop_torn_backup(backup, print_fn):
    """Removes a backup that a kill tore during its very first write (with
    no earlier copy for BackupAndRestore to fall back to)."""
    import shutil

    import h5py

    latest = os.path.join(backup, "latest.weights.h5")
    if not os.path.exists(latest) or os.path.exists(latest + ".bkp"):
        return
    try:
        h5py.File(latest, "r").close()
    except OSError:
        shutil.rmtree(backup)
        print_fn(f"{latest} was torn by a kill during its first write: starting over")


def _read_rows(path):
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return {row["epoch"]: row for row in rows}


def plateau_callbacks(plateau, monitor="detection_mAP"):
    """`--plateau`'s schedule as Keras callbacks, to put after the one that
    writes `monitor` into the epoch logs: `[ReduceLROnPlateau (rate x
    PLATEAU_FACTOR after `plateau` epochs without a PLATEAU_DELTA gain),
    EarlyStopping (after 2 x plateau, best weights restored)]`."""
    import keras

    common = {"monitor": monitor, "mode": "max", "min_delta": PLATEAU_DELTA}
    return [keras.callbacks.ReduceLROnPlateau(factor=PLATEAU_FACTOR, patience=plateau, **common),
            keras.callbacks.EarlyStopping(patience=2 * plateau, restore_best_weights=True,
                                          **common)]  # fmt: skip


def convergence(history, kept_epoch, stopped, plateau):
    """What `--plateau` did: which epoch's weights the model keeps (the best
    since the run started or resumed), where training ended, and whether it
    plateaued before `--epochs`.

    Example:

    >>> rows = [{"epoch": e, "mAP": m} for e, m in enumerate([10, 30, 31, 30.5], 1)]
    >>> convergence(rows, kept_epoch=3, stopped=False, plateau=1)["summary"]
    'plateau: none within 4 epochs (raise --epochs); keeping epoch 3 (mAP 31.0)'
    """
    kept = next((row for row in history if row["epoch"] == kept_epoch), {})
    result = {"plateau": plateau, "kept_epoch": kept_epoch, "kept_mAP": kept.get("mAP"),
              "epochs_run": len(history), "stopped_early": stopped}  # fmt: skip
    score = "no score" if kept.get("mAP") is None else f"mAP {kept['mAP']:.1f}"
    where = f"keeping epoch {kept_epoch} ({score})"
    if stopped:
        result["summary"] = (f"plateau: stopped after epoch {len(history)}, no "
                             f"{PLATEAU_DELTA:g}-point gain in {2 * plateau} epochs; {where}")
    else:
        result["summary"] = f"plateau: none within {len(history)} epochs (raise --epochs); {where}"
    return result


def run(settings, print_fn=print, data_sources=None):
    """Trains and scores one DetectNet; writes `model.keras` and `metrics.json`.

    Training streams the data (`recipes.detectnet.data`), augments it as
    DIGITS does unless `settings.augment` is False, runs under
    `settings.strategy` and `settings.mixed_precision`, and is resumable:
    `keras.callbacks.BackupAndRestore` keeps `out_dir/backup` until the last
    epoch, and each epoch's scores go to `out_dir/epochs.jsonl` as they come,
    so a killed run continues from its last finished epoch when rerun.

    Args:
        settings: An object with the attributes named in `SETTINGS` (the
            flags, or e.g. a `types.SimpleNamespace`); checked first.
        print_fn: Called with one progress line per epoch (None: silent).
        data_sources: `sources(settings)` when the caller has them already
            (a KITTI folder is then not scanned twice).

    Returns:
        `(model, history)`: the trained model (with `settings.plateau`, the
        weights of its best epoch) and one score dict per epoch
        (`evaluate.score` plus `epoch`, `loss`, `learning_rate`, `seconds`).

    Example (trains for a few seconds):

    >>> import types
    >>> settings = types.SimpleNamespace(kitti_root=None, image_height=64,
    ...     image_width=96, width=0.0625, batch_norm="all", num_train=4, num_val=2,
    ...     epochs=1, batch_size=2, learning_rate=1e-3, seed=0, out_dir="/tmp/dn",
    ...     augment=True, fit="pad", cache="none", strategy="none",
    ...     mixed_precision="float32", tensorboard=False, plateau=0)
    >>> model, history = run(settings, print_fn=None)  # doctest: +SKIP
    """
    check_flags(settings)
    print_fn = print_fn or (lambda line: None)
    import keras

    from recipes.apputil import distribution_strategy
    from recipes.detectnet import evaluate
    from recipes.detectnet.callbacks import DetectionScore, detection_scores

    size = (settings.image_height, settings.image_width)
    train_source, val_source = data_sources or sources(settings, print_fn)
    settings.mixed_precision = resolve_policy(settings, train_source, print_fn)
    check_cache(settings.out_dir, settings)
    kind = "generated in memory" if settings.kitti_root is None else "streamed"
    print_fn(f"data: {len(data.labels_of(train_source))} training, "
             f"{len(data.labels_of(val_source))} validation images of {size[1]}x{size[0]} "
             f"({kind}; augmentation {'on' if settings.augment else 'off'})")
    keras.mixed_precision.set_global_policy(settings.mixed_precision)
    keras.utils.set_random_seed(settings.seed)
    strategy = distribution_strategy(settings.strategy)
    with strategy.scope():
        model = compiled_detectnet(settings)
    os.makedirs(settings.out_dir, exist_ok=True)
    with open(os.path.join(settings.out_dir, "settings.json"), "w") as handle:
        json.dump({k: getattr(settings, k) for k in CACHE_KEYS}, handle, indent=1)
    backup = os.path.join(settings.out_dir, "backup")
    rows_path = os.path.join(settings.out_dir, "epochs.jsonl")
    if not os.path.isdir(backup) and os.path.exists(rows_path):
        os.remove(rows_path)  # a fresh run, not a resumed one
    timer = {}

    def on_epoch(epoch, result, logs):
        result.update(epoch=epoch + 1, loss=float(logs.get("loss", float("nan"))),
                      learning_rate=float(model.optimizer.learning_rate),
                      seconds=time.time() - timer.pop("start", time.time()))  # fmt: skip
        row = {k: None if v != v else v for k, v in result.items()}  # NaN -> null
        with open(rows_path, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        aps = "/".join(f"{result[f'ap_{level}']:.1f}" for level in ("easy", "moderate", "hard"))
        print_fn(
            f"epoch {epoch + 1}/{settings.epochs}: loss {result['loss']:.3f}, DIGITS mAP "
            f"{result['mAP']:.1f} (P {result['precision']:.1f}, R {result['recall']:.1f}), "
            f"AP easy/mod/hard {aps}, {result['seconds']:.0f} s"
        )

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            timer["start"] = time.time()

    callbacks = [
        EpochTimer(),
        # double_checkpoint: a kill while the backup is written falls back to the one before;
        # the epoch's row is written after its backup
        keras.callbacks.BackupAndRestore(backup, double_checkpoint=True),
        DetectionScore(val_source, size, evaluate.kitti_scale(size[0]), settings.fit, on_epoch),
    ]
    plateau = settings.plateau
    if plateau:  # after DetectionScore, which puts detection_mAP into the logs
        reduce_rate, stopping = plateau_callbacks(plateau)
        callbacks += [reduce_rate, stopping]
    if settings.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(settings.out_dir, "logs")))
    _drop_torn_backup(backup, print_fn)
    if os.path.isdir(backup):
        print_fn(f"resuming from {backup}")
    model.fit(training_dataset(train_source, settings), epochs=settings.epochs,
              callbacks=callbacks, shuffle=False, verbose=0)  # the dataset shuffles
    rows = _read_rows(rows_path)
    history = [rows[epoch] for epoch in sorted(rows)]
    record = {"settings": {name: getattr(settings, name) for name in SETTINGS},
              "epochs": history}  # fmt: skip
    if plateau:
        record["convergence"] = convergence(history, stopping.best_epoch + 1,
                                            stopping.stopped_epoch > 0, plateau)  # fmt: skip
        print_fn(record["convergence"]["summary"])
    # over-fitting check: the same score on as many training images, not augmented
    count = len(data.labels_of(val_source))
    record["train_scores"] = detection_scores(model, data.first(train_source, count), size,
                                              evaluate.kitti_scale(size[0]), settings.fit)
    print_fn(f"DIGITS mAP on {count} training images (unaugmented): "
             f"{record['train_scores']['mAP']:.1f}")
    model.save(os.path.join(settings.out_dir, "model.keras"))
    with open(os.path.join(settings.out_dir, "metrics.json"), "w") as handle:
        json.dump(record, handle, indent=1)
    print_fn(f"wrote {settings.out_dir}/model.keras and metrics.json")
    return model, history


def main(argv):
    del argv
    try:
        check_flags(flags.FLAGS)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    from recipes.apputil import quiet_tensorflow

    quiet_tensorflow(flags.FLAGS.verbose)
    run(flags.FLAGS, print_fn=lambda line: print(line, flush=True))


if __name__ == "__main__":
    from recipes import apputil

    define_flags()
    apputil.run(main)
