"""Natural selection's rules.

`EvolutionCallback` (callbacks.py) runs the lifecycle inside `model.fit`;
what it decides after every retraining lives here, as plain logic on
numbers and records:

`Selection`: how fitness compares (`mode`), whether an offspring is kept
(`tolerance` against the ancestor), when rollbacks run out
(`max_rollbacks`), when the lineage has reached `stop_when`, and which of
several candidates is the fittest. (The record each offspring leaves is
`lineage.generation_record`.)

Example:

>>> rules = Selection("max", tolerance=2.0, max_rollbacks=1, stop_when={"synapses": 0.5})
>>> rules.accepts(fitness=61.0, ancestor_fitness=62.5), rules.accepts(59.0, 62.5)
(True, False)
>>> rules.exhausted(attempt=2)
True
>>> rules.stop_reached({"synapses": 40}, {"synapses": 100})
True
"""

from keras_evosynth.environments.base import _check_fraction
from keras_evosynth.lineage import RESOURCES


class Selection:
    """Accept / roll back / stop rules of a lineage.

    Args:
        mode: `"min"` or `"max"`: whether lower or higher fitness is better.
        tolerance: An offspring whose fitness is worse than the ancestor's
            by more than this is rolled back; None: every offspring is kept.
        max_rollbacks: Rollbacks allowed per generation.
        stop_when: `{resource: fraction of the ancestor}` or a callable
            `record -> bool`, or None.
    """

    def __init__(self, mode, tolerance=None, max_rollbacks=2, stop_when=None):
        if mode not in ("min", "max"):
            raise ValueError(f"EvolutionCallback: mode must be 'min' or 'max', got {mode!r}.")
        if tolerance is not None:
            if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)):
                raise TypeError(
                    f"EvolutionCallback: tolerance must be a number, got {tolerance!r}."
                )
            if not tolerance >= 0:
                raise ValueError(f"EvolutionCallback: tolerance must be >= 0, got {tolerance!r}.")
        self.mode = mode
        self.tolerance = None if tolerance is None else float(tolerance)
        self.max_rollbacks = max_rollbacks
        self.stop_when = _check_stop_when(stop_when)

    def worse_by(self, fitness, reference):
        """How much worse `fitness` is than `reference` (negative: better)."""
        return fitness - reference if self.mode == "min" else reference - fitness

    def better(self, fitness, than):
        """True when `fitness` beats `than` (None: anything does)."""
        return than is None or self.worse_by(fitness, than) < 0

    def fittest(self, fitnesses):
        """The index of the best of `fitnesses` (the first of equals)."""
        best = 0
        for index, fitness in enumerate(fitnesses):
            if self.better(fitness, fitnesses[best]):
                best = index
        return best

    def accepts(self, fitness, ancestor_fitness):
        """True unless `fitness` is worse than the ancestor's by more than
        the tolerance."""
        if self.tolerance is None:
            return True
        return self.worse_by(fitness, ancestor_fitness) <= self.tolerance

    def exhausted(self, attempt):
        """True once a generation has failed more than `max_rollbacks` times."""
        return attempt > self.max_rollbacks

    def stop_reached(self, record, ancestor):
        """Whether `record` meets `stop_when` (fractions of `ancestor`)."""
        if self.stop_when is None:
            return False
        if callable(self.stop_when):
            return bool(self.stop_when(record))
        return any(
            record.get(k) is not None and ancestor.get(k) and record[k] <= v * ancestor[k]
            for k, v in self.stop_when.items()
        )


def _check_stop_when(stop_when):
    if stop_when is None or callable(stop_when):
        return stop_when
    if not isinstance(stop_when, dict) or not stop_when:
        raise TypeError(
            "EvolutionCallback: stop_when must be a dict {resource: fraction} "
            f"or a callable(record) -> bool, got {stop_when!r}."
        )
    for key, value in stop_when.items():
        if key not in RESOURCES:
            raise ValueError(
                f"EvolutionCallback: stop_when resource {key!r} is not one of "
                f"{RESOURCES}."
            )
        _check_fraction(value, f"stop_when[{key!r}]")
    return dict(stop_when)
