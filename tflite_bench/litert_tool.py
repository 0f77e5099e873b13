"""Wraps `python -m ai_edge_litert.tools.benchmark_litert_model`.

That tool (shipped in ai-edge-litert >= 2.3) runs a model through LiteRT's
`CompiledModel` API (CPU = XNNPACK, optionally GPU) and prints a block of
`Inference (min):  0.03 ms` lines on stdout; this module runs it in a child
process and parses that block.
"""

import importlib.util
import re
import sys

from tflite_bench.commands import error_line, run_command
from tflite_bench.errors import BenchError

TOOL_MODULE = "ai_edge_litert.tools.benchmark_litert_model"

_LINE = re.compile(
    r"^(?P<key>Model initialization|Warmup \(first\)|Warmup \(avg\)|"
    r"Inference \((?P<stat>\w+)\))\s*:\s*(?P<value>[-+0-9.eE]+) ms"
)
_ACCEL = re.compile(r"^Fully accelerated:\s*(True|False)")
_EXTRA_KEYS = {
    "Model initialization": "init_ms",
    "Warmup (first)": "first_inference_ms",
    "Warmup (avg)": "warmup_avg_ms",
}


def tool_available():
    """True when the installed ai-edge-litert ships the benchmark tool.

    Example:

    >>> isinstance(tool_available(), bool)
    True
    """
    try:
        return importlib.util.find_spec(TOOL_MODULE) is not None
    except ImportError:
        return False


def parse_output(text):
    """Parses the tool's `BENCHMARK RESULTS` block.

    Args:
        text: The tool's stdout.

    Returns:
        `(latency_ms, extra)`: `latency_ms` has `min`, `median`, `mean`,
        `std`, `p95` (and `p5`, `max`) in ms, `p90` None (not reported) and
        `runs`; `extra` has `init_ms`, `first_inference_ms`,
        `warmup_avg_ms`, `fully_accelerated`.

    Raises:
        BenchError: If the block is not there.

    Example:

    >>> lat, extra = parse_output("Inference (avg):  2.00 ms (50 runs)\\n"
    ...                           "Inference (median):  1.50 ms\\n")
    >>> lat["median"], lat["mean"], lat["runs"]
    (1.5, 2.0, 50)
    """
    latency = {"p90": None}
    extra = {}
    for raw in (text or "").splitlines():
        line = raw.strip()
        match = _LINE.match(line)
        if match:
            value = float(match["value"])
            stat = match["stat"]
            if stat is None:
                extra[_EXTRA_KEYS[match["key"]]] = value
                continue
            latency["mean" if stat == "avg" else stat] = value
            runs = re.search(r"\((\d+) runs\)", line)
            if stat == "avg" and runs:
                latency["runs"] = int(runs.group(1))
            continue
        match = _ACCEL.match(line)
        if match:
            extra["fully_accelerated"] = match.group(1) == "True"
    if "mean" not in latency and "median" not in latency:
        raise BenchError(
            f"{TOOL_MODULE}: no 'Inference (...)' lines in its output"
        )
    for key in ("min", "median", "p95", "mean", "std"):
        latency.setdefault(key, None)
    latency.setdefault("runs", None)
    return latency, extra


def command(path, threads=1, runs=100, warmup=10, use_gpu=False):
    """The command line that benchmarks one model.

    Example:

    >>> command("m.tflite", threads=2, runs=50, warmup=5)[1:]
    ... # doctest: +NORMALIZE_WHITESPACE
    ['-m', 'ai_edge_litert.tools.benchmark_litert_model', '--model=m.tflite',
     '--num_threads=2', '--num_runs=50', '--warmup_runs=5']
    """
    cmd = [
        sys.executable, "-m", TOOL_MODULE, f"--model={path}",
        f"--num_threads={int(threads)}", f"--num_runs={int(runs)}",
        f"--warmup_runs={int(warmup)}",
    ]
    if use_gpu:
        cmd.append("--use_gpu")
    return cmd


def run(path, threads=1, runs=100, warmup=10, use_gpu=False, runner=None,
        timeout=600):
    """Benchmarks one model with the LiteRT tool and parses the result.

    Args:
        path: .tflite file.
        threads: `--num_threads`.
        runs: `--num_runs`.
        warmup: `--warmup_runs`.
        use_gpu: Add `--use_gpu` (GPU with CPU fallback).
        runner: `runner(cmd, timeout)` returning a `CompletedProcess`
            (default `tflite_bench.commands.run_command`).
        timeout: Seconds.

    Returns:
        `(latency_ms, extra)` as from `parse_output`.

    Raises:
        BenchError: If the tool is missing or fails.

    Example:

    >>> latency, extra = run("model.tflite", threads=2)  # doctest: +SKIP
    """
    if runner is None:
        if not tool_available():
            raise BenchError(
                f"{TOOL_MODULE} is not in the installed ai-edge-litert "
                "(it ships from 2.3 on: pip install -U 'ai-edge-litert>=2.3'), "
                "or run without --litert-benchmark"
            )
        runner = run_command
    cmd = command(path, threads, runs, warmup, use_gpu)
    try:
        proc = runner(cmd, timeout)
    except OSError as e:
        raise BenchError(f"{TOOL_MODULE}: cannot start ({e})") from e
    except Exception as e:  # subprocess.TimeoutExpired and friends
        raise BenchError(f"{path}: {TOOL_MODULE} {type(e).__name__}") from e
    if proc.returncode != 0:
        raise BenchError(
            f"{path}: {TOOL_MODULE} failed (exit {proc.returncode}): "
            f"{error_line(proc.stderr or proc.stdout)}"
        )
    return parse_output(proc.stdout)
