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
from conftest import ROOT, run_app

from recipes.detectnet import kitti, scenes
from recipes.detectnet.train import SETTINGS, check_flags, run, sources


def _flags(**overrides):
    values = dict(image_height=64, image_width=96, width=0.25, num_train=4, num_val=2,
                  epochs=1, batch_size=2, learning_rate=1e-3, kitti_root=None,
                  batch_norm="all", seed=0, out_dir="unused", augment=False, fit="pad",
                  cache="none", strategy="none", mixed_precision="float32",
                  tensorboard=False, plateau=0)  # fmt: skip
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


def test_plateau_cuts_the_rate_stops_and_keeps_the_best_epoch():
    """Scripted validation mAPs 10, 30, 30.5, 30.2 with --plateau=1: epoch 3
    gains less than PLATEAU_DELTA (the rate drops 0.3x), epoch 4 is the second
    epoch without a gain (training stops), and the weights are epoch 2's."""
    import keras

    from recipes.detectnet.train import convergence, plateau_callbacks

    maps, seen, rates = [10.0, 30.0, 30.5, 30.2, 40.0, 50.0], [], []

    class Scripted(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            rates.append(float(self.model.optimizer.learning_rate))
            seen.append([w.copy() for w in self.model.get_weights()])
            logs["detection_mAP"] = maps[epoch]

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(1e-3), loss="mse")
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    callbacks = [Scripted(), *plateau_callbacks(1)]
    history = model.fit(x, x[:, :2], epochs=len(maps), callbacks=callbacks, verbose=0)
    assert len(history.epoch) == 4  # stopped before 40 and 50
    np.testing.assert_allclose(rates, [1e-3, 1e-3, 1e-3, 3e-4], rtol=1e-6)
    for kept, final in zip(seen[1], model.get_weights(), strict=True):
        np.testing.assert_array_equal(kept, final)
    stopping = callbacks[-1]
    rows = [{"epoch": e + 1, "mAP": m} for e, m in enumerate(maps[:4])]
    assert convergence(rows, stopping.best_epoch + 1, stopping.stopped_epoch > 0, 1) == {
        "plateau": 1, "kept_epoch": 2, "kept_mAP": 30.0, "epochs_run": 4, "stopped_early": True,
        "summary": "plateau: stopped after epoch 4, no 1-point gain in 2 epochs; keeping epoch 2 "
                   "(mAP 30.0)"}  # fmt: skip
    with pytest.raises(ValueError, match="--plateau must be >= 0"):
        check_flags(_flags(plateau=-1))


def test_kitti_sources_split_in_order_and_count(tmp_path):
    scenes.write_dataset(str(tmp_path), 5, seed=3, image_size=(64, 96))
    train_source, val_source = sources(_flags(kitti_root=str(tmp_path), image_width=112,
                                              num_train=3, num_val=2))  # padded wider
    _, labels, _ = kitti.load_split(str(tmp_path))
    assert [list(e.objects) for e in train_source + val_source] == labels
    with pytest.raises(ValueError, match="has 5 images, fewer than"):
        sources(_flags(kitti_root=str(tmp_path), num_train=4, num_val=2))


def test_bad_flags_fail_before_training(tmp_path):
    result = run_app("recipes.detectnet.train", "--image_height=100", f"--out_dir={tmp_path}/out",
                     timeout=300)
    assert result.returncode != 0
    assert "--image_height=100 and --image_width=384 must be" in result.stderr
    assert not os.path.exists(tmp_path / "out")


def test_every_setting_is_a_flag():
    from absl import flags

    from recipes.detectnet.train import define_flags

    values = flags.FlagValues()
    define_flags(values)
    assert set(SETTINGS) <= set(values)


def test_streamed_run_killed_resumes_and_loads_in_a_fresh_process(tmp_path):
    """Streamed KITTI files (padded 80 -> 96 wide), DIGITS augmentation and
    TensorBoard; SIGKILLed after its first epoch, rerun: it continues from
    the last finished epoch; the saved model loads in a fresh process after
    `import recipes.detectnet` alone."""
    scenes.write_dataset(str(tmp_path / "kitti"), 8, seed=2, image_size=(64, 80))
    out = tmp_path / "out"
    args = ["--image_height=64", "--image_width=96", "--width=0.0625", "--num_train=6",
            "--num_val=2", "--epochs=3", "--batch_size=3", f"--kitti_root={tmp_path / 'kitti'}",
            "--tensorboard", f"--out_dir={out}"]  # fmt: skip
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "recipes.detectnet.train", *args], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = out / "epochs.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if rows.exists() and rows.read_text().strip():  # its backup is on disk
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(rows.read_text().splitlines())
    assert 1 <= done < 3 and (out / "backup").is_dir() and not (out / "model.keras").exists()
    lines = []
    settings = _flags(width=0.0625, num_train=6, num_val=2, epochs=3, batch_size=3,
                      kitti_root=str(tmp_path / "kitti"), augment=True, tensorboard=True,
                      out_dir=str(out))  # fmt: skip
    model, history = run(settings, print_fn=lines.append)
    assert lines[0] == "data: 6 training, 2 validation images of 96x64 (streamed; augmentation on)"
    assert lines[1] == f"resuming from {out / 'backup'}"
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert sum(line.startswith("epoch ") for line in lines) == 3 - done  # none redone
    assert lines[-3].startswith("epoch 3/3: loss")
    assert lines[-2].startswith("DIGITS mAP on 2 training images (unaugmented): ")
    assert not (out / "backup").exists() and (out / "model.keras").exists()
    with open(out / "metrics.json") as handle:
        metrics = json.load(handle)
    assert metrics["settings"]["width"] == 0.0625 and metrics["epochs"] == history
    assert 0 <= metrics["train_scores"]["mAP"] <= 100 and "convergence" not in metrics
    for row in history:
        assert np.isfinite(row["loss"]) and 0 <= row["mAP"] <= 100
        assert set(row) >= {"precision", "recall", "ap_easy", "ap_moderate", "ap_hard"}
    assert model.get_layer("conv1_7x7_s2").filters == 4
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
    result = subprocess.run([sys.executable, "-c", script, str(out / "model.keras"),
                             str(tmp_path / "out.npy")], env=env, cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "CoverageLoss"
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)


def test_backup_torn_in_its_first_write_starts_over(tmp_path):
    from recipes.detectnet.train import _drop_torn_backup

    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n half a file")
    lines = []
    _drop_torn_backup(str(backup), lines.append)
    assert not backup.exists() and "torn by a kill" in lines[0]


def test_packed_cache_loads_like_the_trained_one(tmp_path):
    """`recipes.detectnet.cache.pack`: a trained DetectNet is written without
    its Adam state (smaller, uncompiled), with its records; it loads with the
    same layers and predicts exactly the same; the settings check still
    refuses other settings; a training in progress is skipped and named."""
    import keras

    from recipes.detectnet.cache import pack
    from recipes.detectnet.train import check_cache

    cache, packed = tmp_path / "cache", tmp_path / "packed"
    settings = _flags(width=0.0625, out_dir=str(cache / "ancestor"))
    model, _ = run(settings, print_fn=lambda line: None)
    image = np.random.default_rng(0).uniform(0, 255, (1, 64, 96, 3)).astype(np.float32)
    expected = model.predict(image, verbose=0)
    (cache / "family" / "width_0.1" / "backup").mkdir(parents=True)
    lines = []
    assert pack(str(cache), str(packed), lines.append) == ["ancestor"]
    in_progress = cache / "family" / "width_0.1"
    assert lines[0] == f"skipped {in_progress}: its training is still in progress"
    assert lines[1].startswith("ancestor: ") and len(lines) == 2
    original, copy = cache / "ancestor" / "model.keras", packed / "ancestor" / "model.keras"
    assert os.path.getsize(copy) < os.path.getsize(original)
    for name in ("settings.json", "metrics.json"):
        assert (packed / "ancestor" / name).read_text() == (cache / "ancestor" / name).read_text()
    loaded = keras.models.load_model(copy)
    assert getattr(loaded, "optimizer", None) is None
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    got = loaded.predict(image, verbose=0)
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
    check_cache(str(packed / "ancestor"), settings)
    with pytest.raises(ValueError, match="width: 0.0625 there, 0.25 now"):
        check_cache(str(packed / "ancestor"), _flags(width=0.25))
    with pytest.raises(ValueError, match="holds no finished DetectNet"):
        pack(str(tmp_path / "empty"), str(packed))
