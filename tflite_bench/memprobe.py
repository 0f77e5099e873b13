"""Child process of `host.measure_memory`: peak RSS a model adds.

Run as `python -m tflite_bench.memprobe model.tflite --threads=1 --warmup=1`;
prints one JSON line `{"delta_mib": ..., "before_mib": ..., "peak_mib": ...,
"method": ...}`.

On Linux the kernel's peak-RSS counter (VmHWM) is reset after the imports
(`/proc/self/clear_refs`), so the peak belongs to the model alone; elsewhere
the fallback is `getrusage` peak RSS, which may include the imports' peak.
"""

import argparse
import json
import sys

import numpy as np
from ai_edge_litert import interpreter as litert  # noqa: F401  (import first)

from tflite_bench import host
from tflite_bench.errors import BenchError


def _status_mib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    raise OSError(f"{key} not in /proc/self/status")


def _reset_peak():
    """Resets VmHWM to the current RSS; True where the kernel allows it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_mib("VmHWM")
        return True
    except OSError:
        return False


def _rusage_peak_mib():
    import resource  # POSIX only; imported where needed

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def probe(path, threads=1, warmup=1, use_xnnpack=True):
    """Measures one model in this process; returns the JSON-able dict.

    Example:

    >>> probe("model.tflite")["delta_mib"]  # doctest: +SKIP
    3.4
    """
    np.random.default_rng(0)  # numpy.random loads lazily: load it before
    if _reset_peak():
        before = _status_mib("VmRSS")
        method = "VmHWM after clear_refs"
    else:
        before = _rusage_peak_mib()
        method = "getrusage ru_maxrss"
    interp = host.make_interpreter(path, threads, use_xnnpack)
    host.fill_inputs(interp)
    for _ in range(max(int(warmup), 1)):
        interp.invoke()
    peak = _status_mib("VmHWM") if method.startswith("VmHWM") else _rusage_peak_mib()
    return {
        "delta_mib": max(peak - before, 0.0),
        "before_mib": before,
        "peak_mib": peak,
        "method": method,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tflite_bench.memprobe")
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-xnnpack", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = probe(args.model, args.threads, args.warmup, not args.no_xnnpack)
    except (BenchError, ValueError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
