"""tflite_bench demo figures: float32 vs int8 vs tfmot (prune + QAT) int8.

Trains `small_cnn` (tflite_bench.baselines.archs) on offline Fashion-MNIST
with Keras 3, exports float32 and full-integer int8 .tflite, trains the same
architecture with tensorflow-model-optimization (75% magnitude pruning +
pruning-preserving QAT, in a child process; skipped when tfmot is not
installed), then measures all of them with `tflite_bench.compare` and prints
the table; JSON and a bar plot go to --out-dir.

    python benchmarks/tflite_bench_fashion.py --out-dir bench_out/tflite_bench
"""

import argparse
import importlib.util
import os
import sys

import numpy as np

from tflite_bench.quiet import quiet_startup


def export(model, path, representative=None):
    """Writes `model` as .tflite: float32, or full-int8 given calibration data."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [representative[i : i + 1]] for i in range(len(representative))
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with open(path, "wb") as f:
        f.write(converter.convert())
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default="bench_out/tflite_bench")
    p.add_argument("--train-limit", type=int, default=12000)
    p.add_argument("--test-limit", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--sparsity", type=float, default=0.75)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--skip-tfmot", action="store_true")
    p.add_argument("--verbose", action="store_true",
                   help="show TensorFlow's and LiteRT's native log lines (hidden by default)")
    args = p.parse_args(argv)
    # before TensorFlow loads (imported below)
    quiet_startup(["--verbose"] if args.verbose else [])
    os.makedirs(args.out_dir, exist_ok=True)
    out = lambda name: os.path.join(args.out_dir, name)  # noqa: E731

    import keras

    from recipes.datasets import load_classification
    from tflite_bench import compare
    from tflite_bench.baselines import archs

    data = load_classification("fashion_mnist", limit_train=args.train_limit,
                               limit_test=args.test_limit)
    np.savez(out("train.npz"), x=data.x_train, y=data.y_train)
    np.savez(out("test.npz"), x=data.x_test, y=data.y_test)

    print(f"[demo] Keras 3 small_cnn: {args.epochs} epoch(s)", file=sys.stderr)
    keras.utils.set_random_seed(0)
    model = archs.small_cnn(data.x_train.shape[1:], data.num_classes, keras)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), metrics=["accuracy"])
    model.fit(data.x_train, data.y_train, batch_size=64, epochs=args.epochs,
              verbose=2)
    keras_acc = model.evaluate(data.x_test, data.y_test, verbose=0)[1]
    print(f"[demo] Keras test accuracy {keras_acc:.4f}", file=sys.stderr)
    models = [export(model, out("small_cnn_float32.tflite")),
              export(model, out("small_cnn_int8.tflite"), data.x_train[:200])]
    names = ["float32", "int8 (PTQ)"]

    if args.skip_tfmot or importlib.util.find_spec(
            "tensorflow_model_optimization") is None:
        print("[demo] tfmot not installed: baseline skipped", file=sys.stderr)
    else:
        from tflite_bench.baselines.tfmot import train_baseline

        print("[demo] tfmot baseline (child process)", file=sys.stderr)
        summary = train_baseline(
            out("train.npz"), out("tfmot_int8.tflite"),
            val_data=out("test.npz"), arch="small_cnn", sparsity=args.sparsity,
            epochs=args.epochs, prune_epochs=2, qat_epochs=1,
        )
        print(f"[demo] tfmot: kernel sparsity {summary['kernel_sparsity']:.3f}, "
              f"Keras accuracy {summary['keras_val_accuracy']:.4f}",
              file=sys.stderr)
        models.append(summary["out"])
        names.append(f"tfmot {args.sparsity:.0%} pruned+QAT int8")

    threads = [int(t) for t in args.threads.split(",")]
    report = compare(models, names=names, threads=threads, runs=args.runs,
                     warmup=20, data=out("test.npz"))
    report.settings["keras_test_accuracy_float"] = keras_acc
    print(report.table())
    report.to_json(out("report.json"))
    try:
        report.plot(out("report.png"))
    except Exception as e:  # matplotlib missing: the table and JSON stand
        print(f"[demo] no plot: {e}", file=sys.stderr)
    print(f"[demo] wrote {out('report.json')}", file=sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
