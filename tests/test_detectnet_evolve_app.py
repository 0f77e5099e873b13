"""`recipes.detectnet.evolve` end to end in a subprocess."""

import json
import os

from conftest import run_app


def test_detectnet_evolve_tiny_run(tmp_path):
    """`recipes.detectnet.evolve`'s main path: a tiny ancestor, 2 generations
    at int4, 5 exported flatbuffers and one lineage table (~3 min on 2 cores,
    most of it in the TFLite converter)."""
    result = run_app(
        "recipes.detectnet.evolve", "--num_train=20", "--num_val=6", "--epochs=1",
        "--generations=2", "--epochs_per_generation=1", "--fitness_epochs=1", "--precisions=int4",
        "--synthesis=filters", "--nolatency_table",
        "--image_height=64", "--image_width=96", "--width=0.125", "--runs=5", "--tfmot=off",
        f"--out_dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert os.path.exists(tmp_path / "ancestor" / "model.keras")
    with open(tmp_path / "lineage.json") as f:
        rows = json.load(f)["rows"]
    assert [(r["lineage"], r["generation"]) for r in rows] == [
        ("ancestor-float32", 0), ("ancestor-int8", 0), ("int4", 0), ("int4", 1), ("int4", 2)
    ]  # fmt: skip
    assert rows[4]["macs"] < rows[3]["macs"] < rows[2]["macs"]
    assert rows[4]["size_bytes"] < rows[2]["size_bytes"]  # compacted before export
    assert {"ap_easy", "ap_moderate", "ap_hard", "mAP_spread", "rollbacks"} <= set(rows[3])
    assert all(os.path.getsize(r["tflite"]) == r["size_bytes"] for r in rows)
    table = open(tmp_path / "lineage.md").read()
    assert table.count("| int4 |") == 3 and "| int4 | 2 |" in result.stdout
