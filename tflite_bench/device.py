"""Device mode: TFLite's `benchmark_model` on an Android device over adb.

Pushes the user's `benchmark_model` binary and each model to the device,
runs it once per thread count and parses its log (`count=... min=...
avg=... std=...` in microseconds, memory footprint in MB).
"""

import dataclasses
import os
import posixpath
import re
import subprocess

from tflite_bench.commands import error_line, run_command
from tflite_bench.errors import BenchError

DEFAULT_DEVICE_DIR = "/data/local/tmp/tflite_bench"

_COUNT = re.compile(r"count=(\d+)((?:\s+\w+=[-+0-9.eE]+)+)")
_PAIR = re.compile(r"(\w+)=([-+0-9.eE]+)")
_TIMINGS = re.compile(
    r"Inference timings in us: Init: ([-+0-9.eE]+), First inference: "
    r"([-+0-9.eE]+), Warmup \(avg\): ([-+0-9.eE]+), Inference \(avg\): "
    r"([-+0-9.eE]+)"
)
_MEMORY = re.compile(
    r"Memory footprint delta from the start of the tool \(MB\): "
    r"init=([-+0-9.eE]+) overall=([-+0-9.eE]+)"
)
_PEAK = re.compile(
    r"Overall peak memory footprint \(MB\) via periodic monitoring: ([-+0-9.eE]+)"
)
_SIZE = re.compile(r"The input model file size \(MB\): ([-+0-9.eE]+)")


def parse_benchmark_model_output(text):
    """Parses the log of TFLite's `benchmark_model`.

    The tool prints two `count=N first=.. curr=.. min=.. max=.. avg=..
    std=..` lines (microseconds; newer builds add `p5= median= p95=`): the
    warm-up one, then the timed one. The last one is the measurement.

    Args:
        text: The tool's combined stdout/stderr.

    Returns:
        `(latency_ms, memory_mib, extra)`: `latency_ms` has `min`, `median`,
        `p95`, `mean`, `std` (ms; `median`/`p95` None on builds that do not
        print them), `p90` None and `runs`; `memory_mib` is the peak
        footprint from periodic monitoring when printed, else the `overall`
        footprint delta (None when neither is printed); `extra` holds
        `init_ms`, `first_inference_ms`, `warmup_avg_ms`, `model_size_mb`,
        `memory_init_mb`, `memory_overall_mb`, `memory_peak_mb` where
        printed.

    Raises:
        BenchError: If no timed `count=` line is in the log.

    Example:

    >>> lat, mem, extra = parse_benchmark_model_output(
    ...     "INFO: count=50 first=1200 curr=1010 min=990 max=1300 "
    ...     "avg=1020.5 std=40\\n")
    >>> lat["min"], lat["mean"], lat["runs"]
    (0.99, 1.0205, 50)
    """
    text = text or ""
    counts = _COUNT.findall(text)
    if not counts:
        raise BenchError(
            f"benchmark_model printed no timings: {error_line(text, first=True)}"
        )
    runs, pairs = counts[-1]
    values = {k: float(v) for k, v in _PAIR.findall(pairs)}

    def ms(key):
        return values[key] / 1000.0 if key in values else None

    latency = {
        "min": ms("min"),
        "median": ms("median"),
        "p90": None,
        "p95": ms("p95"),
        "mean": ms("avg"),
        "std": ms("std"),
        "runs": int(runs),
    }
    extra = {}
    match = _TIMINGS.search(text)
    if match:
        init, first, warm, _ = (float(v) for v in match.groups())
        extra.update(init_ms=init / 1000.0, first_inference_ms=first / 1000.0,
                     warmup_avg_ms=warm / 1000.0)
    match = _SIZE.search(text)
    if match:
        extra["model_size_mb"] = float(match.group(1))
    memory = None
    match = _MEMORY.search(text)
    if match:
        extra["memory_init_mb"] = float(match.group(1))
        extra["memory_overall_mb"] = memory = float(match.group(2))
    match = _PEAK.search(text)
    if match:
        extra["memory_peak_mb"] = memory = float(match.group(1))
    return latency, memory, extra


@dataclasses.dataclass
class AdbDevice:
    """An Android device reached through `adb -s SERIAL`.

    Every command goes through `runner(cmd, timeout)`, so tests can check the
    command lines with a fake runner and no device.

    Attributes:
        serial: Device serial (`adb devices` lists them).
        adb: The adb program.
        device_dir: Where models and the binary are pushed on the device.
        runner: `runner(cmd, timeout) -> CompletedProcess`.
        timeout: Seconds per adb command.

    Example:

    >>> calls = []
    >>> def fake(cmd, timeout=None):
    ...     calls.append(cmd)
    ...     return subprocess.CompletedProcess(cmd, 0, "device\\n", "")
    >>> AdbDevice("emulator-5554", runner=fake).check()
    >>> calls[0]
    ['adb', '-s', 'emulator-5554', 'get-state']
    """

    serial: str
    adb: str = "adb"
    device_dir: str = DEFAULT_DEVICE_DIR
    runner: object = run_command
    timeout: float = 600

    def _run(self, *args):
        cmd = [self.adb, "-s", self.serial, *args]
        try:
            return self.runner(cmd, self.timeout)
        except FileNotFoundError as e:
            raise BenchError(
                f"adb not found ('{self.adb}'); install Android platform-tools "
                "and put adb on PATH"
            ) from e
        except subprocess.TimeoutExpired as e:
            raise BenchError(
                f"adb {' '.join(args[:2])} timed out after {self.timeout}s"
            ) from e

    def _checked(self, *args):
        proc = self._run(*args)
        if proc.returncode != 0:
            raise BenchError(
                f"adb -s {self.serial} {' '.join(args[:2])} failed: "
                f"{error_line(proc.stderr or proc.stdout)}"
            )
        return proc

    def check(self):
        """Raises `BenchError` unless adb runs and the device is online."""
        proc = self._run("get-state")
        state = (proc.stdout or "").strip()
        if proc.returncode != 0 or state != "device":
            detail = error_line(proc.stderr or proc.stdout)
            raise BenchError(
                f"device '{self.serial}' not available ({detail}); "
                "see `adb devices`"
            )

    def push(self, local, remote_name):
        """Pushes a file into `device_dir`; returns its device path."""
        remote = posixpath.join(self.device_dir, remote_name)
        self._checked("push", os.fspath(local), remote)
        return remote

    def shell(self, *args):
        """Runs a shell command on the device; returns the CompletedProcess."""
        return self._run("shell", *args)

    def prepare(self, binary):
        """Checks the device, creates `device_dir`, pushes the binary.

        Returns:
            The binary's path on the device.
        """
        binary = os.fspath(binary)
        if not os.path.isfile(binary):
            raise BenchError(f"{binary}: benchmark_model binary not found")
        self.check()
        self._checked("shell", "mkdir", "-p", self.device_dir)
        remote = self.push(binary, "benchmark_model")
        self._checked("shell", "chmod", "755", remote)
        return remote

    def cleanup(self):
        """Removes `device_dir` from the device (errors ignored)."""
        self._run("shell", "rm", "-rf", self.device_dir)


_PROFILE_MARKER = "Operator-wise Profiling Info for Regular Benchmark Runs"
_LOG_PREFIX = re.compile(r"^(?:INFO|WARNING|ERROR): ")
_COLUMN = re.compile(r"\[[^\]]+\]")
# LiteRT's own summarizer (absl::StrFormat "%30s %10.3f %10.3f %9.3f%% ..."):
_SPACED_ROW = re.compile(
    r"^\s*(?P<type>\S.*?)\s+(?P<first>[-+0-9.eE]+)\s+(?P<avg>[-+0-9.eE]+)\s+"
    r"(?P<pct>[-+0-9.eE]+)%\s+(?P<cdf>[-+0-9.eE]+)%\s+(?P<mem>[-+0-9.eE]+)\s+"
    r"(?P<times>\d+)\s+(?P<name>.*)$"
)


def _profile_row(line, header):
    """One operator row as `{column: text}`; None if it does not parse."""
    if "\t" in line:
        fields = [f.strip() for f in line.split("\t")]
        if fields and fields[0] == "":
            fields = fields[1:]
        if len(fields) < len(header):
            return None
        row = dict(zip(header, fields, strict=False))
        row["[Name]"] = "\t".join(fields[len(header) - 1:])
        return row
    match = _SPACED_ROW.match(line)
    if match is None or "[start]" in header:
        return None
    return {"[node type]": match["type"], "[first]": match["first"], "[avg ms]": match["avg"],
            "[%]": match["pct"], "[times called]": match["times"], "[Name]": match["name"]}


def parse_op_profile(text):
    r"""Parses the `Run Order` table of `benchmark_model --enable_op_profiling=true`.

    Two printers exist, and both are read:

    - TensorFlow's `StatsCalculator` (`tensorflow/core/util/stats_calculator.cc`):
      a `==== Run Order ====` line, a header of tab-separated bracketed
      column names (`[node type]`, `[start]` in older builds, `[first]`,
      `[avg ms]`, `[%]`, `[cdf%]`, `[mem KB]`, `[times called]`, `[Name]`),
      one tab-separated row per operator, an empty line;
    - LiteRT's `LiteRtProfileSummarizer` (`litert/runtime/profiler_summarizer.cc`):
      the same columns without `[start]`, padded with spaces.

    The table after "Operator-wise Profiling Info for Regular Benchmark
    Runs" is used (the one for initialization, printed first, is skipped).
    Under a delegate the rows are the delegate nodes (e.g.
    `TfLiteXNNPackDelegate`) and the operators left to the interpreter.

    Args:
        text: The tool's combined stdout/stderr.

    Returns:
        A list of dicts, in run order: `node_type`, `first_ms`, `avg_ms`,
        `percent`, `times_called`, `name`.

    Raises:
        BenchError: No `Run Order` table in the text (the tool was run
            without `--enable_op_profiling=true`, or failed), or a row that
            does not parse.

    Example:

    >>> log = ("Operator-wise Profiling Info for Regular Benchmark Runs:\n"
    ...        "============================== Run Order ==============================\n"
    ...        "\t[node type]\t[first]\t[avg ms]\t[%]\t[cdf%]\t[mem KB]\t[times called]\t[Name]\n"
    ...        "\t CONV_2D\t 0.250\t 0.201\t 80.0%\t 80.0%\t 0.000\t 1\t[conv]:0\n"
    ...        "\t MAX_POOL_2D\t 0.060\t 0.050\t 20.0%\t 100.0%\t 0.000\t 1\t[pool]:1\n\n")
    >>> [(r["node_type"], r["avg_ms"]) for r in parse_op_profile(log)]
    [('CONV_2D', 0.201), ('MAX_POOL_2D', 0.05)]
    """
    lines = [_LOG_PREFIX.sub("", line.rstrip("\r")) for line in (text or "").splitlines()]
    start = next((i for i, line in enumerate(lines) if _PROFILE_MARKER in line), 0)
    title = next(
        (i for i in range(start, len(lines)) if "=" * 10 in lines[i] and " Run Order " in lines[i]),
        None,
    )
    if title is None or title + 1 >= len(lines):
        raise BenchError(
            "benchmark_model printed no operator profile (run it with "
            f"--enable_op_profiling=true): {error_line(text, first=True)}"
        )
    header = _COLUMN.findall(lines[title + 1])
    if any(name not in header for name in ("[node type]", "[avg ms]", "[Name]")):
        raise BenchError(f"unexpected operator-profile header: {lines[title + 1].strip()!r}")
    rows = []
    for line in lines[title + 2:]:
        if not line.strip() or line.startswith("="):
            break
        row = _profile_row(line, header)
        if row is None:
            raise BenchError(f"unexpected operator-profile row: {line.strip()!r}")

        def number(name, row=row):
            return float(row[name].rstrip("%")) if row.get(name) not in (None, "") else None

        times = number("[times called]")
        rows.append({
            "node_type": row["[node type]"],
            "first_ms": number("[first]"),
            "avg_ms": number("[avg ms]"),
            "percent": number("[%]"),
            "times_called": None if times is None else int(times),
            "name": row["[Name]"],
        })
    return rows


class AdbOpTimer:
    r"""Times int8 micro-models on an Android device for a device
    `keras_evosynth.LatencyTable` (`LatencyTable.measure(model,
    backend=AdbOpTimer(...))`).

    Each micro-model is pushed and run with `benchmark_model
    --enable_op_profiling=true`; its cost is the sum of the `avg ms` of its
    operator rows (`parse_op_profile`), so the tool's own invoke overhead is
    left out. Whole models are timed by the tool's `avg=` statistic.

    Args:
        device: An `AdbDevice`.
        binary: Local `benchmark_model` binary (pushed once).
        threads: `--num_threads`.
        runs, warmup: `--num_runs`, `--warmup_runs`.
        use_xnnpack: `--use_xnnpack`.

    Example:

    >>> import subprocess
    >>> def fake(cmd, timeout=None):
    ...     out = "device\n" if cmd[3:4] == ["get-state"] else ""
    ...     return subprocess.CompletedProcess(cmd, 0, out, "")
    >>> timer = AdbOpTimer(AdbDevice("emulator-5554", runner=fake), "benchmark_model")
    >>> timer.threads, timer.runtime
    (1, 'benchmark_model (adb emulator-5554)')
    """

    def __init__(self, device, binary, threads=1, runs=50, warmup=10, use_xnnpack=True):
        self.device, self.binary = device, binary
        self.threads, self.runs, self.warmup = int(threads), int(runs), int(warmup)
        self.use_xnnpack = use_xnnpack
        self.runtime = f"benchmark_model (adb {device.serial})"
        self._remote_binary = None
        self._cpu = None

    @property
    def cpu(self):
        """The device's SoC and model, as `getprop` reports them."""
        if self._cpu is None:
            names = []
            for prop in ("ro.soc.model", "ro.board.platform", "ro.product.model"):
                proc = self.device.shell("getprop", prop)
                value = (proc.stdout or "").strip()
                if proc.returncode == 0 and value and value not in names:
                    names.append(value)
            self._cpu = " / ".join(names) or f"android device {self.device.serial}"
        return self._cpu

    def _run(self, flatbuffer, profile):
        import tempfile

        if self._remote_binary is None:
            self._remote_binary = self.device.prepare(self.binary)
        with tempfile.NamedTemporaryFile(suffix=".tflite") as f:
            f.write(flatbuffer)
            f.flush()
            remote = self.device.push(f.name, "latency_micro.tflite")
        cmd = benchmark_command(self._remote_binary, remote, self.threads, self.runs,
                                self.warmup, self.use_xnnpack)
        if profile:
            cmd.append("--enable_op_profiling=true")
        return benchmark_output(self.device.shell(*cmd), what="latency micro-model")

    def op_costs(self, flatbuffers):
        """Cost (ms) of each micro-model: the sum of its operators' averages."""
        return [sum(r["avg_ms"] for r in parse_op_profile(self._run(fb, True)))
                for fb in flatbuffers]

    def invoke_ms(self, flatbuffers):
        """Whole-invoke average (ms) of each model."""
        return [parse_benchmark_model_output(self._run(fb, False))[0]["mean"]
                for fb in flatbuffers]


def benchmark_output(proc, what="benchmark_model"):
    r"""The combined stdout/stderr of a finished `benchmark_model` run on the
    device; `BenchError` (prefixed `what`) when it failed.

    Example:

    >>> benchmark_output(subprocess.CompletedProcess([], 0, "count=1", ""))
    'count=1\n'
    """
    output = (proc.stdout or "") + "\n" + (proc.stderr or "")
    if proc.returncode != 0:
        raise BenchError(
            f"{what}: benchmark_model failed on the device "
            f"(exit {proc.returncode}): {error_line(output, first=True)}"
        )
    return output


def benchmark_command(binary, graph, threads=1, runs=100, warmup=10,
                      use_xnnpack=True, use_gpu=False):
    """The `benchmark_model` arguments for one run (device paths).

    Example:

    >>> benchmark_command("/d/benchmark_model", "/d/m.tflite", threads=4)
    ... # doctest: +NORMALIZE_WHITESPACE
    ['/d/benchmark_model', '--graph=/d/m.tflite', '--num_threads=4',
     '--num_runs=100', '--warmup_runs=10', '--use_xnnpack=true',
     '--use_gpu=false']
    """
    return [
        binary, f"--graph={graph}", f"--num_threads={int(threads)}",
        f"--num_runs={int(runs)}", f"--warmup_runs={int(warmup)}",
        f"--use_xnnpack={'true' if use_xnnpack else 'false'}",
        f"--use_gpu={'true' if use_gpu else 'false'}",
    ]


def remote_names(paths):
    """Unique device file names for local model paths (`0_a.tflite`, ...).

    Example:

    >>> remote_names(["x/a.tflite", "y/a.tflite"])
    ['0_a.tflite', '1_a.tflite']
    """
    return [f"{i}_{os.path.basename(os.fspath(p))}" for i, p in enumerate(paths)]
