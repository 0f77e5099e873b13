"""Tests of tflite_bench on host: model facts, measurement, report, CLI.

Tiny models are built on the fly (scikit-learn digits, 8x8) and converted
with `tf.lite.TFLiteConverter` to float32 and full-integer int8.
"""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tflite_bench import BenchError, Report, Row, cli, compare, host, inspect_model, timer
from tflite_bench.modelinfo import classify_op

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tflite_bench")


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture(scope="module")
def models(tmp_path_factory, digits):
    """float32 and int8 .tflite of one tiny trained classifier + its data."""
    import keras
    import tensorflow as tf

    x_train, y_train, x_test, y_test = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    model.fit(x_train, y_train, epochs=3, batch_size=64, verbose=0)
    keras_pred = model.predict(x_test, verbose=0).argmax(axis=1)

    root = tmp_path_factory.mktemp("tflite_bench")
    paths = {}
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    paths["float"] = root / "digits_float32.tflite"
    paths["float"].write_bytes(converter.convert())
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: (
        [x_train[i : i + 1]] for i in range(100))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    paths["int8"] = root / "digits_int8.tflite"
    paths["int8"].write_bytes(converter.convert())
    paths["data"] = root / "test.npz"
    np.savez(paths["data"], x=x_test, y=y_test)
    paths["corrupt"] = root / "corrupt.tflite"
    paths["corrupt"].write_bytes(paths["float"].read_bytes()[:600])
    paths["text"] = root / "text.tflite"
    paths["text"].write_text("not a model\n")
    return {
        **{k: str(v) for k, v in paths.items()},
        "x": x_test, "y": y_test, "keras_pred": keras_pred, "root": root,
    }


# --- model facts ------------------------------------------------------------

@pytest.mark.parametrize("types, expected", [
    (["INT8", "INT8", "INT32", "INT8"], "int8"),
    (["UINT8", "UINT8"], "int8"),
    (["INT16", "INT8", "INT64", "INT16"], "int8"),
    (["FLOAT32", "FLOAT32", "FLOAT32"], "float"),
    (["FLOAT16", "FLOAT32"], "float"),
    (["FLOAT32", "INT8"], "mixed"),  # QUANTIZE
    (["INT8", "FLOAT32"], "mixed"),  # DEQUANTIZE
    (["INT32", "INT32"], "other"),
    ([], "other"),
])
def test_classify_op(types, expected):
    assert classify_op(types) == expected


def test_inspect_model_counts_ops_by_precision(models):
    f32, i8 = inspect_model(models["float"]), inspect_model(models["int8"])
    assert f32.size_bytes == os.path.getsize(models["float"])
    assert i8.size_bytes == os.path.getsize(models["int8"])
    # Conv2D + FullyConnected compute in float in one, int8 in the other.
    for info in (f32, i8):
        assert info.op_types["CONV_2D"] == 1
        assert info.op_types["FULLY_CONNECTED"] == 1
        assert info.num_ops == sum(info.op_types.values())
    assert f32.ops["int8"] == 0 and f32.ops["float"] >= 2
    assert i8.ops["float"] == 0 and i8.ops["mixed"] == 0 and i8.ops["int8"] >= 2
    assert i8.size_bytes < f32.size_bytes


@pytest.mark.parametrize("key, message", [
    ("missing", "file not found"),
    ("text", "not a TFLite flatbuffer"),
    ("corrupt", "corrupt TFLite flatbuffer"),
])
def test_inspect_model_bad_files(models, key, message):
    path = models.get(key, str(models["root"] / "missing.tflite"))
    with pytest.raises(BenchError, match=message) as info:
        inspect_model(path)
    assert path in str(info.value) and "\n" not in str(info.value)


# --- pure maths ---------------------------------------------------------------

def test_latency_stats_golden():
    stats = host.latency_stats(np.arange(1, 11, dtype=float))
    assert stats["min"] == 1.0 and stats["median"] == 5.5 and stats["mean"] == 5.5
    assert stats["p90"] == pytest.approx(9.1) and stats["p95"] == pytest.approx(9.55)
    assert stats["std"] == pytest.approx(np.sqrt(8.25)) and stats["runs"] == 10
    with pytest.raises(ValueError, match="empty"):
        host.latency_stats([])


def test_quantize_and_dequantize_golden():
    q = host.quantize(np.array([-1.0, -0.26, 0.0, 0.24, 0.26, 9.0]), 0.5, 3, np.int8)
    np.testing.assert_array_equal(q, [1, 2, 3, 3, 4, 21])
    q = host.quantize(np.array([-100.0, 100.0]), 0.1, 0, np.int8)
    np.testing.assert_array_equal(q, [-128, 127])
    detail = {"quantization_parameters": {"scales": [0.5], "zero_points": [3]}}
    np.testing.assert_allclose(host.from_model_output(q[:0], detail), [])
    np.testing.assert_allclose(
        host.from_model_output(np.array([1, 3, 21], np.int8), detail), [-1, 0, 9])


def test_to_model_input_checks_shape_and_dtype(models):
    interp = host.make_interpreter(models["int8"])
    detail = interp.get_input_details()[0]
    x = models["x"][:4]
    q = host.to_model_input(x, detail)
    assert q.dtype == np.int8 and q.shape == x.shape
    scale, zero_point = detail["quantization_parameters"]["scales"][0], \
        detail["quantization_parameters"]["zero_points"][0]
    np.testing.assert_allclose((q.astype(float) - zero_point) * scale, x,
                               atol=scale / 2 + 1e-6)
    assert host.to_model_input(q, detail) is q  # already int8: unchanged
    with pytest.raises(BenchError, match=r"per-example shape \(8, 8\).*\(8, 8, 1\)"):
        host.to_model_input(x[..., 0], detail, "m", "eval.npz")
    with pytest.raises(BenchError, match="dtype uint8 .* takes int8"):
        host.to_model_input((x * 255).astype(np.uint8), detail)


def test_load_data_labels_and_errors(tmp_path):
    path = tmp_path / "onehot.npz"
    np.savez(path, x=np.zeros((3, 2)), y=np.eye(4)[[2, 0, 3]])
    x, y = host.load_data(path)
    np.testing.assert_array_equal(y, [2, 0, 3])
    np.savez(tmp_path / "short.npz", x=np.zeros((3, 2)), y=np.zeros(2))
    with pytest.raises(BenchError, match="3 examples but y has 2"):
        host.load_data(tmp_path / "short.npz")
    np.savez(tmp_path / "nokeys.npz", images=np.zeros(3))
    with pytest.raises(BenchError, match="needs arrays 'x' and 'y'"):
        host.load_data(tmp_path / "nokeys.npz")
    with pytest.raises(BenchError, match="file not found"):
        host.load_data(tmp_path / "none.npz")


# --- measurement ----------------------------------------------------------------

def test_run_signature_float_and_int8_predictions(models):
    x = models["x"][:40]
    f32 = host.run_signature(models["float"], x)
    (name,) = f32
    assert f32[name].shape == (40, 10) and f32[name].dtype == np.float32
    np.testing.assert_array_equal(f32[name].argmax(1), models["keras_pred"][:40])
    # Flatbuffer bytes, int8 input and output: quantized in, dequantized out.
    with open(models["int8"], "rb") as f:
        i8 = host.run_signature(f.read(), x)
    (i8_name,) = i8
    assert i8[i8_name].dtype == np.float32
    assert np.mean(i8[i8_name].argmax(1) == models["keras_pred"][:40]) >= 0.9
    with pytest.raises(BenchError, match="not_an_input.*takes"):
        host.run_signature(models["float"], {"not_an_input": x})


def test_compare_accuracy_agrees_with_keras_and_ratios(models):
    stream = io.StringIO()
    report = compare([models["float"], models["int8"]], threads=[1, 2], runs=20,
                     warmup=2, data=models["data"], stream=stream)
    assert report.ok and len(report.rows) == 4
    keras_acc = float(np.mean(models["keras_pred"] == models["y"]))
    f32_rows = [r for r in report.rows if r.model == "digits_float32.tflite"]
    i8_rows = [r for r in report.rows if r.model == "digits_int8.tflite"]
    # The float flatbuffer computes what Keras computes (ties aside).
    assert f32_rows[0].accuracy == pytest.approx(keras_acc, abs=1.5 / len(models["y"]))
    assert i8_rows[0].accuracy == pytest.approx(keras_acc, abs=0.03)
    assert keras_acc > 0.8
    for row in report.rows:
        lat = row.latency_ms
        assert lat["runs"] == 20 and 0 < lat["min"] <= lat["median"] <= lat["p90"]
        assert row.memory_mib is not None and 0 < row.memory_mib < 500
        base = report.baseline_for(row)
        assert base.threads == row.threads and base.model == "digits_float32.tflite"
        assert report.speedup(row) == pytest.approx(base.median_ms / row.median_ms)
    assert report.size_ratio(i8_rows[0]) == pytest.approx(
        os.path.getsize(models["float"]) / os.path.getsize(models["int8"]))
    # a float32 row is its own baseline; int8 rows take the float32 row of their thread count
    assert [report.baseline_for(r) is r for r in f32_rows] == [True] * len(f32_rows)
    assert [report.baseline_for(r) for r in i8_rows] == f32_rows
    table = report.table()
    assert "digits_int8.tflite" in table and "1.00x" in table
    progress = stream.getvalue()
    assert "accuracy done 397/397" in progress
    assert "latency threads=2: 2 models interleaved done 44/44" in progress
    assert "host: " in table and report.settings["latency"].endswith("round by round")


def test_interleaved_latency_alternates_models_and_isolates_failures(monkeypatch):
    order = []

    class Fake:
        def __init__(self, name):
            self.name = name

        def invoke(self):
            if self.name == "bad.tflite" and len([o for o in order if o == self.name]) >= 3:
                raise RuntimeError("delegate error")
            order.append(self.name)

    monkeypatch.setattr(host, "make_interpreter", lambda path, *a: Fake(path))
    monkeypatch.setattr(host, "fill_inputs", lambda interp, sample=None: None)
    seen = []
    results = host.measure_latency_interleaved(
        ["a.tflite", "b.tflite", "bad.tflite"], runs=6, warmup=1, rounds=3,
        progress=seen.append)
    assert results[0]["runs"] == results[1]["runs"] == 6
    assert isinstance(results[2], BenchError) and "bad.tflite: invoke failed" in str(results[2])
    timed = [o for o in order[3:] if o != "bad.tflite"]  # after one warm-up invoke each
    assert timed == ["a.tflite"] * 2 + ["b.tflite"] * 2 + ["a.tflite"] * 2 + ["b.tflite"] * 2 \
        + ["a.tflite"] * 2 + ["b.tflite"] * 2  # round by round, 2 invokes per round
    with pytest.raises(ValueError, match="rounds"):
        host.measure_latency_interleaved(["a.tflite"], rounds=0)


def test_time_interleaved_invokes_each_interpreter_in_turn_every_round():
    order = []

    class Fake:
        def __init__(self, name):
            self.name = name

        def invoke(self):
            order.append(self.name)

    times = timer.time_interleaved([Fake("a"), Fake("b")], rounds=2, budget_ms=0.0, warmup=1)
    assert len(times) == 2 and all(t >= 0 for t in times)
    # one warm-up each, then at least 3 invokes per interpreter per round, in turn
    assert order == ["a", "b"] + (["a"] * 3 + ["b"] * 3) * 2

    class Broken:
        def invoke(self):
            raise RuntimeError("delegate error")

    with pytest.raises(RuntimeError, match="delegate error"):  # nothing is swallowed
        timer.time_interleaved([Broken()], warmup=0)


def test_partial_results_when_models_fail(models):
    missing = str(models["root"] / "missing.tflite")
    report = compare([models["float"], missing, models["corrupt"], models["int8"]],
                     runs=5, warmup=1, memory=False, progress=False)
    assert [r.error is None for r in report.rows] == [True, False, False, True]
    assert not report.ok and len(report.errors) == 2
    table = report.table()
    assert "digits_int8.tflite" in table
    assert f"error: {missing}: file not found" in table
    assert "corrupt TFLite flatbuffer" in table


def test_data_as_arrays_equals_npz_and_max_samples(models):
    kw = dict(runs=3, memory=False, progress=False, max_samples=100)
    from_file = compare([models["int8"]], data=models["data"], **kw)
    one_hot = np.eye(10)[models["y"]]
    from_arrays = compare([models["int8"]], data=(models["x"], one_hot), **kw)
    assert from_file.settings["samples"] == from_arrays.settings["samples"] == 100
    assert from_file.rows[0].accuracy == from_arrays.rows[0].accuracy
    manual = np.mean(models["keras_pred"][:100] == models["y"][:100])
    assert from_arrays.rows[0].accuracy == pytest.approx(manual, abs=0.05)


def test_data_mismatch_is_a_row_error(models, tmp_path):
    bad = tmp_path / "bad_shape.npz"
    np.savez(bad, x=np.zeros((5, 8, 8), np.float32), y=np.zeros(5, np.int64))
    report = compare([models["float"]], runs=3, data=bad, memory=False,
                     progress=False)
    assert "per-example shape (8, 8)" in report.rows[0].error


def test_report_json_round_trip(models, tmp_path):
    report = compare([models["float"], models["int8"]], runs=5, warmup=1,
                     memory=False, progress=False, names=["f32", "i8"])
    path = tmp_path / "r.json"
    report.to_json(path)
    data = json.loads(path.read_text())
    assert data["baseline"] == "f32" and data["settings"]["runs"] == 5
    assert data["rows"][1]["speedup"] == pytest.approx(report.speedup(report.rows[1]))
    again = Report.from_json(path)
    assert again.table() == report.table()
    assert again.rows[1].ops == report.rows[1].ops


def test_interpreter_without_xnnpack_and_argument_errors(models):
    report = compare([models["int8"]], runs=5, use_xnnpack=False, memory=False,
                     progress=False)
    assert report.ok and report.settings["use_xnnpack"] is False
    with pytest.raises(ValueError, match="use_gpu needs"):
        compare([models["int8"]], use_gpu=True)
    with pytest.raises(ValueError, match="threads"):
        compare([models["int8"]], threads=[0])
    with pytest.raises(ValueError, match="non-empty list"):
        compare(models["int8"])


def test_litert_tool_backend(models):
    report = compare([models["float"], models["int8"]], runs=10, warmup=2,
                     backend="litert-tool", memory=False, progress=False)
    assert report.ok, report.errors
    for row in report.rows:
        assert row.backend == "litert-tool" and row.latency_ms["runs"] == 10
        assert row.latency_ms["p90"] is None and row.latency_ms["median"] is not None
        assert "init_ms" in row.extra


def test_adb_backend_with_recorded_output(models, tmp_path):
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    with open(os.path.join(DATA, "benchmark_model_android_cpu.txt")) as f:
        log = f.read()
    calls = []

    def runner(cmd, timeout=None):
        calls.append(cmd)
        out = "device\n" if cmd[3:] == ["get-state"] else ""
        if "--num_threads=4" in " ".join(cmd):
            out = log
        return subprocess.CompletedProcess(cmd, 0, out, "")

    report = compare([models["float"]], threads=[4], runs=50, warmup=5,
                     backend="adb", adb_serial="R58M", benchmark_binary=binary,
                     runner=runner, progress=False)
    row = report.rows[0]
    assert row.backend == "adb:R58M" and row.error is None
    assert row.latency_ms["median"] == pytest.approx(2.356)
    assert row.memory_mib == pytest.approx(11.082)
    d = "/data/local/tmp/tflite_bench"
    adb = ["adb", "-s", "R58M"]
    assert calls == [
        adb + ["get-state"],
        adb + ["shell", "mkdir", "-p", d],
        adb + ["push", str(binary), f"{d}/benchmark_model"],
        adb + ["shell", "chmod", "755", f"{d}/benchmark_model"],
        adb + ["push", models["float"], f"{d}/0_digits_float32.tflite"],
        adb + ["shell", f"{d}/benchmark_model",
               f"--graph={d}/0_digits_float32.tflite", "--num_threads=4",
               "--num_runs=50", "--warmup_runs=5", "--use_xnnpack=true",
               "--use_gpu=false"],
        adb + ["shell", "rm", "-rf", d],
    ]


def test_adb_backend_failures(models, tmp_path):
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")

    def absent(cmd, timeout=None):
        return subprocess.CompletedProcess(
            cmd, 1, "", "error: device 'XYZ' not found\n")

    with pytest.raises(BenchError, match="device 'XYZ' not available"):
        compare([models["float"]], backend="adb", adb_serial="XYZ",
                benchmark_binary=binary, runner=absent, progress=False)
    with open(os.path.join(DATA, "benchmark_model_missing_model.txt")) as f:
        failed_log = f.read()

    def failing(cmd, timeout=None):
        if cmd[3:] == ["get-state"]:
            return subprocess.CompletedProcess(cmd, 0, "device\n", "")
        if "--graph=" in " ".join(cmd):
            return subprocess.CompletedProcess(cmd, 1, failed_log, "")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    report = compare([models["float"]], backend="adb", adb_serial="S",
                     benchmark_binary=binary, runner=failing, progress=False)
    assert "Could not open" in report.rows[0].error
    assert "exit 1" in report.rows[0].error


# --- CLI ----------------------------------------------------------------------

def test_cli_writes_table_json_plot(models, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    status = cli.main([models["float"], models["int8"], "--threads", "1,2",
                       "--runs", "5", "--warmup", "1", "--data", models["data"],
                       "--max-samples", "50", "--json", str(out_json),
                       "--plot", str(out_png), "--no-memory", "--quiet"])
    assert status == 0
    table = capsys.readouterr().out
    assert table.count("digits_int8.tflite") == 2
    data = json.loads(out_json.read_text())
    assert len(data["rows"]) == 4 and data["settings"]["samples"] == 50
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bad_inputs_exit_nonzero(models, tmp_path, capsys):
    missing = str(tmp_path / "none.tflite")
    assert cli.main([models["float"], missing, "--runs", "3", "--no-memory",
                     "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "digits_float32.tflite" in out and f"error: {missing}: file not found" in out
    assert cli.main([models["float"], "--data", str(tmp_path / "no.npz"),
                     "--quiet"]) == 1
    assert "no.npz: file not found" in capsys.readouterr().err
    for argv in ([models["float"], "--threads", "0"],
                 [models["float"], "--adb", "S"],
                 [models["float"], "--use-gpu"],
                 [models["float"], "--adb", "S", "--litert-benchmark",
                  "--benchmark-binary", "b"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--adb needs --benchmark-binary" in err and "use_gpu needs" in err


def test_module_entry_point_imports_no_tensorflow(models):
    code = (
        "import sys, runpy; sys.argv = ['tflite_bench', sys.argv[1], '--runs', '3',"
        " '--no-memory', '--quiet'];\n"
        "try:\n    runpy.run_module('tflite_bench', run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
        "assert 'keras_evosynth' not in sys.modules\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, models["int8"]],
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "digits_int8.tflite" in proc.stdout


def test_row_median_falls_back_to_mean():
    row = Row("a", "a.tflite", "adb:S", 1, latency_ms={"median": None, "mean": 3.0})
    assert row.median_ms == 3.0
