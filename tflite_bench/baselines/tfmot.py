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

It also holds the machinery every tfmot baseline shares, so that a baseline
of another model supplies only its model, data and loss
(`recipes.detectnet.tfmot_baseline`): `save_weights` / `load_weights` (a
Keras 3 model's weights into its tf_keras twin, by layer name), `prune`
(magnitude pruning on a polynomial schedule, then stripped), `kernel_zeros`,
`convert_int8`, `write_outputs` (atomic), `cli` (the exit statuses and the
one-line `tfmot baseline: error:` protocol) and `run_child` (the child
process a Keras 3 program starts).
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

from tflite_bench.commands import child_env, error_line
from tflite_bench.errors import BenchError
from tflite_bench.quiet import quiet_startup

MISSING = (
    "tflite_bench.baselines.tfmot needs tensorflow-model-optimization and "
    "tf-keras: pip install 'keras-evosynth[baselines]' "
    "(see docs/tflite_bench.md)"
)
ERROR = "tfmot baseline: error:"  # the line a failing child ends with


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


def import_legacy_stack():
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


def _weighted_layers(model):
    return [layer for layer in model.layers if layer.weights]


def save_weights(model, path):
    """Saves every layer's weights to an .npz keyed `"<layer name>:<index>"`.

    Works for a Keras 3 or a tf_keras model; `load_weights` reads it back into
    the same architecture built with either.

    Example:

    >>> import keras, os, tempfile
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, name="d")])
    >>> path = os.path.join(tempfile.mkdtemp(), "w.npz")
    >>> save_weights(model, path)
    >>> import numpy as np; sorted(np.load(path))
    ['d:0', 'd:1']
    """
    import numpy as np

    arrays = {}
    for layer in _weighted_layers(model):
        for index, value in enumerate(layer.get_weights()):
            arrays[f"{layer.name}:{index}"] = np.asarray(value)
    np.savez(path, **arrays)


def load_weights(model, path):
    """Loads `save_weights`' file into `model`, layer by layer.

    Raises:
        ValueError: Naming the layer, when a layer is missing from the file,
            a shape differs, or the file has weights the model lacks.
    """
    import numpy as np

    with np.load(path) as data:
        stored = {key: data[key] for key in data.files}
    used = set()
    for layer in _weighted_layers(model):
        current = layer.get_weights()
        values = []
        for index, weight in enumerate(current):
            key = f"{layer.name}:{index}"
            if key not in stored:
                raise ValueError(f"{path}: no weight {key!r} for layer {layer.name!r}")
            if stored[key].shape != weight.shape:
                raise ValueError(f"{path}: layer {layer.name!r} weight {index} has shape "
                                 f"{stored[key].shape}, the model {weight.shape}")  # fmt: skip
            values.append(stored[key])
            used.add(key)
        layer.set_weights(values)
    extra = sorted(set(stored) - used)
    if extra:
        raise ValueError(f"{path}: weights {extra[:3]} match no layer of the model")


def kernel_zeros(model):
    """`(zeros, total)` over the conv / dense kernels of a tf_keras model
    (pruned, stripped or QAT-wrapped)."""
    import numpy as np

    zeros = total = 0
    for weight in model.weights:
        name = weight.name.split("/")[-1]
        if name.startswith(("kernel", "depthwise_kernel")):
            value = np.asarray(weight.numpy())
            zeros += int(np.sum(value == 0))
            total += int(value.size)
    return zeros, total


def prune(tf_keras, tfmot, model, sparsity, steps, fit, only=None):
    """Fine-tunes `model` with tfmot's magnitude pruning and returns it with
    the pruning wrappers stripped.

    The sparsity grows from 0 to `sparsity` over `steps` training steps
    (`PolynomialDecay`, pruning every tenth of them).

    Args:
        tf_keras, tfmot: The legacy stack (`import_legacy_stack`).
        model: A tf_keras model.
        sparsity: Target fraction of zero weights in each pruned layer.
        steps: Training steps `fit` runs.
        fit: `fit(pruned_model, callbacks)`: compiles and trains it (the
            callbacks hold tfmot's `UpdatePruningStep`).
        only: A tf_keras layer class: wrap only its layers (tfmot refuses
            to wrap some models whole, e.g. one with a `Rescaling` layer);
            None wraps the model.
    """
    api = tfmot.sparsity.keras
    schedule = api.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0,
        end_step=max(steps - 1, 1), frequency=max(steps // 10, 1),
    )
    if only is None:
        pruned = api.prune_low_magnitude(model, pruning_schedule=schedule)
    else:
        def wrap(layer):
            if isinstance(layer, only):
                return api.prune_low_magnitude(layer, pruning_schedule=schedule)
            return layer

        pruned = tf_keras.models.clone_model(model, clone_function=wrap)
    fit(pruned, [api.UpdatePruningStep()])
    return api.strip_pruning(pruned)


def convert_int8(tf, model, calibration, int8_io):
    """Full-integer int8 flatbuffer of a tf_keras model, calibrated on the
    examples of `calibration` one at a time; `int8_io` also makes the input
    and output int8 (else float32 with QUANTIZE / DEQUANTIZE)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: (
        [calibration[i : i + 1]] for i in range(len(calibration)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def _replace(path, data, mode):
    directory = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile(mode, dir=directory, suffix=".tmp", delete=False) as f:
        f.write(data)
    os.replace(f.name, path)


def write_outputs(out, flatbuffer, json_path, summary, indent):
    """Writes the flatbuffer to `out` and, if `json_path`, the summary there
    (each atomically: a temporary file, then `os.replace`)."""
    _replace(out, flatbuffer, "wb")
    if json_path:
        _replace(json_path, json.dumps(summary, indent=indent), "w")


def train(args):
    """Runs the whole pipeline in this (fresh) process; returns the summary."""
    _check_args(args)
    tf, tf_keras, tfmot = import_legacy_stack()
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
    if args.sparsity > 0:
        print(f"[tfmot] pruning to {args.sparsity:.0%}: "
              f"{args.prune_epochs} epoch(s)", file=sys.stderr)
        steps = math.ceil(len(x) / args.batch_size) * args.prune_epochs
        model = prune(tf_keras, tfmot, model, args.sparsity, steps,
                      lambda m, callbacks: compile_fit(m, args.prune_epochs, callbacks))
    print(f"[tfmot] pruning-preserving QAT: {args.qat_epochs} epoch(s)",
          file=sys.stderr)
    quant = tfmot.quantization.keras
    qat = quant.quantize_apply(
        quant.quantize_annotate_model(model),
        tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme(),
    )
    compile_fit(qat, args.qat_epochs)
    zeros, total = kernel_zeros(qat)
    accuracy = None
    if val is not None:
        accuracy = float(qat.evaluate(val[0].astype(np.float32), val[1],
                                      verbose=0)[1])

    print("[tfmot] converting to int8 .tflite", file=sys.stderr)
    flatbuffer = convert_int8(tf, qat, x[: args.representative], int8_io=not args.float_io)
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
    write_outputs(args.out, flatbuffer, args.json, summary, indent=2)
    return summary


def cli(argv, parser, train, check=None):
    """A baseline's command line: parses `argv`, runs `check()` then
    `train(args)`, prints the summary as one JSON line and returns 0; on
    failure prints one `tfmot baseline: error: ...` line and returns 2 (bad
    input, tfmot missing) or 1 (the run failed)."""
    args = parser.parse_args(argv)
    try:
        if check is not None:
            check()
        summary = train(args)
    except (ValueError, BenchError) as error:
        print(f"{ERROR} {error}", file=sys.stderr)
        failed = isinstance(error, BenchError) and not str(error).startswith(MISSING)
        return 1 if failed else 2
    print(json.dumps(summary))
    return 0


def main(argv=None):
    """CLI entry point; returns the exit status (2 = bad input or missing
    dependency).

    Example:

    It prints the summary as one JSON line, then returns 0. Not run here:
    it imports tfmot, which turns the process to legacy tf_keras (call it in
    a child process, as `train_baseline` does).

    >>> main(["--data", "train.npz", "--out", "b.tflite"])  # doctest: +SKIP
    {"out": ".../b.tflite", ...}
    0
    """
    return cli(argv, build_parser(), train)


def run_child(module, argv, timeout=None, env=None, log=None, log_prefix=None):
    """Runs a baseline's command line (`python -m module argv`) in a child
    process, with `child_env()` updated by `env`.

    Safe to call from a Keras 3 program: tfmot and tf_keras are imported in
    the child only. With `log`, the child's stderr lines that start with
    `log_prefix` (its progress) are passed to it.

    Raises:
        BenchError: If the child fails (message: its last error line).
    """
    proc = subprocess.run([sys.executable, "-m", module, *argv], capture_output=True,
                          text=True, timeout=timeout, env={**child_env(), **(env or {})})
    if log is not None:
        for line in proc.stderr.splitlines():
            if line.startswith(log_prefix):
                log(line)
    if proc.returncode != 0:
        last = error_line(proc.stderr, markers=(ERROR,))
        raise BenchError(f"tfmot baseline failed (exit {proc.returncode}): {last}")


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
        argv = [
            "--data", os.fspath(data), "--out", os.fspath(out),
            "--arch", arch, "--sparsity", str(sparsity),
            "--epochs", str(epochs), "--prune-epochs", str(prune_epochs),
            "--qat-epochs", str(qat_epochs), "--batch-size", str(batch_size),
            "--json", summary_path, *extra_args,
        ]
        if val_data is not None:
            argv += ["--val-data", os.fspath(val_data)]
        if float_io:
            argv.append("--float-io")
        run_child("tflite_bench.baselines.tfmot", argv, timeout=timeout)
        with open(summary_path) as f:
            return json.load(f)


if __name__ == "__main__":
    sys.exit(main())
