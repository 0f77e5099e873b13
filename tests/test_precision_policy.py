"""`recipes.apputil.fastest_policy`'s cache: reused on the host that measured
it, measured again where the CPU's bfloat16 features differ (hosts with and
without AMX report the same CPU name)."""

import json

import keras
import numpy as np

from recipes import apputil


def _build():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_cached_policy_reused_only_on_the_same_cpu_features(tmp_path):
    batch = (np.zeros((2, 4), "float32"), np.zeros((2, 2), "float32"))
    host = apputil._host_key()
    assert host["cpu_features"] == apputil.cpu_features()
    seconds = {"float32": 2.0, "mixed_bfloat16": 1.0}
    stale = {"policy": "mixed_bfloat16", "seconds_per_step": seconds}
    path = tmp_path / "precision_policy.json"
    path.write_text(json.dumps({**stale, "host": host}))
    assert apputil.fastest_policy(_build, batch, str(tmp_path), steps=1, print_fn=None) == (
        "mixed_bfloat16", stale["seconds_per_step"])  # fmt: skip
    other = dict(host, cpu_features=["amx_bf16"] if "amx_bf16" not in host["cpu_features"] else [])
    path.write_text(json.dumps({**stale, "host": other}))
    policy, seconds = apputil.fastest_policy(_build, batch, str(tmp_path), steps=1, print_fn=None)
    assert set(seconds) == {"float32", "mixed_bfloat16"} and seconds != stale["seconds_per_step"]
    assert policy == min(seconds, key=seconds.get)
    assert json.loads(path.read_text())["host"] == host
