import json
import math
import os

import keras
import numpy as np
import pytest

from keras_evosynth import Lineage, evolvable, summary
from recipes import lineage_table
from recipes.apputil import environment_for
from recipes.classification import build_cnn, compile_classifier


def test_markdown_table_formats_and_extra_columns():
    rows = [
        {"lineage": "int4", "generation": 2, "synapses": 12345, "metric": 0.5, "ap_easy": 71.25},
        {"lineage": "int8", "generation": 0, "synapses": 7},
    ]
    columns = [("lineage", "{}"), ("synapses", "{:,}"), ("metric", "{:.3f}")]
    text = lineage_table.markdown_table(rows, columns, extra=[("ap_easy", "{:.1f}")])
    assert text.splitlines() == [
        "| lineage | synapses | metric | ap_easy |",
        "|---|---|---|---|",
        "| int4 | 12,345 | 0.500 | 71.2 |",
        "| int8 | 7 | - | - |",
    ]


def test_headline_picks_the_fastest_row_within_reach_and_ignores_baselines():
    def row(lineage, generation, metric, synapses, vs_float, vs_int8, efficiency):
        return {"lineage": lineage, "generation": generation, "metric": metric,
                "synapses": synapses, "speedup_vs_float32": vs_float,
                "speedup_vs_int8": vs_int8, "synaptic_efficiency": efficiency}  # fmt: skip

    rows = [row("ancestor-float32", 0, 70.0, 100, 1.0, 0.4, 1.0),
            row("ancestor-int8", 0, 69.9, 100, 2.5, 1.0, 1.0),
            row("tfmot-pruned+PTQ", 0, 70.0, 10, 9.0, 3.6, 10.0),  # a baseline: left out
            row("int8", 0, 70.0, 99, 2.9, 1.2, 1.0),  # generation 0 is no offspring
            row("int8", 1, 68.9, 50, 3.0, 1.2, 2.0),  # 1.1 points below: left out
            row("int4", 2, 69.5, 30, 2.8, 1.1, 3.3),
            row("int2", 1, 69.0, 20, 2.8, 1.1, 5.0)]  # same speed, fewer synapses: wins
    result = lineage_table.headline(rows, within=1.0)
    assert (result["row"]["lineage"], result["row"]["generation"]) == ("int2", 1)
    assert result["checks"] == {"synaptic_efficiency": False, "speedup_vs_float32": False,
                                "speedup_vs_int8": False}  # fmt: skip
    assert result["reference_metric"] == 70.0 and not result["met"]
    met = lineage_table.headline(rows, within=1.0, targets={"speedup_vs_float32": 2.8})
    assert met["met"] and met["summary"].endswith("speedup_vs_float32 2.80x (>= 2.8x: met)")
    none = lineage_table.headline(rows[:5], within=0.5)
    assert none["row"] is None and not none["met"]
    assert none["summary"] == "no offspring within 0.5 of the float32 ancestor (70.0)"


def test_environment_for_synthesis_modes():
    filters = environment_for("filters", 0.6)
    assert (filters.solve, filters.resource, filters.fixed_factor) == ("cluster", "macs", math.e)
    synapses = environment_for("synapses", 0.6)
    assert (synapses.solve, synapses.resource, synapses.fixed_factor) == ("both", "synapses", 1.0)
    with pytest.raises(ValueError, match="synthesis"):
        environment_for("weights", 0.6)


def test_build_cnn_builds_the_same_architecture_with_any_keras_module():
    model = build_cnn((28, 28, 1), 10, width=8, keras=keras)
    assert [type(layer).__name__ for layer in model.layers].count("Conv2D") == 3
    assert summary(model, print_fn=None).total_synapses == 9 * 8 + 9 * 8 * 16 + 9 * 16 * 32 + (
        32 * 32 + 32 * 10
    )


def test_build_table_with_rewrites_adds_the_plain_int8_ancestor(tmp_path):
    from keras_evosynth.export import list_operators

    x = keras.Input((16, 16, 3))
    y = keras.layers.Conv2D(8, 7, 2, "same", activation="relu", name="stem")(x)
    ancestor = keras.Model(x, keras.layers.GlobalAveragePooling2D()(y))
    data = np.random.default_rng(0).random((8, 16, 16, 3), "float32")
    rows = lineage_table.build_table(ancestor, {}, data, str(tmp_path), lambda _: {"metric": 1.0},
                                     runs=3, log=lambda _: None, space_to_depth={"stem": 2})
    assert [r["lineage"] for r in rows] == ["ancestor-float32", "ancestor-int8",
                                            "ancestor-int8-plain"]
    ops = [{o.name for o in list_operators(open(r["tflite"], "rb").read())} for r in rows[1:]]
    assert {"SPACE_TO_DEPTH", "DEPTH_TO_SPACE"} <= ops[0] and "SPACE_TO_DEPTH" not in ops[1]
    # speedups stay relative to the rewritten int8 ancestor
    plain = rows[2]
    assert plain["speedup_vs_int8"] == pytest.approx(rows[1]["latency_ms"] / plain["latency_ms"])


def test_build_table_exports_measures_and_writes_the_table(tmp_path):
    ancestor = compile_classifier(build_cnn((8, 8, 1), 10, width=4))
    evo = evolvable(ancestor, precision="int4")
    lineage = Lineage(str(tmp_path / "lineage"))
    lineage.open({"seed": 0})
    records = []
    for generation, dead in ((0, 0), (1, 2)):
        conv = evo.layers[1]
        mask = np.ones(4, bool)
        mask[:dead] = False
        conv.set_masks(cluster_mask=mask)
        name = lineage.save_model(evo, generation)
        records.append({"generation": generation, "checkpoint": name, "accepted": True})
    records.append({"generation": 2, "checkpoint": None, "accepted": False})
    for record in records:
        lineage.append(record)
    assert [g for g, _, _ in lineage_table.accepted_generations(lineage.directory)] == [0, 1]

    calls = []

    def evaluate(path):
        calls.append(os.path.basename(path))
        return {"metric": 0.5, "ap_easy": 1.0}

    x = np.random.default_rng(0).random((16, 8, 8, 1), "float32")
    out = str(tmp_path / "out")
    rows = lineage_table.build_table(
        ancestor,
        {"int4": lineage.directory},
        x,
        out,
        evaluate,
        runs=3,
        log=lambda _: None,
        extra_columns=[("ap_easy", "{:.1f}")],
    )
    assert [(r["lineage"], r["generation"]) for r in rows] == [
        ("ancestor-float32", 0),
        ("ancestor-int8", 0),
        ("int4", 0),
        ("int4", 1),
    ]
    assert calls == [os.path.basename(r["tflite"]) for r in rows]
    for row in rows:  # every row against the two ancestors' measured latency
        assert row["speedup_vs_float32"] == pytest.approx(
            rows[0]["latency_ms"] / row["latency_ms"])
        assert row["speedup_vs_int8"] == pytest.approx(rows[1]["latency_ms"] / row["latency_ms"])
    assert len({r["latency_ms"] for r in rows}) > 1  # distinct measurements
    # Two of four first-layer filters removed: fewer synapses, smaller file.
    assert rows[3]["filters"] == rows[2]["filters"] - 2
    assert rows[3]["synapses"] < rows[2]["synapses"]
    assert rows[3]["size_bytes"] < rows[2]["size_bytes"]
    assert rows[0]["synaptic_efficiency"] == 1.0
    # generation 1 accepted at once, generation 2 rolled back: 1 of 2 offspring
    assert [r.get("rollbacks") for r in rows] == [None, None, None, 0]
    with open(os.path.join(out, "lineage.json")) as f:
        saved = json.load(f)
    assert [r["generation"] for r in saved["rows"]] == [0, 0, 0, 1]
    assert saved["rollback_rate"] == {"int4": 0.5}
    table = open(os.path.join(out, "lineage.md")).read()
    assert "ap_easy" in table.splitlines()[0] and len(table.splitlines()) == 8
    assert table.splitlines()[-1] == (
        "rollback rate (rolled-back / trained offspring): int4 50%")
    assert os.path.exists(os.path.join(out, "lineage.png"))
    # the flatbuffers as deployed, with the manifest that lets anyone re-time them
    manifest = lineage_table.deploy_bundle(rows, str(tmp_path / "deployed"), (8, 8),
                                           log=lambda _: None)  # fmt: skip
    with open(tmp_path / "deployed" / "manifest.json") as f:
        assert json.load(f) == manifest
    assert manifest["input_size"] == [8, 8]
    assert [(m["role"], m["lineage"], m["generation"]) for m in manifest["models"]] == [
        ("ancestor_float32", "ancestor-float32", 0), ("ancestor_int8", "ancestor-int8", 0),
        ("offspring", "int4", 0), ("offspring", "int4", 1)]  # fmt: skip
    assert [m["synapses"] for m in manifest["models"]] == [r["synapses"] for r in rows]
    assert manifest["total_bytes"] == sum(r["size_bytes"] for r in rows)


def test_verbose_flag_lets_the_converter_log_through(monkeypatch):
    from absl import flags, logging

    from keras_evosynth._io import quiet_native_output
    from recipes.apputil import define_verbose, quiet_tensorflow

    values = flags.FlagValues()
    define_verbose(values)
    values(["app", "--verbose"])
    monkeypatch.delenv("KERAS_EVOSYNTH_VERBOSE", raising=False)
    level = logging.get_verbosity()
    try:
        quiet_tensorflow(values.verbose)
        assert os.environ["KERAS_EVOSYNTH_VERBOSE"] == "1"
        assert logging.get_verbosity() == logging.INFO
        read, write = os.pipe()
        saved = os.dup(2)
        os.dup2(write, 2)
        try:
            with quiet_native_output():
                os.write(2, b"converter line\n")
        finally:
            os.dup2(saved, 2)
            os.close(write)
        assert os.read(read, 100) == b"converter line\n"
        monkeypatch.delenv("KERAS_EVOSYNTH_VERBOSE")
        quiet_tensorflow(False)
        assert logging.get_verbosity() == logging.WARNING
    finally:
        logging.set_verbosity(level)


def test_family_comparison_counts_wins_and_losses_beyond_the_spread():
    def row(lineage, metric, ms, generation=1, width=None, spread=0.5):
        return {"lineage": lineage, "generation": generation, "metric": metric,
                "latency_ms": ms, "mAP_spread": spread, "width": width, "synapses": 10,
                "synaptic_efficiency": 10.0, "speedup_vs_float32": 9.0,
                "speedup_vs_int8": 3.0}  # fmt: skip

    rows = [row("ancestor-float32", 80.0, 9.0, 0), row("ancestor-int8", 80.0, 3.0, 0),
            row("family", 79.0, 2.0, 0, 0.5), row("family", 75.0, 1.5, 0, 0.35),
            row("family", 70.0, 1.0, 0, 0.25), row("family", 60.0, 0.5, 0, 0.15),
            row("int8", 79.5, 1.9), row("int8", 76.0, 1.4), row("int4", 68.0, 0.9)]
    result = lineage_table.family_comparison(rows)
    assert [(w["width"], w["difference"], w["won"], w["beyond_spread"])
            for w in result["widths"]] == [
        (0.5, 0.5, True, False), (0.35, 1.0, True, False), (0.25, -2.0, False, True),
        (0.15, None, False, True)]  # fmt: skip
    assert result["widths"][0]["offspring"]["generation"] == 1
    assert (result["wins"], result["lost_beyond_spread"], result["met"]) == (2, 2, False)
    assert result["summary"].endswith("won 2 of 4, lost 2 beyond the spread: missed")
    # a loss within the larger spread of the two rows is noise
    rows[-1] = row("int4", 69.0, 0.9, spread=1.5)
    rows.append(row("int4", 61.0, 0.4))
    result = lineage_table.family_comparison(rows)
    assert [w["difference"] for w in result["widths"]] == [0.5, 1.0, -1.0, 1.0]
    assert (result["wins"], result["lost_beyond_spread"], result["met"]) == (3, 0, True)
    # the family is never the headline's offspring
    assert lineage_table.headline(rows, within=1.0)["row"]["lineage"] == "int8"
