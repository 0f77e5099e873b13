"""Command line: `python -m tflite_bench a.tflite b.tflite ... [options]`.

Prints the comparison table on stdout (progress on stderr), optionally
writes JSON and a bar plot. Exit status: 0 when every model was measured,
1 when any failed (the table still shows the others), 2 on bad usage.
"""

import argparse
import sys

from tflite_bench.bench import compare
from tflite_bench.device import DEFAULT_DEVICE_DIR
from tflite_bench.errors import BenchError
from tflite_bench.quiet import quiet_startup


def _threads(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"--threads takes comma-separated integers >= 1, got {text!r}"
        )
    return values


def _positive(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {minimum}, got {text!r}"
            )
        return value

    return parse


def build_parser():
    """The argument parser (dashes and underscores both accepted in flags).

    Example:

    >>> build_parser().parse_args(["a.tflite", "--threads", "1,4"]).threads
    [1, 4]
    """
    p = argparse.ArgumentParser(
        prog="python -m tflite_bench",
        description="Measure .tflite models side by side (first = baseline): "
        "latency, memory, size, int8/float operator counts, accuracy.",
    )
    p.add_argument("models", nargs="+", help=".tflite files, baseline first")
    p.add_argument("--threads", type=_threads, default=[1],
                   help="comma-separated thread counts (default 1)")
    p.add_argument("--runs", type=_positive(1), default=100,
                   help="timed invokes per model and thread count (default 100)")
    p.add_argument("--warmup", type=_positive(0), default=10,
                   help="untimed invokes first (default 10)")
    p.add_argument("--data", help=".npz with x (examples) and y (labels)")
    p.add_argument("--max-samples", "--max_samples", type=_positive(1),
                   dest="max_samples", help="use only the first N examples")
    p.add_argument("--names", help="comma-separated display names")
    p.add_argument("--json", help="write the report as JSON here")
    p.add_argument("--plot", help="write a bar plot here (needs matplotlib)")
    p.add_argument("--no-memory", "--no_memory", dest="memory",
                   action="store_false", help="skip the memory probe")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--verbose", action="store_true",
                   help="show LiteRT's native log lines (hidden by default)")
    p.add_argument("--litert-benchmark", "--litert_benchmark",
                   dest="litert_benchmark", action="store_true",
                   help="time with python -m "
                   "ai_edge_litert.tools.benchmark_litert_model")
    p.add_argument("--adb", metavar="SERIAL",
                   help="run benchmark_model on this Android device")
    p.add_argument("--benchmark-binary", "--benchmark_binary",
                   dest="benchmark_binary", metavar="PATH",
                   help="local benchmark_model binary to push (with --adb)")
    p.add_argument("--adb-path", "--adb_path", dest="adb_path", default="adb",
                   help="adb program (default: adb on PATH)")
    p.add_argument("--device-dir", "--device_dir", dest="device_dir",
                   default=DEFAULT_DEVICE_DIR, help="device directory for files")
    p.add_argument("--use-xnnpack", "--use_xnnpack", dest="use_xnnpack",
                   action=argparse.BooleanOptionalAction, default=True,
                   help="XNNPACK delegate (default on)")
    p.add_argument("--use-gpu", "--use_gpu", dest="use_gpu",
                   action=argparse.BooleanOptionalAction, default=False,
                   help="GPU delegate (--litert-benchmark or --adb only)")
    return p


def main(argv=None, runner=None):
    """Runs the CLI; returns the exit status.

    Args:
        argv: Arguments (default `sys.argv[1:]`).
        runner: External-command runner for the tool/device backends (tests).

    Example:

    >>> main(["missing.tflite", "--quiet", "--no-memory"])
    error: missing.tflite: file not found
    1
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    # LiteRT's log lines hidden unless --verbose (inherited by the memory probes)
    quiet_startup(["--verbose"] if args.verbose else [], import_tensorflow=False)
    if args.litert_benchmark and args.adb:
        parser.error("choose one of --litert-benchmark and --adb")
    if args.adb and not args.benchmark_binary:
        parser.error("--adb needs --benchmark-binary PATH (see docs/tflite_bench.md)")
    if args.benchmark_binary and not args.adb:
        parser.error("--benchmark-binary needs --adb SERIAL")
    backend = "adb" if args.adb else (
        "litert-tool" if args.litert_benchmark else "interpreter")
    names = args.names.split(",") if args.names else None
    try:
        report = compare(
            args.models, threads=args.threads, runs=args.runs,
            warmup=args.warmup, data=args.data, max_samples=args.max_samples,
            names=names, backend=backend, use_xnnpack=args.use_xnnpack,
            use_gpu=args.use_gpu, memory=args.memory, adb_serial=args.adb,
            benchmark_binary=args.benchmark_binary, adb=args.adb_path,
            device_dir=args.device_dir, runner=runner,
            progress=not args.quiet,
        )
    except ValueError as e:
        parser.error(str(e))
    except BenchError as e:
        print(f"tflite_bench: error: {e}", file=sys.stderr)
        return 1
    print(report.table())
    status = 0 if report.ok else 1
    if args.json:
        report.to_json(args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        try:
            report.plot(args.plot)
            print(f"wrote {args.plot}", file=sys.stderr)
        except BenchError as e:
            print(f"tflite_bench: error: {e}", file=sys.stderr)
            status = 1
    return status
