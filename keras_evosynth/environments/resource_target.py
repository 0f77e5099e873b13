"""`ResourceTarget`: solves, each generation, for the factors that make the
offspring's expected synapses, MACs or predicted latency a requested
fraction of the parent's (or reach a final budget); a latency target
allocates its cut per layer (`latency_target`).
"""

import math
import warnings

import keras

from keras_evosynth import genetics
from keras_evosynth.environments._solvers import _SOLVE, solve_decreasing, solve_factor
from keras_evosynth.environments.base import (
    Environment,
    Factors,
    _check_fraction,
    _milder,
    adaptive_cut,
)
from keras_evosynth.environments.latency_target import (
    MIN_LAYER_FACTOR,
    branch_removals,
    layer_factors,
    layer_floors,
    pressures,
)
from keras_evosynth.latency.table import LatencyTable
from keras_evosynth.lineage import AMOUNT_FIELD

RESOURCES = tuple(AMOUNT_FIELD)  # the resources an environment restricts


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"ResourceTarget: {name} must be an int >= 1, got {value!r}.")
    return value


def _bool(value, name):
    if not isinstance(value, bool):
        raise TypeError(f"ResourceTarget: {name} must be True or False, got {value!r}.")
    return value


@keras.saving.register_keras_serializable(package="keras_evosynth")
class ResourceTarget(Environment):
    """Solves for the factor so each offspring lands near a resource target.

    Give exactly one of:

    - `fraction`: every offspring keeps about this fraction of its parent's
      synapses/MACs/latency (e.g. 0.7);
    - `budget`: the lineage ends near this fraction of the ancestor's
      amount after all generations; each generation takes the equal
      ratio `(budget * ancestor / current) ** (1 / generations_left)`.

    `resource="latency"` is `LatencyTarget`'s: build that one, whose
    arguments are the ones that apply to latency (this class takes them too,
    for the configs of saved lineages, and warns).

    Args:
        fraction: Per-generation kept fraction in (0, 1).
        budget: Final fraction of the ancestor in (0, 1).
        resource: `"synapses"` or `"macs"` (`"latency"`: `LatencyTarget`).
        solve: `"both"` (`R_c = R_s`), `"cluster"` or `"synapse"`: which
            factor is solved for (the other stays at `fixed_factor`).
        tolerance: Relative tolerance of the bisection.
        fixed_factor: With `solve="cluster"` or `"synapse"`, the value of the
            other factor, in (0, e]. 1 is the paper's probability; `math.e`
            with `solve="cluster"` keeps every synapse of a surviving cluster
            (p clipped at 1), i.e. pure filter-level synthesis: the kind of
            pruning that compaction turns into speed. None: 1.
        adaptive: Carry the step across generations: the cut `1 - f` of the
            target fraction `f` is multiplied by `grow` after every accepted
            offspring and by `shrink` after every rollback, over the whole
            lineage (`adaptive_cut`, at most `MAX_CUT` = 0.9), instead of
            being halved per rollback and reset each generation.
        grow, shrink: The adaptive step's multipliers (`grow` >= 1,
            `shrink` in (0, 1)).
        vanish: Layers the graph lets disappear may (any resource): a
            removable branch member (`genetics.branches`) whose draws leave
            no filter is not given one back, and its whole branch vanishes
            (`genetics.sample_masks(vanish=True)`); compaction removes the
            ops and the latency table prices them at 0. False: the paper's
            guard, every layer keeps at least one filter.

    Example:

    >>> env = ResourceTarget(fraction=0.5)
    >>> f = env.factors(lambda c, s: 100 * s, current=100, ancestor=100,
    ...                 generation=1, generations=2)
    >>> round(f.synapse_factor, 2), round(f.expected, 2)
    (0.5, 0.5)
    """

    def __init__(
        self,
        fraction=None,
        budget=None,
        resource="synapses",
        solve="both",
        tolerance=1e-3,
        fixed_factor=None,
        latency_table=None,
        round_to=None,
        min_pressure=0.05,
        max_layer_cut=None,
        adaptive=False,
        grow=1.5,
        shrink=0.5,
        sensitivity_data=None,
        sensitivity_batches=4,
        remove_branches=False,
        vanish=False,
    ):
        if (fraction is None) == (budget is None):
            raise ValueError(
                "ResourceTarget: give exactly one of `fraction` (per generation) "
                f"or `budget` (final), got fraction={fraction!r}, budget={budget!r}."
            )
        self.fraction = (
            None
            if fraction is None
            else _check_fraction(fraction, "ResourceTarget fraction", False)
        )
        self.budget = (
            None if budget is None else _check_fraction(budget, "ResourceTarget budget", False)
        )
        if resource not in RESOURCES:
            raise ValueError(
                f"ResourceTarget: resource must be one of {RESOURCES}, got {resource!r}."
            )
        if solve not in _SOLVE:
            raise ValueError(f"ResourceTarget: solve must be one of {_SOLVE}, got {solve!r}.")
        if not 0.0 < float(tolerance) < 0.5:
            raise ValueError(f"ResourceTarget: tolerance must be in (0, 0.5), got {tolerance!r}.")
        latency = resource == "latency"
        if latency and type(self) is ResourceTarget:
            warnings.warn("ResourceTarget(resource='latency', ...) is LatencyTarget(latency_table, "
                          "...): build that one; this form stays for saved configs.",
                          DeprecationWarning, stacklevel=2)
        if fixed_factor is None:
            fixed_factor = genetics.MAX_FACTOR if latency else 1.0
        self.fixed_factor = genetics.check_factor(fixed_factor, "ResourceTarget fixed_factor")
        if solve == "both" and self.fixed_factor != 1.0 and not latency:
            raise ValueError(
                "ResourceTarget: fixed_factor only applies with solve='cluster' or "
                f"'synapse', got solve='both' and fixed_factor={fixed_factor!r}."
            )
        if latency and latency_table is None:
            raise ValueError(
                "LatencyTarget needs a latency_table: measure one with "
                "keras_evosynth.LatencyTable.measure(model) (or give its JSON path)."
            )
        if not latency and (latency_table is not None or round_to is not None
                            or max_layer_cut is not None):
            raise ValueError(
                "ResourceTarget: latency_table, round_to and max_layer_cut only apply to "
                "LatencyTarget."
            )
        if max_layer_cut is not None:
            max_layer_cut = _check_fraction(max_layer_cut, "ResourceTarget max_layer_cut", False)
        if round_to is not None:
            _positive_int(round_to, "round_to")
        if isinstance(min_pressure, bool) or not 0.0 <= float(min_pressure) <= 1.0:
            raise ValueError(
                f"ResourceTarget: min_pressure must be in [0, 1], got {min_pressure!r}."
            )
        _bool(adaptive, "adaptive")
        for name, value, ok, rule in (("grow", grow, lambda v: v >= 1.0, ">= 1"),
                                      ("shrink", shrink, lambda v: 0.0 < v < 1.0, "in (0, 1)")):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
                raise ValueError(f"ResourceTarget: {name} must be a number {rule}, got {value!r}.")
        self.adaptive, self.grow, self.shrink = adaptive, float(grow), float(shrink)
        if sensitivity_data is not None and not latency:
            raise ValueError("ResourceTarget: sensitivity_data only applies to LatencyTarget.")
        self.sensitivity_data = sensitivity_data
        _bool(remove_branches, "remove_branches")
        if remove_branches and not latency:
            raise ValueError("ResourceTarget: remove_branches only applies to LatencyTarget.")
        self.remove_branches = remove_branches
        self.vanish = _bool(vanish, "vanish")
        self.sensitivity_batches = _positive_int(sensitivity_batches, "sensitivity_batches")
        self.latency_table = None if latency_table is None else _table(latency_table)
        self.round_to = round_to
        self.min_pressure = float(min_pressure)
        self.max_layer_cut = max_layer_cut
        self.resource = resource
        self.solve = solve
        self.tolerance = float(tolerance)

    def target_fraction(self, current, ancestor, generation, generations):
        """The kept fraction of the parent wanted for this generation."""
        if self.fraction is not None:
            return self.fraction
        left = max(1, generations - generation + 1)
        if current <= 0:
            return 1.0
        return min(1.0, (self.budget * ancestor / current) ** (1.0 / left))

    def resource_model(self, model, genomes):
        if self.resource != "latency":
            return super().resource_model(model, genomes)
        expected = self.latency_table.expectation(model, genomes)
        if self.sensitivity_data is not None:
            from keras_evosynth.sensitivity import taylor_importance

            expected.importance = taylor_importance(
                model, self.sensitivity_data, batches=self.sensitivity_batches)
        return expected, expected.current

    def factors(self, expected, current, ancestor, generation, generations, mildness=0,
                history=()):
        result = self._factors(expected, current, ancestor, generation, generations, mildness,
                               history)  # fmt: skip
        result.vanish = self.vanish
        return result

    def _factors(self, expected, current, ancestor, generation, generations, mildness, history):
        wanted = self.target_fraction(current, ancestor, generation, generations)
        if self.adaptive:
            wanted = 1.0 - adaptive_cut(1.0 - wanted, history, self.grow, self.shrink)
        else:
            wanted = _milder(wanted, mildness)
        if current <= 0:
            return Factors(1.0, 1.0, wanted, None)
        if self.resource == "latency":
            return self._latency_factors(expected, wanted, current)
        r_c, r_s = solve_factor(
            expected, wanted * current, self.solve, self.tolerance, fixed=self.fixed_factor
        )
        return Factors(r_c, r_s, wanted, expected(r_c, r_s) / current)

    def _latency_factors(self, expected, wanted, current):
        savings = expected.savings()
        pressure = pressures(
            savings, expected.p_c, expected.genomes, self.min_pressure,
            importance=expected.importance,
        )

        floors = (None if self.max_layer_cut is None else
                  layer_floors(expected.p_c, expected.genomes, self.max_layer_cut))
        removed = (branch_removals(expected, wanted * current, wanted, savings)
                   if self.remove_branches else [])

        def factors_at(strength):
            factors = layer_factors(pressure, strength, floors)
            for index in removed:
                factors[index] = 0.0
            return factors

        def at(strength):
            return expected(factors_at(strength))

        # Factors stop at their floors (>= MIN_LAYER_FACTOR); lambda may grow until every sampled
        # layer (even the least pressed) is there, but no further than where
        # the offspring would keep fewer than `wanted` of the parent's filters:
        # a generation never loses more filters than the latency it must shed.
        positive = [p for p in pressure if p > 0]
        high = (1.0 - math.log(MIN_LAYER_FACTOR)) / (min(positive) if positive else 1.0)
        filters = expected.kept_filters
        if filters(factors_at(high)) < wanted:
            high = solve_decreasing(
                lambda s: filters(factors_at(s)), wanted, self.tolerance, high=high)
        strength = solve_decreasing(at, wanted * current, self.tolerance, high=high)
        factors = factors_at(strength)
        return Factors(
            factors,
            self.fixed_factor,
            wanted,
            at(strength) / current,
            pressure=[float(p) for p in pressure],
            round_to=self.round_to,
            removed=[expected.genomes[i].name for i in removed] if self.remove_branches else None,
        )

    def get_config(self):
        config = {
            "fraction": self.fraction,
            "budget": self.budget,
            "resource": self.resource,
            "solve": self.solve,
            "tolerance": self.tolerance,
            "fixed_factor": self.fixed_factor,
        }
        if self.adaptive:
            config.update(adaptive=True, grow=self.grow, shrink=self.shrink)
        if self.vanish:
            config.update(vanish=True)
        if self.sensitivity_data is not None:
            config.update(sensitivity_batches=self.sensitivity_batches)
        if self.resource == "latency":
            table = self.latency_table
            config.update(
                latency_table=table.path if table.path else table.to_dict(),
                round_to=self.round_to,
                min_pressure=self.min_pressure,
            )
            if self.max_layer_cut is not None:
                config.update(max_layer_cut=self.max_layer_cut)
            if self.remove_branches:
                config.update(remove_branches=True)
        return config

    @classmethod
    def from_config(cls, config):
        """A latency config (as saved lineages hold it) gives a `LatencyTarget`."""
        if cls is ResourceTarget and config.get("resource") == "latency":
            return LatencyTarget.from_config(config)
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_evosynth")
class LatencyTarget(ResourceTarget):
    """Solves per-layer factors so that each offspring lands near a predicted
    int8 latency (`ResourceTarget` for `resource="latency"`).

    Give exactly one of `fraction` (every offspring keeps about this
    fraction of its parent's predicted latency) or `budget` (the lineage
    ends near this fraction of the ancestor's). The amount is the int8
    latency that `latency_table` predicts for the compacted offspring, and
    the environment solves *per-layer* cluster factors: layer `l` gets
    `R_l = max(0.5, e * exp(-lambda * pi_l))`, `pi_l` its latency pressure (latency
    saved per filter removed, per unit of heredity strength lost, scaled to
    a maximum of 1; `latency_target.pressures`), and `lambda` is bisected so that
    the expected predicted latency hits the target. A filter `c` of layer
    `l` thus survives with `min(1, exp(S_c / Z_c - lambda * pi_l))`: the
    paper's heredity minus the price of the latency it costs (docs/
    latency.md writes it out). `lambda` stops where the offspring would keep
    fewer than `fraction` of the parent's filters (in expectation): when the
    latency left is mostly fixed cost, a generation sheds what it can
    without losing more filters than a MAC target would allow.

    Serialized as `ResourceTarget(resource="latency", ...)` is, so the
    configs of saved lineages match either way.

    Args:
        latency_table: A `LatencyTable`, the path of its JSON file or its
            `to_dict()`.
        fraction: Per-generation kept fraction in (0, 1).
        budget: Final fraction of the ancestor in (0, 1).
        round_to: Round each layer's live filters up to a
            multiple of this (e.g. 8, XNNPACK's tile width); None: no rounding.
        min_pressure: The smallest pressure of a sampled
            layer, so layers whose filters save no time still shed some
            (0 never cuts them).
        max_layer_cut: The largest fraction of a layer's
            live filters one generation may remove in expectation (each
            layer's factor floor from `latency_target.layer_floors`), so the
            pressure spreads over more layers instead of gutting the few
            that cost the most; None: only the `MIN_LAYER_FACTOR` floor.
        sensitivity_data: `(x, y)` training samples; each
            generation the parent's per-filter Taylor importance is measured
            on `sensitivity_batches` batches of 32 (`sensitivity.
            taylor_importance`, the model must be compiled) and a layer's
            pressure is divided by its mean importance relative to the other
            layers': layers that carry the accuracy are cut less for the
            same latency saved. The data are not part of the config (only
            `sensitivity_batches` is); None: heredity alone.
        sensitivity_batches: Batches of `sensitivity_data` per generation.
        remove_branches: Before the per-filter allocation,
            remove whole branches (`genetics.branches`: an inception module's
            1x1, 5x5 or pool branch, with its reduction) whose expected
            latency saved per unit of strength lost beats the best filter
            trim, while the latency is above the target and the offspring
            keeps `fraction` of the filters (`latency_target.branch_removals`). On
            XNNPACK, thin filters cost latency mostly per op, so removing an
            op is the big lever. False: every layer keeps a filter.
        tolerance, adaptive, grow, shrink, vanish: As for `ResourceTarget`.
        fixed_factor: The synapse factor in (0, e]; None: `e`, so that a
            kept filter keeps every synapse (a cut inside a filter saves no
            time).
    """

    def __init__(self, latency_table, fraction=None, budget=None, tolerance=1e-3,
                 fixed_factor=None, round_to=None, min_pressure=0.05, max_layer_cut=None,
                 adaptive=False, grow=1.5, shrink=0.5, sensitivity_data=None,
                 sensitivity_batches=4, remove_branches=False, vanish=False):
        super().__init__(
            fraction=fraction, budget=budget, resource="latency", tolerance=tolerance,
            fixed_factor=fixed_factor, latency_table=latency_table, round_to=round_to,
            min_pressure=min_pressure, max_layer_cut=max_layer_cut, adaptive=adaptive,
            grow=grow, shrink=shrink, sensitivity_data=sensitivity_data,
            sensitivity_batches=sensitivity_batches, remove_branches=remove_branches,
            vanish=vanish)

    @classmethod
    def from_config(cls, config):
        return cls(**{k: v for k, v in config.items() if k not in ("resource", "solve")})


def _table(value):
    if isinstance(value, LatencyTable):
        return value
    if isinstance(value, dict):
        return LatencyTable.from_dict(value)
    if isinstance(value, str):
        return LatencyTable.load(value)
    raise TypeError(
        f"ResourceTarget: latency_table must be a LatencyTable, its JSON path or its "
        f"to_dict(), got {type(value).__name__}."
    )
