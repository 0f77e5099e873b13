"""Tests for recipes.detectnet.train (flag checks, data, a tiny end-to-end run)."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from recipes.detectnet import kitti, scenes
from recipes.detectnet.train import SETTINGS, check_flags, load_data, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flags(**overrides):
    values = dict(image_height=64, image_width=96, width=0.25, num_train=4, num_val=2,
                  epochs=1, batch_size=2, learning_rate=1e-3, kitti_root=None,
                  batch_norm="all", seed=0, out_dir="unused")  # fmt: skip
    assert set(values) == set(SETTINGS)
    values.update(overrides)
    return types.SimpleNamespace(**values)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"image_width": 100}, "--image_width=100 must be positive multiples of 16"),
        ({"width": 0}, "--width must be in"),
        ({"epochs": 0}, "--epochs must be >= 1"),
        ({"num_val": 0}, "--num_val must be >= 1"),
        ({"learning_rate": 2.0}, "--learning_rate must be in"),
        ({"kitti_root": "/nonexistent/kitti"}, "is not a directory"),
    ],
)
def test_check_flags(overrides, message):
    with pytest.raises(ValueError, match=message):
        check_flags(_flags(**overrides))
    check_flags(_flags())


def test_load_data_from_kitti_layout(tmp_path):
    scenes.write_dataset(str(tmp_path), 5, seed=3, image_size=(64, 96))
    x, y, xv, yv = load_data(str(tmp_path), (64, 112), 3, 2, seed=0)  # padded wider
    assert x.shape == (3, 64, 112, 3) and xv.shape == (2, 64, 112, 3)
    _, labels, _ = kitti.load_split(str(tmp_path))
    assert y + yv == labels
    assert np.all(x[:, :, 96:] == 0)
    with pytest.raises(ValueError, match="has 5 images, fewer than"):
        load_data(str(tmp_path), (64, 96), 4, 2, seed=0)


def _run(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "recipes.detectnet.train", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip


def test_bad_flags_fail_before_training(tmp_path):
    result = _run("--image_height=100", f"--out_dir={tmp_path}/out")
    assert result.returncode != 0
    assert "--image_height=100 and --image_width=384 must be" in result.stderr
    assert not os.path.exists(tmp_path / "out")


def test_help_lists_the_flags():
    result = _run("--help")  # absl exits 1 after printing the help
    for flag in SETTINGS:
        assert f"--{flag}" in result.stdout


def test_tiny_run_writes_model_and_metrics(tmp_path):
    out = tmp_path / "out"
    lines = []
    settings = _flags(width=0.0625, num_train=6, num_val=3, epochs=2, batch_size=3,
                      out_dir=str(out))  # fmt: skip
    model, history = run(settings, print_fn=lines.append)
    assert lines[0] == "data: 6 training, 3 validation images of 96x64"
    assert lines[2].startswith("epoch 2/2: loss")
    with open(out / "metrics.json") as handle:
        metrics = json.load(handle)
    assert metrics["settings"]["width"] == 0.0625
    assert [row["epoch"] for row in metrics["epochs"]] == [1, 2]
    for row, kept in zip(metrics["epochs"], history, strict=True):
        assert row["loss"] == pytest.approx(kept["loss"]) and np.isfinite(row["loss"])
        assert 0 <= row["mAP"] <= 100
        assert set(row) >= {"precision", "recall", "ap_easy", "ap_moderate", "ap_hard"}
    assert (out / "model.keras").exists()
    assert model.get_layer("conv1_7x7_s2").filters == 4
