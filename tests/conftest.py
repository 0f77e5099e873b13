"""Shared test helpers: quiet TensorFlow, seeded data, save/load round trips,
the recipe apps in a subprocess."""

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session()


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_app(module, *args, timeout=600, env=None):
    """`python -m module *args` from the repository root, output captured;
    `env`: changes to the environment (a None value removes the variable)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT, **(env or {})}
    env = {name: value for name, value in env.items() if value is not None}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def roundtrip_layer(layer):
    """`from_config(get_config())` of a layer, built and given its weights."""
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    return clone


def roundtrip_model(model, tmp_path, name="model.keras"):
    """Saves `model` as `.keras` and loads it back."""
    path = os.path.join(tmp_path, name)
    model.save(path)
    return keras.models.load_model(path)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn digits as (x_train, y_train, x_test, y_test), 8x8x1 in [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int32")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return x[:1400], y[:1400], x[1400:], y[1400:]
