"""The whole-model anchor curve: how the table reads a model's latency off
the summed costs of its ops. The anchors (the whole model timed at a few
fractions of its filters, `calibration`) give the least-squares line
(`_fit_anchors`: in-graph `scale` and fixed remainder) and the
piecewise-linear curve through their points (`_curve`); `_whole` predicts
a model's milliseconds from its op sum.
"""

import numpy as np


def _fit_anchors(anchors):
    """`(scale, remainder_ms)` of the least-squares line `whole = scale *
    grid + remainder` through the anchors; with one anchor, or a slope
    outside [0.25, 4] (noise on a model of a few microseconds), scale 1
    and the full model's difference.

    Example:

    >>> _fit_anchors([{"grid_ms": 2.0, "whole_ms": 2.1},
    ...               {"grid_ms": 1.0, "whole_ms": 0.9}])
    (1.2, -0.3)
    >>> _fit_anchors([{"grid_ms": 2.0, "whole_ms": 2.1}])
    (1.0, 0.1)
    """
    grid = np.array([a["grid_ms"] for a in anchors], np.float64)
    whole = np.array([a["whole_ms"] for a in anchors], np.float64)
    if len(anchors) >= 2 and np.ptp(grid) > 0:
        scale, remainder = np.polyfit(grid, whole, 1)
        if 0.25 <= scale <= 4.0:
            return round(float(scale), 12), round(float(remainder), 12)
    return 1.0, round(float(whole[0] - grid[0]), 12)


def _curve(points, scale):
    """The anchors' `(grid_ms, whole_ms)` points as `(grid, whole)` arrays
    sorted by `grid_ms`, each whole raised to the ones before it (so the
    curve never falls as the op sum grows and the environment's bisection on
    it stays monotone); None with fewer than two distinct `grid_ms`, or
    when the least-squares fit fell back to scale 1 (`_fit_anchors`: the
    anchors are noise), where `_whole` uses the line.

    Example:

    >>> grid, whole = _curve([(3.0, 3.5), (1.4, 1.4), (1.5, 1.3)], 1.3)
    >>> grid.tolist(), whole.tolist()
    ([1.4, 1.5, 3.0], [1.4, 1.4, 3.5])
    >>> _curve([(2.0, 2.1)], 1.3) is None
    True
    """
    grid = np.array([g for g, _ in points], np.float64)
    if scale == 1.0 or np.unique(grid).size < 2:
        return None
    order = np.argsort(grid, kind="stable")
    whole = np.array([w for _, w in points], np.float64)[order]
    return grid[order], np.maximum.accumulate(whole)


def _whole(anchor, total):
    """A model's predicted ms from its ops' summed costs `total`: on the
    anchors' piecewise-linear `curve` (`_curve`), continued beyond its
    outermost points with slope `scale`; the line `scale * total +
    remainder` without a curve; never below the empty model's `floor`.

    Example:

    >>> curve = _curve([(3.0, 3.5), (1.4, 1.4), (1.2, 0.6)], 1.3)
    >>> [round(_whole((1.3, -0.5, 0.01, curve), g), 4) for g in (3.0, 2.2, 1.3, 4.0, 1.0)]
    [3.5, 2.45, 1.0, 4.8, 0.34]
    >>> _whole((1.3, -0.5, 0.01, None), 2.0)
    2.1
    """
    scale, remainder, floor, curve = anchor
    if curve is None:
        return max(scale * total + remainder, floor)
    grid, whole = curve
    if total < grid[0]:
        value = whole[0] + scale * (total - grid[0])
    elif total > grid[-1]:
        value = whole[-1] + scale * (total - grid[-1])
    else:
        value = np.interp(total, grid, whole)
    return max(float(value), floor)
