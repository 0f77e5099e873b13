"""How a latency target allocates its cut over the layers, from the costs a
`LatencyExpectation` reads off the latency table: each layer's latency
pressure (`pressures`: latency saved per unit of heredity strength lost),
the per-layer cluster factors at a strength `lambda` (`layer_factors`),
the floors that cap a layer's cut in one generation (`layer_floors`) and
the whole branches worth removing first (`branch_removals`).
`LatencyTarget` bisects `lambda`; docs/latency.md
writes the formulas out.
"""

import math

import numpy as np

from keras_evosynth import genetics
from keras_evosynth.environments._solvers import _bisect

# The smallest per-layer cluster factor a latency target sets in one generation.
MIN_LAYER_FACTOR = 0.5


def pressures(savings, p_c, genomes, floor=0.0, importance=None):
    """Latency pressure of each layer: saving per unit of strength lost.

    `pi_l = max(s_l, 0) / (v_l * a_l)`, with `s_l` the latency saved per
    filter removed (`LatencyExpectation.savings`), `v_l` the mean heredity
    `p_c` of the layer's live filters (the strength a removed filter takes
    with it, in the layer's own normalised units) and `a_l` the layer's
    accuracy sensitivity: with `importance` (per-cluster Taylor importance,
    `sensitivity.taylor_importance`), the mean importance of its live
    filters over the mean of all sampled layers' (at least 0.001), else 1.
    Scaled so the largest is 1, then raised to at least `floor` for every
    sampled layer. Protected layers get 0.

    Example:

    >>> import numpy as np
    >>> from keras_evosynth import quantizers
    >>> g = genetics.Genome("a", np.ones((1, 2)), np.ones((1, 2), bool),
    ...                     np.ones(2, bool), quantizers.get(8), input_axis=0)
    >>> pressures([2.0, 1.0], [np.array([1.0, 1.0]), np.array([0.5, 0.5])],
    ...           [g, g]).tolist()
    [1.0, 1.0]
    """
    values, _ = _raw_pressures(savings, p_c, genomes, importance)
    top = values.max() if values.size else 0.0
    values = values / top if top > 0 else values
    sampled = np.array([not g.protected for g in genomes])
    return np.where(sampled, np.maximum(values, floor), 0.0)


def _raw_pressures(savings, p_c, genomes, importance):
    """`(s_l / (v_l a_l) per layer before scaling, a_l)` of `pressures`
    (0 for protected layers and layers without live filters)."""
    sensitivity = _sensitivity(importance, p_c, genomes)
    values = []
    for s, p, g, a in zip(savings, p_c, genomes, sensitivity, strict=True):
        live = p[p > 0]
        values.append(0.0 if g.protected or live.size == 0 else max(s, 0.0) / (live.mean() * a))
    return np.asarray(values, dtype=np.float64), sensitivity


def branch_removals(expected, target, keep_filters, savings=None):
    """The whole branches a latency target removes this generation.

    Every removable branch (`genetics.branches`) still alive is priced at
    the parent: `rho_b = (f(parent) - f(parent without b)) / (sum_c p_c *
    a_t)`, the expected predicted latency it saves per unit of strength lost
    (`p_c` over the live filters of its terminal `t`, `a_t` the terminal's
    sensitivity as in `pressures`). Branches are taken greedily by
    decreasing `rho_b` while `rho_b` beats the best per-filter trim (the
    largest `s_l / (v_l a_l)` of `pressures`, before scaling), the
    expected latency is still above `target` (ms) and the offspring keeps
    at least `keep_filters` of the parent's sampled filters. `savings`:
    `expected.savings()` when the caller has it already.

    Returns:
        Sorted genome indices of the removed branches' members.
    """
    genomes, p_c = expected.genomes, expected.p_c
    base = [(p > 0).astype(np.float64) for p in p_c]
    current = expected.at_odds(base)
    raw, sensitivity = _raw_pressures(
        expected.savings() if savings is None else savings, p_c, genomes, expected.importance)
    trim = raw.max() if raw.size else 0.0

    def without(odds, members):
        return [np.zeros_like(o) if i in members else o for i, o in enumerate(odds)]

    choices = []
    for terminal, members in genetics.branches(genomes).items():
        if not all(base[m].any() for m in members):
            continue  # already (partly) gone
        strength = float(p_c[terminal][p_c[terminal] > 0].sum()) * sensitivity[terminal]
        rho = (current - expected.at_odds(without(base, members))) / max(strength, 1e-12)
        choices.append((-rho, terminal, members))
    removed, odds, latency = set(), list(base), current
    for negative_rho, _, members in sorted(choices):
        if -negative_rho <= trim or latency <= target:
            break
        trial = without(odds, members)
        if expected.kept_filters_at(trial) < keep_filters:
            continue
        odds, latency = trial, expected.at_odds(trial)
        removed.update(members)
    return sorted(removed)


def _sensitivity(importance, p_c, genomes):
    """`a_l` of `pressures`: each sampled layer's mean live-filter importance
    relative to the mean over sampled layers (1 without `importance`).

    >>> from keras_evosynth import quantizers
    >>> g = genetics.Genome("a", np.ones((1, 2)), np.ones((1, 2), bool),
    ...                     np.ones(2, bool), quantizers.get(8), input_axis=0)
    >>> _sensitivity([np.array([1.0, 3.0]), np.array([0.0, 6.0])],
    ...              [np.array([1.0, 1.0]), np.array([0.0, 1.0])], [g, g]).tolist()
    [0.5, 1.5]
    """
    if importance is None:
        return np.ones(len(genomes))
    means = np.array([
        float(np.mean(np.asarray(i)[p > 0])) if not g.protected and (p > 0).any() else np.nan
        for i, p, g in zip(importance, p_c, genomes, strict=True)
    ])
    reference = np.nanmean(means) if np.isfinite(means).any() else np.nan
    if not reference > 0:
        return np.ones(len(genomes))
    return np.where(np.isfinite(means), np.maximum(means / reference, 1e-3), 1.0)


def layer_factors(pressure, strength, floors=None):
    """Per-layer cluster factors `R_l = max(F_l, e * exp(-lambda * pi_l))`.

    A filter `c` of layer `l` then survives with `min(1, exp(S_c / Z_c -
    lambda * pi_l))`: its heredity minus the price of its latency, the
    Lagrangian relaxation of the knapsack "keep the most strength within the
    latency budget" (HALP). `lambda = strength` is solved by bisection. No
    factor goes below its floor `F_l` in one generation (default
    `MIN_LAYER_FACTOR`, 0.5: a layer keeps at least 18 to 50 % of its
    filters in expectation; `layer_floors` gives floors that cap each
    layer's cut): past that point the layers with less pressure are cut
    instead.

    Example:

    >>> [round(r, 4) for r in layer_factors([1.0, 0.0, 0.5], 1.0)]
    [1.0, 2.7183, 1.6487]
    >>> layer_factors([1.0], 10.0)
    [0.5]
    >>> layer_factors([1.0, 1.0], 10.0, floors=[0.5, 0.9])
    [0.5, 0.9]
    """
    if floors is None:
        floors = [MIN_LAYER_FACTOR] * len(pressure)
    return [float(min(genetics.MAX_FACTOR, max(f, math.e * math.exp(-strength * p))))
            for p, f in zip(pressure, floors, strict=True)]


def layer_floors(p_c, genomes, max_cut, iterations=50):
    """Per-genome factor floors that cap each layer's cut in one generation.

    Floor `F_l` is the smallest cluster factor at which layer `l` keeps, in
    expectation, `1 - max_cut` of its live filters: `mean_c min(1, F_l p_c)
    = 1 - max_cut` over its live filters `c` (bisection), never below
    `MIN_LAYER_FACTOR`. Protected layers (and layers without live filters)
    get `MIN_LAYER_FACTOR`, which their odds ignore.

    Example: two live filters with odds 0.5 and 1 keep 0.75 in expectation
    at factor 1; keeping at least 0.9 needs `F = 1.6` (0.8 + 1 = 1.8 of 2).

    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> g = SimpleNamespace(protected=False)
    >>> round(layer_floors([np.array([0.5, 1.0, 0.0])], [g], 0.1)[0], 4)
    1.6
    >>> layer_floors([np.array([0.5, 1.0])], [g], 0.9)
    [0.5]
    """
    if not 0.0 < float(max_cut) < 1.0:
        raise ValueError(f"max_cut must be in (0, 1), got {max_cut!r}.")
    keep = 1.0 - float(max_cut)
    floors = []
    for p, g in zip(p_c, genomes, strict=True):
        live = np.asarray(p, np.float64)
        live = live[live > 0]
        if g.protected or not live.size:
            floors.append(MIN_LAYER_FACTOR)
            continue
        floors.append(float(_bisect(
            lambda r, live=live: float(np.minimum(1.0, r * live).mean()), keep,
            MIN_LAYER_FACTOR, genetics.MAX_FACTOR, 1e-9, iterations, increasing=True)))
    return floors
