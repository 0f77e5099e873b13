"""The interleaved timer of allocated LiteRT interpreters (or anything with
`invoke()`): `time_rounds` times them side by side, round by round, so that
noise on a shared host hits them alike; `measure_latency_interleaved`
(`tflite_bench.host`) and `time_interleaved` (the latency tables of
`keras_evosynth.latency`, the benchmarks) both time with it.
"""

import time

import numpy as np


def time_rounds(interpreters, runs, rounds, progress=None, catch=(ValueError, RuntimeError)):
    """Per-invoke latencies (ms) of allocated interpreters timed side by
    side, round by round: the one interleaved timer of this host
    (`measure_latency_interleaved`, `time_interleaved`).

    Interpreter `i`'s `runs[i]` timed invokes are split into `rounds`
    rounds (round `r` gets `runs[i] // rounds + (r < runs[i] % rounds)`),
    and every round invokes each interpreter in turn, in order, so that
    noise on a shared host hits them alike.

    Args:
        interpreters: Allocated interpreters with their inputs set; None
            entries are skipped.
        runs: Timed invokes per interpreter.
        rounds: Rounds the invokes are split into.
        progress: Optional callable `progress(n)` told about invokes.
        catch: Exceptions of an invoke that stop only its interpreter
            (invoked no further); others propagate. `()`: all propagate.

    Returns:
        One entry per interpreter: its latencies in ms, in the order
        timed, or the exception that stopped it (None for a None entry).

    Example:

    >>> class Fake:
    ...     def invoke(self): pass
    >>> [t if t is None else len(t) for t in time_rounds([Fake(), None, Fake()], [5, 5, 2], 2)]
    [5, None, 2]
    """
    times = [None if interp is None else [] for interp in interpreters]
    for r in range(rounds):
        for i, interp in enumerate(interpreters):
            if not isinstance(times[i], list):
                continue
            n = runs[i] // rounds + (r < runs[i] % rounds)
            try:
                for _ in range(n):
                    start = time.perf_counter()
                    interp.invoke()
                    times[i].append((time.perf_counter() - start) * 1e3)
            except catch as e:
                times[i] = e
            if progress is not None:
                progress(n)
    return times


def time_interleaved(interpreters, rounds=5, budget_ms=15.0, warmup=3, max_runs=200):
    """Median invoke time (ms) of each interpreter, timed round by round.

    Each round invokes every interpreter in turn about `budget_ms` worth of
    times (at least 3, at most `max_runs`), so that machine noise hits them
    alike; the figure is the median over all rounds.

    Example:

    >>> class Fake:
    ...     def invoke(self): pass
    >>> [t < 1.0 for t in time_interleaved([Fake(), Fake()], rounds=2)]
    [True, True]
    """
    clock = time.perf_counter
    runs = []
    for interp in interpreters:
        start = clock()
        for _ in range(warmup):
            interp.invoke()
        each = (clock() - start) * 1e3 / max(warmup, 1)
        runs.append(int(min(max_runs, max(3, budget_ms / max(each, 1e-3)))))
    times = time_rounds(interpreters, [n * rounds for n in runs], rounds, catch=())
    return [float(np.median(t)) for t in times]
