"""Tests for recipes.detectnet.tfmot_baseline (tfmot runs in a child process)."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from recipes.detectnet import tfmot_baseline
from recipes.detectnet.model import detectnet

HAS_TFMOT = importlib.util.find_spec("tensorflow_model_optimization") is not None
SIZE = (64, 96)


def test_weights_round_trip_by_layer_name(tmp_path):
    source = detectnet(SIZE, 0.0625, "all")
    for weight in source.weights:
        weight.assign(np.random.default_rng(0).normal(size=weight.shape).astype("float32"))
    path = str(tmp_path / "w.npz")
    tfmot_baseline.save_weights(source, path)
    target = detectnet(SIZE, 0.0625, "all")
    tfmot_baseline.load_weights(target, path)
    for a, b in zip(source.get_weights(), target.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_load_weights_names_the_mismatching_layer(tmp_path):
    path = str(tmp_path / "w.npz")
    tfmot_baseline.save_weights(detectnet(SIZE, 0.125, "all"), path)
    with pytest.raises(ValueError, match="layer 'conv1_7x7_s2' weight 0 has shape"):
        tfmot_baseline.load_weights(detectnet(SIZE, 0.0625, "all"), path)


def test_check_args_rejects_bad_input(tmp_path):
    args = tfmot_baseline.build_parser().parse_args(
        ["--weights", str(tmp_path / "missing.npz"), "--out", "x.tflite", "--sparsity", "0.5"]
    )
    with pytest.raises(ValueError, match="is not a file"):
        tfmot_baseline.check_args(args)
    args.sparsity = 1.0
    with pytest.raises(ValueError, match="--sparsity must be in"):
        tfmot_baseline.check_args(args)


def test_child_without_tfmot_exits_2_with_one_line(tmp_path):
    weights = tmp_path / "w.npz"
    np.savez(weights, x=np.zeros(1))
    code = (
        "import sys; sys.modules['tensorflow_model_optimization'] = None\n"
        "from recipes.detectnet.tfmot_baseline import main\n"
        f"sys.exit(main(['--weights', {str(weights)!r}, '--out', 'x.tflite', "
        "'--sparsity', '0.5']))"
    )
    from tflite_bench.commands import child_env

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(child_env(), TF_USE_LEGACY_KERAS="1"))  # as run_baseline
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("tfmot baseline: error: ")
    assert "pip install 'keras-evosynth[baselines]'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(not HAS_TFMOT, reason="tensorflow-model-optimization not installed")
def test_child_prunes_the_ancestor_to_the_target_and_exports_int8(tmp_path):
    import tflite_bench

    ancestor = detectnet(SIZE, 0.0625, "all")
    out = str(tmp_path / "tfmot.tflite")
    summary_path = str(tmp_path / "tfmot.json")
    settings = {"image_height": 64, "image_width": 96, "width": 0.0625, "num_train": 8,
                "batch_size": 4, "representative": 4}  # fmt: skip
    result = tfmot_baseline.run_baseline(
        ancestor, out, summary_path, 0.8, 1, settings, log=lambda line: None
    )
    with open(summary_path) as f:
        assert json.load(f) == result
    assert result["method"] == "PTQ"
    assert abs(result["kernel_sparsity"] - 0.8) < 0.01
    total = sum(int(np.prod(w.shape)) for w in ancestor.weights if w.path.endswith("/kernel"))
    assert result["kernel_total"] == total
    info = tflite_bench.inspect_model(out)
    assert info.op_types["CONV_2D"] == 59  # 57 trunk convolutions + 2 heads
    # float32 I/O: only the QUANTIZE/DEQUANTIZE ops at the edges are mixed.
    assert info.ops["float"] == 0
    assert info.ops["mixed"] == info.op_types["QUANTIZE"] + info.op_types["DEQUANTIZE"]
    assert not os.path.exists(str(tmp_path / "tfmot_ancestor_weights.npz"))


def test_command_line_without_legacy_keras_says_what_to_set(tmp_path, monkeypatch, capsys):
    import keras  # noqa: F401  (as `python -m recipes.detectnet.tfmot_baseline` has it)

    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    argv = ["--weights", str(tmp_path / "w.npz"), "--out", "x.tflite", "--sparsity", "0.5"]
    assert tfmot_baseline.main(argv) == 1
    assert "TF_USE_LEGACY_KERAS=1 python -m recipes.detectnet.tfmot_baseline" in (
        capsys.readouterr().err)
