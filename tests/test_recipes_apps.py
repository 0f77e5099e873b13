"""The recipe apps end to end (subprocesses): bad flags fail before any work;
tiny runs produce the lineage table and resume."""

import glob
import json
import os
import re

import pytest
from conftest import run_app


@pytest.mark.parametrize(
    "module, args, message",
    [
        ("recipes.detectnet.evolve", ["--keep=1.5"], "--keep must be in (0, 1)"),
        ("recipes.classifier", ["--precisions=int1"], "--precisions"),
        ("recipes.classifier", ["--generations=0"], "generations"),
        ("recipes.classifier", ["--family=32"], "--family: whole widths below --width"),
    ],
)
def test_bad_flags_fail_before_any_training(tmp_path, module, args, message):
    result = run_app(module, f"--out_dir={tmp_path}/out", *args, timeout=120)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    # neither the detectnet app's out/ancestor/ nor the classifier's out/ancestor.keras
    assert not glob.glob(str(tmp_path / "out" / "**" / "*.keras"), recursive=True)
    assert not os.path.exists(tmp_path / "out" / "ancestor")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--precisions=int9"], "int9"),
        (["--image_height=100"], "multiples of 16"),
        (["--kitti_root=/nonexistent"], "is not a directory"),
        (["--ray_address=auto"], "pass --population > 1"),
        (["--strategy=multi_worker"], "keras-team/keras#20585"),
        (["--synthesis=latency", "--nolatency_table"], "--synthesis=latency needs"),
        (["--remove_branches"], "--remove_branches needs --synthesis=latency"),
    ],
)
def test_detectnet_evolve_checks_every_flag_before_work(args, message):
    """The checks `main` runs first (the subprocess case above shows that a
    failing one stops the app before any file is written)."""
    from absl import flags

    from recipes.detectnet import evolve, train

    values = flags.FlagValues()
    evolve.define_flags(values)
    values(["evolve", *args])
    with pytest.raises(ValueError, match=re.escape(message)):
        train.check_flags(values)
        evolve.check_evolution_flags(values)


def test_quickstart_tiny_run(tmp_path):
    """The README's demo end to end (one generation, ~20 s)."""
    out = tmp_path / "qs"
    result = run_app("recipes.quickstart", "--generations=1", f"--out_dir={out}", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.load(open(out / "lineage.json"))["rows"]
    assert [(r["lineage"], r["generation"]) for r in rows] == [
        ("ancestor-float32", 0), ("ancestor-int8", 0), ("int4", 0), ("int4", 1)]
    assert rows[3]["synapses"] < rows[2]["synapses"] and rows[3]["filters"] < rows[2]["filters"]
    assert rows[3]["metric"] > 0.8  # digits accuracy of the int8 flatbuffer, after evolution
    assert all(os.path.getsize(r["tflite"]) == r["size_bytes"] for r in rows)
    assert "| int4 | 1 |" in result.stdout
    # a rerun resumes the lineage: damage a record before its last (a torn
    # last line is repaired instead) and it must say so in one line
    log = out / "lineage" / "lineage.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text('{"generation": 0, "acc\n' + "".join(lines[1:]))
    again = run_app("recipes.quickstart", "--generations=1", f"--out_dir={out}", timeout=300)
    assert again.returncode == 1
    errors = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "lineage.jsonl" in errors[0], again.stderr[-2000:]
    assert "Traceback" not in again.stderr
    assert "ancestor accuracy" not in again.stdout  # reported before any training
    # clean output: no converter or absl log lines on either stream
    assert "fully_quantize" not in result.stdout + result.stderr


def test_classifier_app_tiny_run_and_resume(tmp_path):
    """The classifier app on 256 digits (~30 s) with a family width and
    parent distillation, then its rerun, which loads the ancestor and the
    family and finds the lineage complete."""
    args = ["--dataset=digits", "--generations=1", "--ancestor_epochs=1",
            "--epochs_per_generation=1", "--batch_size=32", "--precisions=int8",
            "--limit_train=256", "--limit_test=128", "--width=4", "--family=2",
            "--distill_alpha=0.5", "--polish_epochs=1", "--runs=5", "--tfmot=off",
            f"--out_dir={tmp_path}"]  # fmt: skip
    first = run_app("recipes.classifier", *args)
    assert first.returncode == 0, first.stderr[-2000:]
    assert os.path.exists(tmp_path / "ancestor.keras")
    with open(tmp_path / "family_w2.json") as f:  # the lineage's budget: 1 + 1 + 1 x 1 epochs
        assert {k: v for k, v in json.load(f).items() if k in ("epochs", "kept_epoch")} == {
            "epochs": 3, "kept_epoch": "best"}
    # the ancestor and the family width keep the weights of their best epoch
    assert first.stdout.count("Restoring model weights from the end of the best epoch") == 4
    with open(tmp_path / "lineage.json") as f:
        saved = json.load(f)
    rows = saved["rows"]
    assert [(r["lineage"], r["generation"], r.get("width")) for r in rows] == [
        ("ancestor-float32", 0, None), ("ancestor-int8", 0, None), ("family", 0, 2),
        ("int8", 0, None), ("int8", 1, None), ("int8-polished", 1, None)]  # fmt: skip
    assert rows[4]["synapses"] < rows[3]["synapses"] and rows[2]["synapses"] < rows[0]["synapses"]
    # polishing retrains the offspring's surviving synapses only (a few may quantize to 0)
    assert (rows[5]["filters"], rows[5]["bits"]) == (rows[4]["filters"], rows[4]["bits"])
    assert rows[4]["synapses"] - 8 <= rows[5]["synapses"] <= rows[4]["synapses"]
    assert all(0.0 <= r["metric"] <= 1.0 and r["latency_ms"] > 0 for r in rows)
    assert all(r["metric_spread"] == pytest.approx(
        (r["metric"] * (1 - r["metric"]) / 128) ** 0.5) for r in rows)  # fmt: skip
    assert all(os.path.getsize(r["tflite"]) == r["size_bytes"] for r in rows)
    (versus,) = saved["versus_family"]["widths"]
    assert versus["width"] == 2 and versus["family_metric"] == rows[2]["metric"]
    second = run_app("recipes.classifier", *args)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "ancestor: loading" in second.stdout
    assert "family width 2: loading" in second.stdout
    assert "int8 generation 1, polished: loading" in second.stdout
    assert "family width 2, polished: loading" in second.stdout
    assert "lineage is complete" in second.stdout + second.stderr
    with open(tmp_path / "lineage.json") as f:
        again = json.load(f)["rows"]
    # the rerun trained and cut nothing (latency is timed again)
    keys = ("lineage", "generation", "synapses", "metric", "size_bytes")
    assert [[r[k] for k in keys] for r in again] == [[r[k] for k in keys] for r in rows]
    # the cached ancestor carries its settings: another width is refused in one line
    other = run_app("recipes.classifier", *[a for a in args if not a.startswith("--width")],
                    "--width=8")  # fmt: skip
    assert other.returncode == 1
    assert other.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path}/ancestor.keras was made with other settings (width: 4 there, 8 "
        "now): pass another --out_dir, or delete it to start afresh.")
