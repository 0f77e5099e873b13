"""The bisections the environments solve with: `solve_factor` (the factor
whose expectation hits a target), `solve_decreasing` (the latency target's
strength) and `_bisect` under both (and under `latency_target.layer_floors`).
"""

import math

from keras_evosynth import genetics

_SOLVE = ("both", "cluster", "synapse")


def solve_factor(expected, target, solve="both", tolerance=1e-3, iterations=60, fixed=1.0):
    """Bisection for the factor whose expectation hits `target`.

    Args:
        expected: `f(cluster_factor, synapse_factor) -> amount`, increasing
            in both factors.
        target: The amount wanted.
        solve: Which factor varies: `"both"` (`R_c = R_s = R`), `"cluster"`
            (`R_s = fixed`) or `"synapse"` (`R_c = fixed`).
        tolerance: Stop when within this relative error of `target`.
        iterations: Maximum bisection steps.
        fixed: The value of the factor that is not solved for.

    Returns:
        `(cluster_factor, synapse_factor)`; the nearest bound when `target`
        is out of reach.

    Example:

    >>> r_c, r_s = solve_factor(lambda c, s: 10 * c * s, 2.5)
    >>> round(r_c, 3), round(r_s, 3)
    (0.5, 0.5)
    """
    if solve not in _SOLVE:
        raise ValueError(f"solve must be one of {_SOLVE}, got {solve!r}.")

    def pair(r):
        return (r if solve != "synapse" else fixed, r if solve != "cluster" else fixed)

    # Factors span orders of magnitude: geometric midpoints.
    return pair(_bisect(lambda r: expected(*pair(r)), target, 1e-6, genetics.MAX_FACTOR,
                        tolerance, iterations, increasing=True, geometric=True))


def _bisect(f, target, low, high, tolerance, iterations, increasing, geometric=False):
    """`x` in `[low, high]` with `f(x)` within `tolerance` (relative) of
    `target`, `f` monotone; the nearer bound when `target` is out of reach."""
    largest, smallest = (high, low) if increasing else (low, high)
    if f(largest) <= target:
        return largest
    if f(smallest) >= target:
        return smallest
    for _ in range(iterations):
        middle = math.sqrt(low * high) if geometric else 0.5 * (low + high)
        value = f(middle)
        if abs(value - target) <= tolerance * target:
            return middle
        if (value < target) == increasing:
            low = middle
        else:
            high = middle
    return math.sqrt(low * high) if geometric else 0.5 * (low + high)


def solve_decreasing(f, target, tolerance=1e-3, high=30.0, iterations=60):
    """Bisection for `x >= 0` with `f(x) = target`, `f` decreasing in `x`.

    Returns the nearest bound (0 or `high`) when `target` is out of reach.

    Example:

    >>> round(solve_decreasing(lambda x: 10 - x, 4.0), 2)
    6.0
    """
    return _bisect(f, target, 0.0, high, tolerance, iterations, increasing=False)
