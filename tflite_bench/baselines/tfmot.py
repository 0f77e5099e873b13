"""tfmot baseline: magnitude pruning + pruning-preserving QAT -> int8 .tflite.

Run it as its own process (tensorflow-model-optimization only works on
`tf_keras`, and importing it switches TensorFlow to legacy Keras):

    python -m tflite_bench.baselines.tfmot --data train.npz \\
        --val-data val.npz --arch small_cnn --sparsity 0.75 \\
        --out tfmot_int8.tflite --json tfmot_int8.json

or from Python through `train_baseline(...)`, which starts that process.
Steps: train dense (`--epochs`), prune to `--sparsity` with tfmot's
polynomial-decay magnitude schedule (`--prune-epochs`), strip the pruning
wrappers, fine-tune with pruning-preserving quantization-aware training
(`--qat-epochs`, `Default8BitPrunePreserveQuantizeScheme`), then convert
full-integer int8 with a representative dataset from the training data.

Importing this module imports neither TensorFlow nor tfmot; they are
imported inside `main()` only, after `TF_USE_LEGACY_KERAS=1` is set.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

from tflite_bench.commands import child_env
from tflite_bench.errors import BenchError
from tflite_bench.quiet import quiet_startup

MISSING = (
    "tflite_bench.baselines.tfmot needs tensorflow-model-optimization and "
    "tf-keras: pip install 'keras-evosynth[baselines]' "
    "(see docs/tflite_bench.md)"
)


def build_parser():
    """The runner's arguments.

    Example:

    >>> args = build_parser().parse_args(["--data", "d.npz", "--out", "m.tflite"])
    >>> args.arch, args.sparsity
    ('small_cnn', 0.5)
    """
    p = argparse.ArgumentParser(
        prog="python -m tflite_bench.baselines.tfmot",
        description="Train an architecture with tfmot magnitude pruning + "
        "pruning-preserving QAT (tf_keras) and export int8 .tflite.",
    )
    p.add_argument("--data", required=True,
                   help="training .npz with x (float examples) and y (labels)")
    p.add_argument("--val-data", "--val_data", dest="val_data",
                   help="held-out .npz for the reported Keras accuracy")
    p.add_argument("--arch", default="small_cnn",
                   help="small_cnn, lenet5 or package.module:function called as "
                   "f(input_shape, num_classes, keras=tf_keras)")
    p.add_argument("--num-classes", "--num_classes", dest="num_classes",
                   type=int, help="default: max(y) + 1")
    p.add_argument("--sparsity", type=float, default=0.5,
                   help="target fraction of zero weights (default 0.5)")
    p.add_argument("--epochs", type=int, default=2,
                   help="dense training epochs before pruning (default 2)")
    p.add_argument("--prune-epochs", "--prune_epochs", dest="prune_epochs",
                   type=int, default=2, help="pruning epochs (default 2)")
    p.add_argument("--qat-epochs", "--qat_epochs", dest="qat_epochs", type=int,
                   default=1, help="QAT epochs (default 1)")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int,
                   default=64)
    p.add_argument("--learning-rate", "--learning_rate", dest="learning_rate",
                   type=float, default=1e-3)
    p.add_argument("--representative", type=int, default=200,
                   help="training examples used to calibrate int8 (default 200)")
    p.add_argument("--float-io", "--float_io", dest="float_io",
                   action="store_true",
                   help="keep float32 model input/output (default int8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output .tflite")
    p.add_argument("--json", help="write a summary (accuracy, sparsity) here")
    return p


def _check_args(args):
    if not 0.0 <= args.sparsity < 1.0:
        raise ValueError(f"--sparsity must be in [0, 1), got {args.sparsity}")
    for name in ("epochs", "prune_epochs", "qat_epochs"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0")
    if args.prune_epochs < 1 and args.sparsity > 0:
        raise ValueError("--prune-epochs must be >= 1 when --sparsity > 0")
    if args.batch_size < 1 or args.representative < 1:
        raise ValueError("--batch-size and --representative must be >= 1")


def _import_legacy_stack():
    """Imports tf, tf_keras, tfmot with legacy Keras; raises BenchError."""
    if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise BenchError(
            "tflite_bench.baselines.tfmot must run in its own process (TensorFlow "
            "is already imported here with Keras 3): use "
            "`python -m tflite_bench.baselines.tfmot` or train_baseline()"
        )
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    quiet_startup()  # TensorFlow's native log lines hidden unless KERAS_EVOSYNTH_VERBOSE=1
    try:
        import tensorflow_model_optimization as tfmot
        import tf_keras
    except ImportError as e:
        raise BenchError(f"{MISSING} ({e})") from e
    import tensorflow as tf

    return tf, tf_keras, tfmot


def _kernel_sparsity(model):
    """(zeros, total) over the conv/dense kernels of a (QAT) tf_keras model."""
    import numpy as np

    zeros = total = 0
    for weight in model.weights:
        name = weight.name.split("/")[-1]
        if name.startswith(("kernel", "depthwise_kernel")):
            value = np.asarray(weight.numpy())
            zeros += int(np.sum(value == 0))
            total += int(value.size)
    return zeros, total


def train(args):
    """Runs the whole pipeline in this (fresh) process; returns the summary."""
    _check_args(args)
    tf, tf_keras, tfmot = _import_legacy_stack()
    import numpy as np

    from tflite_bench.baselines import archs
    from tflite_bench.host import load_data

    x, y = load_data(args.data)
    if not np.issubdtype(x.dtype, np.floating):
        raise BenchError(f"{args.data}: x must be float (got {x.dtype})")
    x = x.astype(np.float32)
    num_classes = args.num_classes or int(y.max()) + 1
    val = load_data(args.val_data) if args.val_data else None
    tf_keras.utils.set_random_seed(args.seed)
    model = archs.resolve(args.arch)(x.shape[1:], num_classes, keras=tf_keras)

    def compile_fit(m, epochs, callbacks=()):
        m.compile(
            optimizer=tf_keras.optimizers.Adam(args.learning_rate),
            loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        if epochs:
            m.fit(x, y, batch_size=args.batch_size, epochs=epochs,
                  callbacks=list(callbacks), verbose=2)

    print(f"[tfmot] dense training: {args.epochs} epoch(s)", file=sys.stderr)
    compile_fit(model, args.epochs)
    sparsity = tfmot.sparsity.keras
    if args.sparsity > 0:
        steps = math.ceil(len(x) / args.batch_size) * args.prune_epochs
        schedule = sparsity.PolynomialDecay(
            initial_sparsity=0.0, final_sparsity=args.sparsity, begin_step=0,
            end_step=max(steps - 1, 1), frequency=max(steps // 10, 1),
        )
        print(f"[tfmot] pruning to {args.sparsity:.0%}: "
              f"{args.prune_epochs} epoch(s)", file=sys.stderr)
        pruned = sparsity.prune_low_magnitude(model, pruning_schedule=schedule)
        compile_fit(pruned, args.prune_epochs, [sparsity.UpdatePruningStep()])
        model = sparsity.strip_pruning(pruned)
    print(f"[tfmot] pruning-preserving QAT: {args.qat_epochs} epoch(s)",
          file=sys.stderr)
    quant = tfmot.quantization.keras
    qat = quant.quantize_apply(
        quant.quantize_annotate_model(model),
        tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme(),
    )
    compile_fit(qat, args.qat_epochs)
    zeros, total = _kernel_sparsity(qat)
    accuracy = None
    if val is not None:
        accuracy = float(qat.evaluate(val[0].astype(np.float32), val[1],
                                      verbose=0)[1])

    print("[tfmot] converting to int8 .tflite", file=sys.stderr)
    converter = tf.lite.TFLiteConverter.from_keras_model(qat)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    calib = x[: args.representative]
    converter.representative_dataset = lambda: ([calib[i : i + 1]]
                                                for i in range(len(calib)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if not args.float_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    flatbuffer = converter.convert()
    with open(args.out, "wb") as f:
        f.write(flatbuffer)
    summary = {
        "out": os.path.abspath(args.out),
        "arch": args.arch,
        "input_shape": [int(d) for d in x.shape[1:]],
        "num_classes": num_classes,
        "sparsity_target": args.sparsity,
        "kernel_sparsity": zeros / total if total else None,
        "keras_val_accuracy": accuracy,
        "epochs": args.epochs,
        "prune_epochs": args.prune_epochs,
        "qat_epochs": args.qat_epochs,
        "train_examples": int(len(x)),
        "io": "float32" if args.float_io else "int8",
        "size_bytes": len(flatbuffer),
        "tf_keras": tf_keras.__version__,
        "tfmot": tfmot.__version__,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def main(argv=None):
    """CLI entry point; returns the exit status (2 = missing dependency).

    Example:

    It prints the summary as one JSON line, then returns 0. Not run here:
    it imports tfmot, which turns the process to legacy tf_keras (call it in
    a child process, as `train_baseline` does).

    >>> main(["--data", "train.npz", "--out", "b.tflite"])  # doctest: +SKIP
    {"out": ".../b.tflite", ...}
    0
    """
    args = build_parser().parse_args(argv)
    try:
        summary = train(args)
    except ValueError as e:
        print(f"tfmot baseline: error: {e}", file=sys.stderr)
        return 2
    except BenchError as e:
        print(f"tfmot baseline: error: {e}", file=sys.stderr)
        return 2 if str(e).startswith(MISSING) else 1
    print(json.dumps(summary))
    return 0


def train_baseline(data, out, val_data=None, arch="small_cnn", sparsity=0.5,
                   epochs=2, prune_epochs=2, qat_epochs=1, batch_size=64,
                   float_io=False, extra_args=(), timeout=None):
    """Runs the baseline in a child process and returns its summary dict.

    Safe to call from a Keras 3 program: tfmot and tf_keras are imported in
    the child only.

    Args:
        data: Training `.npz` (`x` float examples, `y` labels).
        out: Output .tflite path.
        val_data: Optional held-out `.npz`.
        arch: `small_cnn`, `lenet5` or `package.module:function`.
        sparsity: Target fraction of zero kernel weights.
        epochs: Dense epochs before pruning.
        prune_epochs: Pruning epochs.
        qat_epochs: QAT epochs.
        batch_size: Batch size.
        float_io: Keep float32 input/output.
        extra_args: More command-line arguments.
        timeout: Seconds, or None.

    Returns:
        The summary (`out`, `kernel_sparsity`, `keras_val_accuracy`, ...).

    Raises:
        BenchError: If the child fails (message: its last error line).

    Example:

    >>> summary = train_baseline("train.npz", "tfmot.tflite",
    ...                          sparsity=0.75)  # doctest: +SKIP
    """
    with tempfile.TemporaryDirectory() as tmp:
        summary_path = os.path.join(tmp, "summary.json")
        cmd = [
            sys.executable, "-m", "tflite_bench.baselines.tfmot",
            "--data", os.fspath(data), "--out", os.fspath(out),
            "--arch", arch, "--sparsity", str(sparsity),
            "--epochs", str(epochs), "--prune-epochs", str(prune_epochs),
            "--qat-epochs", str(qat_epochs), "--batch-size", str(batch_size),
            "--json", summary_path, *extra_args,
        ]
        if val_data is not None:
            cmd += ["--val-data", os.fspath(val_data)]
        if float_io:
            cmd.append("--float-io")
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              timeout=timeout, env=child_env())
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines()
                     if ln.startswith("tfmot baseline: error:")]
            last = (lines or proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise BenchError(f"tfmot baseline failed (exit {proc.returncode}): "
                             f"{last.strip()}")
        with open(summary_path) as f:
            return json.load(f)


if __name__ == "__main__":
    sys.exit(main())
