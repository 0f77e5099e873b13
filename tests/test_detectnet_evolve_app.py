"""`recipes.detectnet.evolve` end to end in a subprocess."""

import json
import os

import pytest
from conftest import run_app


def test_detectnet_evolve_tiny_run(tmp_path):
    """`recipes.detectnet.evolve`'s main path: the training policy measured,
    a tiny ancestor and one family width (polished 2 epochs), 2 generations at int4 distilled
    from each parent, 6 exported
    flatbuffers and one lineage table with the comparison against the family
    (~3 min on 2 cores, most of it in the TFLite converter); then a rerun with
    another width is refused, naming the setting, before any training."""
    result = run_app(
        "recipes.detectnet.evolve", "--num_train=20", "--num_val=6", "--epochs=1",
        "--generations=2", "--epochs_per_generation=1", "--fitness_epochs=1", "--precisions=int4",
        "--synthesis=filters", "--nolatency_table",
        "--image_height=64", "--image_width=96", "--width=0.125", "--runs=5", "--tfmot=off",
        "--family=0.1", "--polish_epochs=2", "--distill_alpha=0.5", f"--out_dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    # the family width retrained on the offspring's schedule, its best epoch kept
    with open(tmp_path / "family" / "width_0.1-polished" / "metrics.json") as f:
        polish = json.load(f)
    assert [e["mAP"] for e in polish["epochs"]][polish["kept_epoch"] - 1] == max(
        e["mAP"] for e in polish["epochs"])
    assert polish["settings"]["base"]["width"] == 0.1 and polish["settings"]["polish_epochs"] == 2
    assert "family width 0.1, polished: DIGITS mAP" in result.stdout
    assert os.path.exists(tmp_path / "ancestor" / "model.keras")
    with open(tmp_path / "precision_policy.json") as f:
        policy = json.load(f)
    assert set(policy["seconds_per_step"]) == {"float32", "mixed_bfloat16"}
    assert policy["policy"] == min(policy["seconds_per_step"], key=policy["seconds_per_step"].get)
    for folder in ("ancestor", "family/width_0.1"):
        with open(tmp_path / folder / "settings.json") as f:
            assert json.load(f)["mixed_precision"] == policy["policy"]
    with open(tmp_path / "lineage.json") as f:
        saved = json.load(f)
    rows = saved["rows"]
    assert [(r["lineage"], r["generation"]) for r in rows] == [
        ("ancestor-float32", 0), ("ancestor-int8", 0), ("family", 0), ("int4", 0), ("int4", 1),
        ("int4", 2)
    ]  # fmt: skip
    assert rows[2]["width"] == 0.1 and rows[2]["synapses"] < rows[1]["synapses"]
    versus = saved["versus_family"]["widths"]
    assert [w["width"] for w in versus] == [0.1]
    fast = [r for r in rows[4:] if r["latency_ms"] <= rows[2]["latency_ms"]]
    if fast:  # the best offspring no slower than the family member
        best = max(r["metric"] for r in fast)
        assert versus[0]["difference"] == pytest.approx(best - rows[2]["metric"])
    else:
        assert versus[0]["difference"] is None and not versus[0]["won"]
    rows = [r for r in rows if r["lineage"] != "family"]
    assert rows[4]["macs"] < rows[3]["macs"] < rows[2]["macs"]
    assert rows[4]["size_bytes"] < rows[2]["size_bytes"]  # compacted before export
    assert {"ap_easy", "ap_moderate", "ap_hard", "mAP_spread", "rollbacks"} <= set(rows[3])
    assert all(os.path.getsize(r["tflite"]) == r["size_bytes"] for r in rows)
    table = open(tmp_path / "lineage.md").read()
    assert table.count("| int4 |") == 3 and "| int4 | 2 |" in result.stdout
    assert "versus the family trained from scratch" in table
    again = run_app(
        "recipes.detectnet.evolve", "--num_train=20", "--num_val=6", "--width=0.25",
        "--image_height=64", "--image_width=96", "--family=", f"--out_dir={tmp_path}",
    )  # fmt: skip
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path}/ancestor was made with other settings (width: 0.125 there, 0.25 "
        "now): pass another --out_dir, or delete it to start afresh.")
