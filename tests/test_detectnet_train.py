"""Tests for recipes.detectnet.train (flag checks, data, a tiny end-to-end run)."""

import json
import os
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from recipes.detectnet import kitti, scenes
from recipes.detectnet.train import SETTINGS, check_flags, load_data, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flags(**overrides):
    values = dict(image_height=64, image_width=96, width=0.25, num_train=4, num_val=2,
                  epochs=1, batch_size=2, learning_rate=1e-3, kitti_root=None,
                  batch_norm="all", seed=0, out_dir="unused", augment=False, fit="pad",
                  cache="none", strategy="none", mixed_precision="float32",
                  tensorboard=False)  # fmt: skip
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
        ({"fit": "crop"}, "--fit must be one of pad, resize, none"),
        ({"strategy": "multi_worker"}, "refused: .*keras-team/keras#20585"),
        ({"mixed_precision": "float8"}, "--mixed_precision must be one of"),
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
    result = _run("--helpfull")  # absl exits 1 after printing the help
    for flag in SETTINGS:
        assert f"--{flag}:" in result.stdout or f"--[no]{flag}:" in result.stdout


def test_streamed_augmented_run_and_fresh_process_load(tmp_path):
    scenes.write_dataset(str(tmp_path / "kitti"), 5, seed=2, image_size=(64, 80))
    out = tmp_path / "out"
    lines = []
    settings = _flags(width=0.0625, num_train=3, num_val=2, epochs=1, batch_size=2,
                      kitti_root=str(tmp_path / "kitti"), augment=True, out_dir=str(out),
                      tensorboard=True)  # fmt: skip
    model, history = run(settings, print_fn=lines.append)  # padded 80 -> 96 wide
    assert lines[0].endswith("of 96x64 (streamed; augmentation on)") and len(history) == 1
    events = [name for _, _, names in os.walk(out / "logs") for name in names]
    assert any(name.startswith("events.out.tfevents") for name in events)
    expected = model.predict(np.zeros((1, 64, 96, 3), np.float32), verbose=0)["coverage"]
    script = (
        "import sys, numpy as np, keras, recipes.detectnet\n"
        "m = keras.models.load_model(sys.argv[1])\n"
        "print(type(m.loss['coverage']).__name__)\n"
        "np.save(sys.argv[2], m.predict(np.zeros((1, 64, 96, 3), np.float32), verbose=0)"
        "['coverage'])\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", script, str(out / "model.keras"),
                             str(tmp_path / "out.npy")], env=env, cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "CoverageLoss"
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)


def test_killed_run_resumes_from_its_last_epoch(tmp_path):
    out = tmp_path / "out"
    args = ["--image_height=64", "--image_width=96", "--width=0.0625", "--num_train=6",
            "--num_val=2", "--epochs=4", "--batch_size=3", "--noaugment", f"--out_dir={out}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "recipes.detectnet.train", *args], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = out / "epochs.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if rows.exists() and len(rows.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(rows.read_text().splitlines())
    assert 2 <= done < 4 and (out / "backup").is_dir() and not (out / "model.keras").exists()
    lines = []
    settings = _flags(width=0.0625, num_train=6, num_val=2, epochs=4, batch_size=3,
                      out_dir=str(out))  # fmt: skip
    model, history = run(settings, print_fn=lines.append)
    assert lines[0] == ("data: 6 training, 2 validation images of 96x64 (generated in memory; "
                        "augmentation off)")
    assert lines[1] == f"resuming from {out / 'backup'}"
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert sum(line.startswith("epoch ") for line in lines) <= 4 - done + 1
    assert lines[-2].startswith("epoch 4/4: loss")
    assert not (out / "backup").exists() and (out / "model.keras").exists()
    with open(out / "metrics.json") as handle:
        metrics = json.load(handle)
    assert metrics["settings"]["width"] == 0.0625 and metrics["epochs"] == history
    for row in history:
        assert np.isfinite(row["loss"]) and 0 <= row["mAP"] <= 100
        assert set(row) >= {"precision", "recall", "ap_easy", "ap_moderate", "ap_hard"}
    assert model.get_layer("conv1_7x7_s2").filters == 4
