"""Tests of the tfmot baseline runner (always in child processes).

tensorflow-model-optimization is an optional extra: the end-to-end test is
skipped when it (or tf_keras) is not installed. Its presence is checked with
`importlib.util.find_spec`, which does not import it, so this test process
never switches to legacy Keras.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from tflite_bench import compare, inspect_model
from tflite_bench.baselines import archs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_python(code, *args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def _tfmot_installed():
    return all(importlib.util.find_spec(m) is not None
               for m in ("tensorflow_model_optimization", "tf_keras"))


def test_importing_runner_imports_no_tensorflow():
    proc = _run_python(
        "import sys\n"
        "import tflite_bench, tflite_bench.baselines.tfmot, "
        "tflite_bench.baselines.archs\n"
        "bad = [m for m in ('tensorflow', 'tensorflow_model_optimization', "
        "'tf_keras', 'keras') if m in sys.modules]\n"
        "print(bad)\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_missing_tfmot_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 8, 8, 1), np.float32),
             y=np.arange(4))
    proc = _run_python(
        "import sys\n"
        "sys.modules['tensorflow_model_optimization'] = None  # not installed\n"
        "from tflite_bench.baselines import tfmot\n"
        "sys.exit(tfmot.main(sys.argv[1:]))\n",
        "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "b.tflite"))
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("tfmot baseline: error: tflite_bench.baselines.tfmot "
                           "needs tensorflow-model-optimization and tf-keras")


def test_refuses_to_run_inside_a_keras3_process(tmp_path):
    proc = _run_python(
        "import sys, tensorflow\n"
        "from tflite_bench.baselines import tfmot\n"
        "sys.exit(tfmot.main(sys.argv[1:]))\n",
        "--data", "d.npz", "--out", "b.tflite")
    assert proc.returncode == 1
    assert "must run in its own process" in proc.stderr


@pytest.mark.parametrize("argv, message", [
    (["--sparsity", "1.5"], "--sparsity must be in [0, 1)"),
    (["--prune-epochs", "0"], "--prune-epochs must be >= 1"),
])
def test_bad_arguments(tmp_path, argv, message):
    from tflite_bench.baselines import tfmot

    args = tfmot.build_parser().parse_args(
        ["--data", "d.npz", "--out", "b.tflite", *argv])
    with pytest.raises(ValueError) as info:
        tfmot._check_args(args)
    assert message in str(info.value)


def test_arch_resolution():
    assert archs.resolve("small_cnn") is archs.small_cnn
    assert archs.resolve("tflite_bench.baselines.archs:lenet5") is archs.lenet5
    with pytest.raises(ValueError, match="one of"):
        archs.resolve("resnet")
    with pytest.raises(ValueError, match="cannot import"):
        archs.resolve("no_such_module_xyz:f")


def test_archs_build_with_keras3():
    import keras

    model = archs.small_cnn((8, 8, 1), 10, keras)
    assert model.output_shape == (None, 10)
    assert archs.lenet5((28, 28, 1), 10, keras).count_params() == 61706


@pytest.mark.skipif(not _tfmot_installed(),
                    reason="tensorflow-model-optimization / tf_keras not installed")
def test_tfmot_baseline_end_to_end(tmp_path, digits):
    from tflite_bench.baselines.tfmot import train_baseline

    x_train, y_train, x_test, y_test = digits
    np.savez(tmp_path / "train.npz", x=x_train, y=y_train)
    np.savez(tmp_path / "test.npz", x=x_test, y=y_test)
    out = tmp_path / "tfmot.tflite"
    summary = train_baseline(tmp_path / "train.npz", out,
                             val_data=tmp_path / "test.npz", arch="small_cnn",
                             sparsity=0.75, epochs=2, prune_epochs=1, qat_epochs=1,
                             timeout=600)
    assert summary["kernel_sparsity"] == pytest.approx(0.75, abs=0.02)
    assert summary["io"] == "int8" and summary["size_bytes"] == out.stat().st_size
    info = inspect_model(out)
    assert info.ops["float"] == 0 and info.ops["mixed"] == 0
    assert info.op_types["CONV_2D"] == 2 and info.op_types["FULLY_CONNECTED"] == 2
    report = compare([out], runs=5, data=tmp_path / "test.npz", memory=False,
                     progress=False)
    # The int8 flatbuffer keeps the QAT Keras model's accuracy.
    assert report.rows[0].accuracy == pytest.approx(summary["keras_val_accuracy"],
                                                    abs=0.03)
