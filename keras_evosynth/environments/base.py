"""The base of the environments: `Environment` (what `EvolutionCallback`
takes), the `Factors` one returns for each offspring, and how rollbacks
soften them (`_milder`) or an adaptive target carries its step across
generations (`adaptive_cut`).
"""

import dataclasses

from keras_evosynth import genetics


@dataclasses.dataclass
class Factors:
    """Environmental factors chosen for one offspring.

    Attributes:
        cluster_factor: `R_c`, or a list with one `R_c` per evolvable layer
            (latency targets).
        synapse_factor: `R_s`.
        target: The requested kept fraction of the parent's resource (None
            for constant factors).
        expected: The expected kept fraction at these factors (None when
            not computed).
        pressure: Latency targets: each layer's latency pressure `pi_l`.
        round_to: Live clusters of each layer rounded up to a multiple of
            this (None: no rounding).
        removed: Latency targets with `remove_branches`: names of the
            layers whose whole branch this offspring loses (factor 0).
        vanish: Whether a branch member the draws leave without a cluster
            takes its whole branch with it (`genetics.sample_masks`).
    """

    cluster_factor: float | list
    synapse_factor: float
    target: float | None = None
    expected: float | None = None
    pressure: list | None = None
    round_to: int | None = None
    removed: list | None = None
    vanish: bool = False


def _milder(value, mildness):
    """Halves the cut `1 - value` once per rollback."""
    if not mildness:
        return value
    return 1.0 - (1.0 - value) / 2.0**mildness


MAX_CUT = 0.9


def adaptive_cut(cut, history, grow=1.5, shrink=0.5, max_cut=MAX_CUT):
    """The cut `1 - kept fraction` after a lineage's accept/rollback history.

    Starting from `cut`, each accepted offspring (True) multiplies it by
    `grow`, each rollback (False) by `shrink`; never above `max_cut`.

    Args:
        cut: The first generation's cut, in (0, 1).
        history: Outcomes of the offspring trained so far, in order (the
            `accepted` field of the lineage records after generation 0).
        grow, shrink: Multipliers after an accepted offspring and after a
            rollback.
        max_cut: Upper bound of the cut.

    Example:

    >>> round(adaptive_cut(0.3, [True, True, False]), 4)   # 0.3 * 1.5 * 1.5 * 0.5
    0.3375
    >>> adaptive_cut(0.3, [True] * 9)
    0.9
    """
    for accepted in history:
        cut = min(cut * (grow if accepted else shrink), max_cut)
    return cut


def _check_fraction(value, name, upper_inclusive=True):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in (0, 1), got {value!r}.")
    value = float(value)
    ok = 0.0 < value <= 1.0 if upper_inclusive else 0.0 < value < 1.0
    if not ok:
        raise ValueError(
            f"{name} must be in (0, 1{']' if upper_inclusive else ')'}, got {value!r}."
        )
    return value


class Environment:
    """Base class of the environments: decides `R_c` and `R_s` for each
    offspring.

    `ConstantEnvironment` and `ResourceTarget` derive from it; so does an
    environment of your own, which implements `factors(...)` (returning
    `Factors`) and `get_config()` (the constructor's arguments). Register it
    with `keras.saving.register_keras_serializable` so that `get` rebuilds
    it from its config. `EvolutionCallback(environment=...)` takes any
    `Environment`.

    Attributes:
        resource: What `resource_model` measures (`"synapses"` by default).
        adaptive: True to receive `history=` in `factors` (see there).
        latency_table: The `LatencyTable` of a latency environment, or None.

    Example:

    >>> class Halving(Environment):   # R_c halves every generation
    ...     def factors(self, expected, current, ancestor, generation, generations,
    ...                 mildness=0):
    ...         return Factors(cluster_factor=0.5 ** generation, synapse_factor=1.0)
    ...     def get_config(self):
    ...         return {}
    >>> Halving().factors(None, 100, 100, generation=2, generations=3).cluster_factor
    0.25
    >>> Halving() == Halving(), repr(Halving())
    (True, 'Halving()')
    """

    resource = "synapses"
    latency_table = None

    def resource_model(self, model, genomes):
        """`(expected, current)`: the offspring's expected amount of
        `self.resource` as a function of the factors, and the parent's
        amount, for `factors(...)`.

        Args:
            model: The parent model.
            genomes: Its genomes (`genetics.genomes_from_model`).
        """
        return (
            genetics.expectation(genomes, self.resource),
            genetics.amount(genomes, self.resource),
        )

    adaptive = False

    def factors(self, expected, current, ancestor, generation, generations, mildness=0):
        """Returns the `Factors` for one offspring.

        Args:
            expected: `f(cluster_factor, synapse_factor) -> expected kept
                amount` of the offspring (see `genetics.expectation`).
            current: The parent's amount of `self.resource`.
            ancestor: The ancestor's amount.
            generation: The offspring's generation, 1-based.
            generations: Total generations of the lineage.
            mildness: Rollbacks so far for this generation (0 = none).

        Environments whose `adaptive` attribute is True also receive
        `history=`: the `accepted` outcome of every offspring trained so
        far (after generation 0), in order.
        """
        raise NotImplementedError

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
