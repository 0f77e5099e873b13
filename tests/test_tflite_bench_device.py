"""Tests of the tool and device backends' parsers and command lines.

No TensorFlow, no adb, no device: outputs come from tests/data/tflite_bench
and commands go to injected runners.
"""

import os
import subprocess
import sys

import pytest

from tflite_bench import BenchError, device, litert_tool
from tflite_bench.commands import error_line, run_command
from tflite_bench.device import (
    AdbDevice,
    benchmark_command,
    parse_benchmark_model_output,
    remote_names,
)

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tflite_bench")


def _read(name):
    with open(os.path.join(DATA, name)) as f:
        return f.read()


def test_parse_recent_benchmark_model_log():
    latency, memory, extra = parse_benchmark_model_output(
        _read("benchmark_model_android_cpu.txt"))
    # The second count= line (timed runs), microseconds -> ms.
    assert latency == {
        "min": 2.214, "median": 2.356, "p90": None, "p95": 2.78,
        "mean": 2.3986, "std": 0.201, "runs": 412,
    }
    assert memory == 11.082  # periodic peak wins over the overall delta
    assert extra == {
        "init_ms": 21.873, "first_inference_ms": 4.211, "warmup_avg_ms": 2.51733,
        "model_size_mb": 0.418332, "memory_init_mb": 3.62109,
        "memory_overall_mb": 5.44531, "memory_peak_mb": 11.082,
    }


def test_parse_old_benchmark_model_log_scientific_notation():
    latency, memory, extra = parse_benchmark_model_output(
        _read("benchmark_model_old_gpu.txt"))
    assert latency["runs"] == 80 and latency["median"] is None
    assert latency["mean"] == pytest.approx(12.5823)
    assert latency["min"] == pytest.approx(11.893) and latency["p95"] is None
    assert memory == pytest.approx(143.016) and "memory_peak_mb" not in extra
    assert extra["init_ms"] == pytest.approx(1893.461)


def test_parse_failed_benchmark_model_log():
    with pytest.raises(BenchError, match="Could not open '/data/local/tmp/"):
        parse_benchmark_model_output(_read("benchmark_model_missing_model.txt"))
    with pytest.raises(BenchError, match="no output"):
        parse_benchmark_model_output("")


def test_parse_recorded_litert_tool_output():
    latency, extra = litert_tool.parse_output(
        _read("benchmark_litert_model_stdout.txt"))
    assert latency == {
        "p90": None, "mean": 0.28, "runs": 100, "min": 0.15, "max": 1.5,
        "median": 0.15, "std": 0.35, "p5": 0.15, "p95": 1.42,
    }
    assert extra == {"init_ms": 2.18, "first_inference_ms": 0.24,
                     "warmup_avg_ms": 0.16, "fully_accelerated": False}
    with pytest.raises(BenchError, match="no 'Inference"):
        litert_tool.parse_output("Model initialization:  1.0 ms\n")


def test_litert_tool_command_and_failures(monkeypatch):
    seen = []

    def runner(cmd, timeout=None):
        seen.append(cmd)
        return subprocess.CompletedProcess(
            cmd, 1, "", "Traceback...\nRuntimeError: Failed to load model from file\n"
            "\u2514 Failed to build flatbuffer model\nINFO: bye\n")

    with pytest.raises(BenchError, match="exit 1.*Failed to build flatbuffer"):
        litert_tool.run("m.tflite", threads=3, runs=7, warmup=2, use_gpu=True,
                        runner=runner)
    assert seen[0] == [sys.executable, "-m", litert_tool.TOOL_MODULE,
                       "--model=m.tflite", "--num_threads=3", "--num_runs=7",
                       "--warmup_runs=2", "--use_gpu"]
    monkeypatch.setattr(litert_tool, "tool_available", lambda: False)
    with pytest.raises(BenchError, match="is not in the installed ai-edge-litert"):
        litert_tool.run("m.tflite")


def test_litert_tool_is_in_installed_ai_edge_litert():
    # ai-edge-litert >= 2.3 (setup.cfg) ships it; the wrapper relies on it.
    assert litert_tool.tool_available()


def test_benchmark_command_and_remote_names():
    assert benchmark_command("/d/bm", "/d/m.tflite", threads=2, runs=30, warmup=3,
                             use_xnnpack=False, use_gpu=True) == [
        "/d/bm", "--graph=/d/m.tflite", "--num_threads=2", "--num_runs=30",
        "--warmup_runs=3", "--use_xnnpack=false", "--use_gpu=true"]
    assert remote_names(["a/m.tflite", "b/m.tflite", "c.tflite"]) == [
        "0_m.tflite", "1_m.tflite", "2_c.tflite"]


def test_adb_missing_gives_one_line_error():
    device = AdbDevice("S", adb="/nonexistent/adb-for-test", runner=run_command)
    with pytest.raises(BenchError, match="adb not found") as info:
        device.check()
    assert "\n" not in str(info.value)


def test_adb_device_offline_and_push_failure(tmp_path):
    def offline(cmd, timeout=None):
        return subprocess.CompletedProcess(cmd, 0, "offline\n", "")

    with pytest.raises(BenchError, match="device 'S' not available"):
        AdbDevice("S", runner=offline).check()

    def push_fails(cmd, timeout=None):
        if "push" in cmd:
            return subprocess.CompletedProcess(
                cmd, 1, "", "adb: error: failed to copy 'x' to '/data/...': "
                "remote No space left on device\n")
        return subprocess.CompletedProcess(cmd, 0, "device\n", "")

    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    with pytest.raises(BenchError, match="push .*benchmark_model failed: .*No space left"):
        AdbDevice("S", runner=push_fails).prepare(binary)
    with pytest.raises(BenchError, match="binary not found"):
        AdbDevice("S", runner=push_fails).prepare(tmp_path / "nope")


def test_adb_timeout_is_a_bench_error():
    def slow(cmd, timeout=None):
        raise subprocess.TimeoutExpired(cmd, timeout)

    with pytest.raises(BenchError, match="timed out after 5s"):
        AdbDevice("S", runner=slow, timeout=5).check()


def test_error_line():
    assert error_line("a\nERROR: x\nERROR: y\nINFO: z") == "ERROR: y"
    assert error_line("a\nERROR: x\nERROR: y\nINFO: z", first=True) == "ERROR: x"
    assert error_line("just text\nlast") == "last"
    assert error_line(None) == "no output"


# ------------------------------------------------------- operator profiles
def _fixture(name):
    with open(os.path.join(DATA, name)) as f:
        return f.read()


def test_op_profile_of_stats_calculator_format():
    rows = device.parse_op_profile(_fixture("benchmark_model_op_profile_stats_calculator.txt"))
    assert [r["node_type"] for r in rows] == ["CONV_2D", "MAX_POOL_2D", "CONV_2D",
                                              "CONCATENATION"]  # not AllocateTensors
    assert [r["avg_ms"] for r in rows] == [0.398, 0.057, 0.221, 0.018]
    assert rows[0]["first_ms"] == 0.412 and rows[0]["times_called"] == 1
    assert rows[0]["name"] == "[model/conv1/Relu;model/conv1/Conv2D]:0"
    assert rows[-1]["percent"] == 2.594


def test_op_profile_of_litert_summarizer_format():
    rows = device.parse_op_profile(_fixture("benchmark_model_op_profile_litert.txt"))
    assert [(r["node_type"], r["avg_ms"], r["times_called"]) for r in rows] == [
        ("TfLiteXNNPackDelegate", 0.352, 100), ("LOGISTIC", 0.011, 100)]
    assert rows[1]["name"] == "[Unknown]:1"


def test_op_profile_missing_is_an_error():
    with pytest.raises(BenchError, match="no operator profile"):
        device.parse_op_profile(_fixture("benchmark_model_android_cpu.txt"))


class _FakeAdb:
    """Answers adb like a device whose benchmark_model prints a fixture."""

    def __init__(self, profile):
        self.profile, self.calls = profile, []

    def __call__(self, cmd, timeout=None):
        self.calls.append(cmd)
        out = ""
        if cmd[3:4] == ["get-state"]:
            out = "device\n"
        elif cmd[3:5] == ["shell", "getprop"]:
            out = {"ro.soc.model": "SM8550\n", "ro.product.model": "Pixel Test\n"}.get(cmd[5], "")
        elif cmd[3] == "shell" and str(cmd[4]).endswith("benchmark_model"):
            out = self.profile if "--enable_op_profiling=true" in cmd else _fixture(
                "benchmark_model_android_cpu.txt")
        return subprocess.CompletedProcess(cmd, 0, out, "")


def test_adb_op_timer_sums_operator_rows(tmp_path):
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\0")
    fake = _FakeAdb(_fixture("benchmark_model_op_profile_stats_calculator.txt"))
    timer = device.AdbOpTimer(device.AdbDevice("serial1", runner=fake), str(binary), threads=2)
    assert timer.cpu == "SM8550 / Pixel Test"
    assert timer.op_costs([b"model-a", b"model-b"]) == pytest.approx([0.694, 0.694])
    assert timer.invoke_ms([b"whole"]) == pytest.approx([2.3986])
    runs = [c for c in fake.calls if c[3] == "shell" and str(c[4]).endswith("benchmark_model")]
    assert "--num_threads=2" in runs[0] and "--enable_op_profiling=true" in runs[0]
    assert "--enable_op_profiling=true" not in runs[-1]


def test_latency_table_measured_through_a_device_backend():
    import keras

    from keras_evosynth import LatencyTable, latency

    class Backend:  # costs: 1 us per input channel of each micro-model
        cpu, runtime, threads = "SM8550 / Pixel Test", "benchmark_model (adb serial1)", 1

        def __init__(self):
            self.seen = 0

        def op_costs(self, flatbuffers):
            self.seen += len(flatbuffers)
            return [0.001 * len(f) / 1000 for f in flatbuffers]

        def invoke_ms(self, flatbuffers):
            return [1.0 for _ in flatbuffers]

    x = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(16, 3, name="conv")(x)
    model = keras.Model(x, keras.layers.GlobalAveragePooling2D(name="gap")(y))
    backend = Backend()
    table = LatencyTable.measure(model, backend=backend, verbose=0)
    assert (table.cpu, table.runtime) == (Backend.cpu, Backend.runtime)
    anchors = len(latency.ANCHOR_KEEP)
    assert backend.seen == table.timed_points - anchors  # + the whole model's anchors
    record = next(iter(table.models.values()))
    assert [a["whole_ms"] for a in record["anchors"]] == [1.0] * anchors
    # every anchor at 1 ms: no slope to fit, so the whole model's difference
    assert (record["scale"], record["floor_ms"]) == (1.0, 0.0)
    assert table.predict(model) == pytest.approx(1.0)
