"""`compare(models, ...)`: measure .tflite models side by side -> `Report`."""

import importlib.metadata
import os
import platform
import sys

import numpy as np

from tflite_bench import device as device_lib
from tflite_bench import host, litert_tool, modelinfo
from tflite_bench.commands import run_command
from tflite_bench.errors import BenchError
from tflite_bench.progress import Progress
from tflite_bench.report import Report, Row

BACKENDS = ("interpreter", "litert-tool", "adb")


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model():
    """This host's processor name (`/proc/cpuinfo`'s model name, else
    `platform.processor()`), or None when neither names it.

    Example:

    >>> name = cpu_model()  # e.g. 'Intel(R) Xeon(R) Processor'
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def host_facts():
    """Facts about this machine recorded in every report.

    Example:

    >>> sorted(host_facts())[:3]
    ['ai_edge_litert', 'cpu_count', 'machine']
    """
    return {
        "ai_edge_litert": _version("ai-edge-litert"),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "processor": cpu_model(),
        "python": platform.python_version(),
    }


def model_names(paths):
    """Display names: file names, or the paths as given where names collide.

    Example:

    >>> model_names(["a/m.tflite", "b/n.tflite"])
    ['m.tflite', 'n.tflite']
    >>> model_names(["a/m.tflite", "b/m.tflite"])
    ['a/m.tflite', 'b/m.tflite']
    """
    base = [os.path.basename(os.fspath(p)) for p in paths]
    if len(set(base)) == len(base):
        return base
    return [os.fspath(p) for p in paths]


def _check_args(models, threads, runs, warmup, backend, use_xnnpack, use_gpu,
                names, adb_serial, benchmark_binary):
    if isinstance(models, (str, os.PathLike)) or not models:
        raise ValueError(
            f"`models` must be a non-empty list of .tflite paths, got {models!r}"
        )
    if not threads or any(int(t) != t or t < 1 for t in threads):
        raise ValueError(f"`threads` must be integers >= 1, got {threads!r}")
    if int(runs) < 1:
        raise ValueError(f"`runs` must be >= 1, got {runs!r}")
    if int(warmup) < 0:
        raise ValueError(f"`warmup` must be >= 0, got {warmup!r}")
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}, got {backend!r}")
    if names is not None and len(names) != len(models):
        raise ValueError(
            f"`names` has {len(names)} entries for {len(models)} models"
        )
    if backend == "interpreter" and use_gpu:
        raise ValueError(
            "use_gpu needs the litert-tool or adb backend (the host "
            "interpreter runs on CPU)"
        )
    if backend == "litert-tool" and not use_xnnpack:
        raise ValueError(
            "the litert-tool backend always runs XNNPACK on CPU; "
            "use_xnnpack=False needs the interpreter or adb backend"
        )
    if backend == "adb" and not (adb_serial and benchmark_binary):
        raise ValueError(
            "the adb backend needs `adb_serial` and `benchmark_binary`"
        )


def _load_data(data, max_samples):
    if data is None:
        return None, None, None
    if isinstance(data, (str, os.PathLike)):
        x, y = host.load_data(data)
        source = os.fspath(data)
    else:
        x, y = data
        x, y = np.asarray(x), np.asarray(y).reshape(len(x), -1)
        y = y.argmax(axis=1) if y.shape[1] > 1 else y.reshape(-1)
        source = "data"
    if max_samples is not None:
        x, y = x[: int(max_samples)], y[: int(max_samples)]
    if len(x) == 0:
        raise BenchError(f"{source}: no examples")
    return x, y.astype(np.int64), source


def compare(
    models,
    threads=(1,),
    runs=100,
    warmup=10,
    data=None,
    max_samples=None,
    names=None,
    backend="interpreter",
    use_xnnpack=True,
    use_gpu=False,
    memory=True,
    adb_serial=None,
    benchmark_binary=None,
    adb="adb",
    device_dir=device_lib.DEFAULT_DEVICE_DIR,
    runner=None,
    progress=True,
    stream=None,
):
    """Measures .tflite models side by side; the first one is the baseline.

    For every model: file size and operator counts by precision (from the
    flatbuffer), top-1 accuracy on `data` (host LiteRT interpreter, batch
    1), then per thread count latency (min/median/p90/...) and memory on the
    chosen backend. On the host interpreter all models of a thread count
    are timed side by side, round by round (`host.measure_latency_interleaved`),
    so that a noisy host skews none of the ratios. A model that fails gets a
    row with its one-line `error` and the others are still measured.

    Args:
        models: .tflite paths, baseline first.
        threads: Thread counts to measure at.
        runs: Timed invokes per (model, threads).
        warmup: Untimed invokes before timing.
        data: Labelled data: an `.npz` path with `x` and `y`, or `(x, y)`.
        max_samples: Use only the first examples of `data`.
        names: Display names (default: file names).
        backend: `"interpreter"` (LiteRT Python interpreter, this host),
            `"litert-tool"` (`python -m
            ai_edge_litert.tools.benchmark_litert_model`) or `"adb"`
            (`benchmark_model` on an Android device).
        use_xnnpack: Keep the XNNPACK delegate (interpreter, adb).
        use_gpu: GPU delegate (litert-tool, adb).
        memory: Measure memory (host backends: a child process per row).
        adb_serial: Device serial for the adb backend.
        benchmark_binary: Local `benchmark_model` binary for the adb backend.
        adb: adb program.
        device_dir: Device directory for the pushed files.
        runner: `runner(cmd, timeout)` for external commands (tests).
        progress: Draw progress on `stream`.
        stream: Progress stream (default stderr).

    Returns:
        A `Report`.

    Raises:
        ValueError: On bad arguments.
        BenchError: When nothing can be measured at all (data file unusable,
            adb missing, device absent, tool missing).

    Example:

    >>> report = compare(["float.tflite", "int8.tflite"], threads=[1, 2],
    ...                  runs=50)  # doctest: +SKIP
    >>> print(report.table())  # doctest: +SKIP
    """
    models = list(models) if not isinstance(models, (str, os.PathLike)) else models
    threads = [int(t) for t in threads] if not isinstance(threads, int) else [threads]
    _check_args(models, threads, runs, warmup, backend, use_xnnpack, use_gpu,
                names, adb_serial, benchmark_binary)
    paths = [os.fspath(p) for p in models]
    names = list(names) if names is not None else model_names(paths)
    x, labels, source = _load_data(data, max_samples)
    stream = stream if stream is not None else sys.stderr

    def bar(label, total):
        return Progress(label, total, stream=stream, enabled=progress)

    settings = {
        "models": paths, "names": names, "threads": threads, "runs": int(runs),
        "warmup": int(warmup), "backend": backend, "use_xnnpack": use_xnnpack,
        "use_gpu": use_gpu, "data": source,
        "samples": None if x is None else int(len(x)),
        "accuracy": "top-1, host LiteRT interpreter, batch 1" if x is not None
        else None,
        "latency": "batch 1, ms per invoke" + (
            "; models timed side by side, round by round" if backend == "interpreter" else ""),
    }
    measurer = _Measurer(backend, int(runs), int(warmup), use_xnnpack, use_gpu,
                         memory, runner)
    if backend == "adb":
        measurer.device = device_lib.AdbDevice(
            adb_serial, adb=adb, device_dir=device_dir,
            runner=runner or run_command,
        )
        measurer.binary = measurer.device.prepare(benchmark_binary)
    remote = device_lib.remote_names(paths)
    backend_label = f"adb:{adb_serial}" if backend == "adb" else backend
    rows, samples = [], {}
    try:
        for m, (path, name) in enumerate(zip(paths, names, strict=True)):
            tag = f"[{m + 1}/{len(paths)}] {name}"
            try:
                info = modelinfo.inspect_model(path)
                accuracy = sample = None
                if x is not None:
                    xq = host.check_data(path, x, name, source)
                    sample = xq[0]
                    with bar(f"{tag} accuracy", len(xq)) as b:
                        accuracy = host.evaluate_accuracy(
                            path, xq, labels, threads[0], progress=b
                        )
                graph = measurer.push(path, remote[m])
            except BenchError as e:
                rows.append(Row(name, path, backend_label, error=str(e)))
                continue
            samples[path] = sample
            for t in threads:
                row = Row(name, path, backend_label, t, size_bytes=info.size_bytes,
                          ops=info.ops, op_types=info.op_types, accuracy=accuracy)
                if backend != "interpreter":
                    try:
                        measurer.measure(row, sample, graph,
                                         lambda total, label=f"{tag} threads={t}":
                                         bar(label, total))
                    except BenchError as e:
                        row.error = str(e)
                rows.append(row)
        if backend == "interpreter":
            measurer.measure_interleaved(rows, threads, samples, bar)
    finally:
        if measurer.device is not None:
            measurer.device.cleanup()
    settings["memory"] = sorted({r.memory_note for r in rows if r.memory_note})
    return Report(rows, settings, host_facts())


class _Measurer:
    """Fills the latency (memory, extra) of rows on one backend."""

    def __init__(self, backend, runs, warmup, use_xnnpack, use_gpu, memory,
                 runner):
        self.backend = backend
        self.runs = runs
        self.warmup = warmup
        self.use_xnnpack = use_xnnpack
        self.use_gpu = use_gpu
        self.memory = memory
        self.runner = runner
        self.device = None
        self.binary = None

    def push(self, path, remote_name):
        """Device path of the model (pushed) in adb mode, else None."""
        return self.device.push(path, remote_name) if self.device else None

    def measure_interleaved(self, rows, threads, samples, bar):
        """Host interpreter: per thread count, all models timed side by side,
        round by round (one progress bar per thread count); then memory."""
        for t in threads:
            mine = [r for r in rows if r.threads == t and not r.error]
            if not mine:
                continue
            label = f"latency threads={t}: {len(mine)} models interleaved"
            with bar(label, len(mine) * (self.warmup + self.runs)) as b:
                results = host.measure_latency_interleaved(
                    [r.path for r in mine], t, self.runs, self.warmup, self.use_xnnpack,
                    [samples[r.path] for r in mine], progress=b,
                )
            for row, result in zip(mine, results, strict=True):
                if isinstance(result, BenchError):
                    row.error = str(result)
                else:
                    row.latency_ms = result
        for row in rows:
            if row.latency_ms is not None:
                self._memory(row)

    def _memory(self, row):
        if self.memory:
            row.memory_mib = host.measure_memory(
                row.path, row.threads, max(1, min(self.warmup, 3)),
                self.use_xnnpack,
            )
            row.memory_note = host.MEMORY_NOTE

    def measure(self, row, sample, graph, bar):
        if self.backend == "litert-tool":
            with bar(1) as b:
                row.latency_ms, row.extra = litert_tool.run(
                    row.path, row.threads, self.runs, self.warmup, self.use_gpu,
                    runner=self.runner,
                )
                b(1)
        else:
            self._measure_device(row, graph, bar)
            return
        self._memory(row)

    def _measure_device(self, row, graph, bar):
        cmd = device_lib.benchmark_command(
            self.binary, graph, row.threads, self.runs, self.warmup,
            self.use_xnnpack, self.use_gpu,
        )
        with bar(1) as b:
            proc = self.device.shell(*cmd)
            b(1)
        output = device_lib.benchmark_output(proc, what=row.path)
        row.latency_ms, row.memory_mib, row.extra = (
            device_lib.parse_benchmark_model_output(output)
        )
        if row.memory_mib is not None:
            row.memory_note = (
                "benchmark_model memory footprint (MB): periodic peak if "
                "printed, else the overall delta from the tool's start"
            )
