"""The tfmot baseline for DetectNet: magnitude pruning of the ancestor -> int8.

Run it as its own process (tensorflow-model-optimization works on `tf_keras`
only, and importing it switches TensorFlow to legacy Keras; this process never
imports Keras 3 or keras_evosynth):

    TF_USE_LEGACY_KERAS=1 python -m recipes.detectnet.tfmot_baseline --weights ancestor.npz \\
        --out tfmot.tflite --json tfmot.json --sparsity 0.9 --epochs 6 \\
        --image_height 128 --image_width 384 --width 0.25

or from a Keras 3 program through `run_baseline(ancestor, ...)`, which saves
the ancestor's weights (`save_weights`) and starts that process.
`TF_USE_LEGACY_KERAS=1` is needed on the command line: without it, importing
the `recipes.detectnet` package registers the recipe's Keras 3 losses (so that
saved DetectNets load anywhere), and this process refuses to run.

Steps: build the same DetectNet with `tf_keras` (`model.detectnet(...,
keras=tf_keras)`), load the ancestor's weights layer by layer (names and
shapes must match), stream the same training data (`recipes.detectnet.data`:
the generated scenes of `train.generated_scenes`, or `--kitti_root`'s files; not
augmented, since the augmentation layers are Keras 3's), fine-tune with
`prune_low_magnitude` (polynomial decay from 0 to `--sparsity` over all
`--epochs`) on the DetectNet loss
(tf-op copies of `losses.coverage_loss` and `losses.bbox_loss`, weights 1
and 2), strip the pruning wrappers and convert to full-integer int8 with
float32 input/output, calibrated on training images (post-training
quantization; the table row is "tfmot-pruned+PTQ").

Why not QAT as in `tflite_bench.baselines.tfmot`: tfmot 0.8.1's
`quantize_apply` refuses this graph (its `Rescaling` mean-subtraction layer
is unsupported, even when only the supported layers are annotated), and
`prune_low_magnitude(model)` likewise refuses to wrap it, so the
convolutions are wrapped one by one (`prune(..., only=Conv2D)`).

The machinery (pruning, int8 conversion, outputs, command line, child
process) is `tflite_bench.baselines.tfmot`'s; this module supplies the
DetectNet model, weights, data and loss.
"""

import argparse
import json
import math
import os
import sys

from tflite_bench.baselines import tfmot as baseline
from tflite_bench.baselines.tfmot import load_weights, save_weights
from tflite_bench.errors import BenchError

BATCH_NORM = ("all", "lrn", "none")
MODULE = "recipes.detectnet.tfmot_baseline"
LOG_PREFIX = "[tfmot-detectnet]"  # its progress lines, which run_baseline passes on


def build_parser():
    """The runner's arguments (flag names as in `recipes.detectnet.train`).

    Example:

    >>> args = build_parser().parse_args(["--weights", "w.npz", "--out", "m.tflite",
    ...                                   "--sparsity", "0.9"])
    >>> args.sparsity, args.epochs, args.width
    (0.9, 2, 0.25)
    """
    p = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description="Prune the DetectNet ancestor with tfmot (tf_keras) and export int8 .tflite.",
    )
    p.add_argument("--weights", required=True, help="ancestor weights (save_weights' .npz)")
    p.add_argument("--out", required=True, help="output .tflite")
    p.add_argument("--json", help="write the summary here")
    p.add_argument("--sparsity", type=float, required=True,
                   help="target fraction of zero conv-kernel weights")  # fmt: skip
    p.add_argument("--epochs", type=int, default=2, help="pruning fine-tuning epochs")
    p.add_argument("--image_height", type=int, default=128)
    p.add_argument("--image_width", type=int, default=384)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch_norm", choices=BATCH_NORM, default="all")
    p.add_argument("--kitti_root", default=None)
    p.add_argument("--num_train", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=10)
    p.add_argument("--learning_rate", type=float, default=3e-4)
    p.add_argument("--representative", type=int, default=64,
                   help="training images that calibrate int8")  # fmt: skip
    # read before TensorFlow loads, by recipes/__init__ (tflite_bench.quiet)
    p.add_argument("--verbose", action="store_true",
                   help="show TensorFlow's native log lines (hidden by default)")
    return p


def check_args(args):
    """Raises ValueError for out-of-range arguments, before any work."""
    if not 0.0 < args.sparsity < 1.0:
        raise ValueError(f"--sparsity must be in (0, 1), got {args.sparsity}")
    for name in ("epochs", "num_train", "batch_size", "representative"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    steps = math.ceil(args.num_train / args.batch_size) * args.epochs
    if steps < 2:
        raise ValueError(f"pruning needs >= 2 training steps, got {steps} "
                         f"(--num_train / --batch_size * --epochs)")  # fmt: skip
    if not os.path.isfile(args.weights):
        raise ValueError(f"--weights {args.weights!r} is not a file")


def _losses(tf):
    """tf-op copies of `losses.coverage_loss` and `losses.bbox_loss`."""

    def coverage(y_true, y_pred):
        error = y_pred - y_true[..., 0:1]
        return 0.5 * tf.reduce_sum(y_true[..., 8:9] * tf.square(error), axis=(1, 2, 3))

    def bboxes(y_true, y_pred):
        size = tf.concat([y_true[..., 5:7], y_true[..., 5:7]], axis=-1)
        error = (y_pred - y_true[..., 1:5]) * y_true[..., 0:1] * size * y_true[..., 7:8]
        return tf.reduce_sum(tf.abs(error), axis=(1, 2, 3))

    return {"coverage": coverage, "bboxes": bboxes}


def train(args):
    """Runs the whole baseline in this (fresh) process; returns the summary."""
    check_args(args)
    tf, tf_keras, tfmot = baseline.import_legacy_stack()
    import numpy as np

    from recipes.detectnet import data
    from recipes.detectnet.model import detectnet
    from recipes.detectnet.train import generated_scenes

    def log(line):
        print(f"{LOG_PREFIX} {line}", file=sys.stderr, flush=True)

    size = (args.image_height, args.image_width)
    tf_keras.utils.set_random_seed(args.seed)
    batch_norm = None if args.batch_norm == "none" else args.batch_norm
    model = detectnet(size, args.width, batch_norm, keras=tf_keras)
    load_weights(model, args.weights)
    if args.kitti_root:  # streamed, as the recipe trains (no augmentation: that needs Keras 3)
        source = data.scan(args.kitti_root, size, limit=args.num_train)
    else:
        images, labels, _, _ = generated_scenes(size, args.num_train, 1, args.seed)
        source = (images, labels)
    count = len(data.labels_of(source))
    train_ds = data.dataset(source, size, args.batch_size, shuffle=True, seed=args.seed)

    def fit(m, callbacks):
        m.compile(tf_keras.optimizers.Adam(args.learning_rate), loss=_losses(tf),
                  loss_weights={"coverage": 1.0, "bboxes": 2.0})  # fmt: skip
        m.fit(train_ds, epochs=args.epochs, callbacks=list(callbacks), verbose=2)

    log(f"pruning to {args.sparsity:.1%}: {args.epochs} epoch(s), {count} images")
    steps = math.ceil(count / args.batch_size) * args.epochs
    model = baseline.prune(tf_keras, tfmot, model, args.sparsity, steps, fit,
                           only=tf_keras.layers.Conv2D)  # fmt: skip
    zeros, total = baseline.kernel_zeros(model)
    log("converting to int8 .tflite (float32 input/output)")
    calib = data.images_of(source, size, args.representative).astype(np.float32)
    flatbuffer = baseline.convert_int8(tf, model, calib, int8_io=False)
    summary = {
        "out": os.path.abspath(args.out),
        "method": "PTQ",
        "sparsity_target": args.sparsity,
        "kernel_nonzero": total - zeros,
        "kernel_total": total,
        "kernel_sparsity": zeros / total,
        "epochs": args.epochs,
        "train_images": int(count),
        "image_size": list(size),
        "width": args.width,
        "size_bytes": len(flatbuffer),
        "tf_keras": tf_keras.__version__,
        "tfmot": tfmot.__version__,
    }
    baseline.write_outputs(args.out, flatbuffer, args.json, summary, indent=1)
    return summary


def _legacy_keras_or_fail():
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1" and "keras" in sys.modules:
        raise BenchError(
            "run it as `TF_USE_LEGACY_KERAS=1 python -m recipes.detectnet.tfmot_baseline "
            "...` or through run_baseline(): importing recipes.detectnet without it "
            "loads Keras 3 (to register the recipe's losses), and tfmot needs tf_keras."
        )


def main(argv=None):
    """CLI entry point; returns the exit status (2: bad input or tfmot missing).

    Example:

    It prints the summary as one JSON line, then returns 0. Not run here:
    it imports tfmot, which turns the process to legacy tf_keras (call it in
    a child process, as `run_baseline` does).

    >>> main(["--weights", "w.npz", "--out", "b.tflite", "--sparsity", "0.9"])  # doctest: +SKIP
    {"out": ".../b.tflite", "method": "PTQ", "sparsity_target": 0.9, ...}
    0
    """
    return baseline.cli(argv, build_parser(), train, check=_legacy_keras_or_fail)


def run_baseline(ancestor, out, summary_path, sparsity, epochs, settings, log=print,
                 timeout=None):  # fmt: skip
    """Runs the baseline for a Keras 3 `ancestor` in a child process.

    Args:
        ancestor: The trained float32 DetectNet (Keras 3).
        out: Output .tflite path.
        summary_path: Where the child writes its JSON summary.
        sparsity: Target fraction of zero conv-kernel weights.
        epochs: Pruning fine-tuning epochs.
        settings: Dict of the other arguments (`image_height`, `width`,
            `num_train`, ... as in `build_parser`; None values are left out).
        log: Progress printer.
        timeout: Seconds, or None.

    Returns:
        The child's summary dict.

    Raises:
        BenchError: If the child fails (message: its last error line).

    Example:

    >>> run_baseline(model, "tfmot.tflite", "tfmot.json", 0.9, 2,
    ...              {"image_height": 64, "image_width": 96})  # doctest: +SKIP
    """
    weights = os.path.splitext(out)[0] + "_ancestor_weights.npz"
    save_weights(ancestor, weights)
    argv = ["--weights", weights, "--out", os.fspath(out), "--json", os.fspath(summary_path),
            "--sparsity", str(sparsity), "--epochs", str(epochs)]  # fmt: skip
    for key, value in settings.items():
        if value is not None:
            argv += [f"--{key}", str(value)]
    env = {"TF_USE_LEGACY_KERAS": "1",
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}  # fmt: skip
    log(f"tfmot baseline: -m {MODULE} {' '.join(argv)}")
    try:
        baseline.run_child(MODULE, argv, timeout=timeout, env=env, log=log,
                           log_prefix=LOG_PREFIX)  # fmt: skip
    finally:
        os.remove(weights)
    with open(summary_path) as f:
        return json.load(f)


if __name__ == "__main__":
    sys.exit(main())
