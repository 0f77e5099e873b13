"""Selection rules and the lineage record (keras_evosynth.selection)."""

import time

import keras
import numpy as np
import pytest

from keras_evosynth import evolvable
from keras_evosynth.environments import Factors
from keras_evosynth.lineage import generation_record
from keras_evosynth.selection import Selection


@pytest.mark.parametrize("mode, fitness, kept", [
    ("max", 60.0, True),  # 2.5 worse, tolerance 3
    ("max", 59.0, False),  # 3.5 worse
    ("max", 70.0, True),  # better
    ("min", 0.45, True),  # loss 0.05 worse, tolerance 0.1 below
    ("min", 0.61, False),
])
def test_accepts_within_the_tolerance_of_the_ancestor(mode, fitness, kept):
    reference, tolerance = (62.5, 3.0) if mode == "max" else (0.4, 0.1)
    assert Selection(mode, tolerance).accepts(fitness, reference) is kept
    assert Selection(mode).accepts(fitness, reference)  # no tolerance: all kept


def test_better_and_worse_by_follow_the_mode():
    high, low = Selection("max"), Selection("min")
    assert high.worse_by(1.0, 3.0) == 2.0 and low.worse_by(1.0, 3.0) == -2.0
    assert high.better(2.0, 1.0) and not low.better(2.0, 1.0)
    assert high.better(-5.0, None) and not high.better(1.0, 1.0)


def test_rollbacks_run_out_after_max_rollbacks():
    rules = Selection("max", 1.0, max_rollbacks=2)
    assert [rules.exhausted(a) for a in range(4)] == [False, False, False, True]


def test_stop_when_fractions_and_callables():
    ancestor = {"synapses": 1000, "latency": 2.0, "macs": None}
    rules = Selection("max", stop_when={"synapses": 0.1, "latency": 0.5})
    assert not rules.stop_reached({"synapses": 200, "latency": 1.5}, ancestor)
    assert rules.stop_reached({"synapses": 200, "latency": 1.0}, ancestor)
    assert rules.stop_reached({"synapses": 100, "latency": None}, ancestor)
    assert not Selection("max", stop_when={"macs": 0.5}).stop_reached({"macs": 1}, ancestor)
    assert Selection("max", stop_when=lambda r: r["synapses"] < 300).stop_reached(
        {"synapses": 200}, ancestor)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"tolerance": -1}, ValueError, "tolerance must be >= 0"),
    ({"tolerance": "1"}, TypeError, "tolerance must be a number"),
    ({"stop_when": {"weights": 0.5}}, ValueError, "stop_when resource 'weights'"),
    ({"stop_when": {"synapses": 1.5}}, ValueError, "stop_when\\['synapses'\\]"),
    ({"stop_when": 0.5}, TypeError, "stop_when must be a dict"),
])
def test_bad_rules_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        Selection("max", **kwargs)


def test_generation_record_counts_resources_against_the_ancestor():
    base = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(4, 3, name="c"),
                             keras.layers.Flatten(), keras.layers.Dense(2, name="d")])
    model = evolvable(base, precision="int8")
    common = {"attempt": 0, "candidate": 0, "accepted": True, "seed": 3, "monitor": "loss",
              "logs": {"loss": np.float32(0.5)}, "started": time.perf_counter()}
    def live():  # non-zero effective weights (an int8 weight may round to 0)
        return sum(int(np.count_nonzero(model.get_layer(n).effective_kernel())) for n in "cd")

    ancestor = generation_record(model, generation=0, fitness=0.5, **common)
    assert ancestor["synapses"] == live() and ancestor["total_synapses"] == 36 + 64 * 2
    assert ancestor["synaptic_efficiency"] == 1.0
    assert ancestor["bits"] == 8 and ancestor["metrics"] == {"loss": 0.5}
    model.get_layer("c").set_masks(cluster_mask=[True, True, False, False])
    factors = Factors(0.5, 1.0, 0.7, 0.68)
    child = generation_record(model, generation=1, fitness=0.6, factors=factors,
                              ancestor=ancestor, **common)
    assert child["synapses"] == live() < ancestor["synapses"]
    assert child["synaptic_efficiency"] == pytest.approx(ancestor["synapses"] / live())
    assert (child["cluster_factor"], child["target"], child["expected"]) == (0.5, 0.7, 0.68)
    assert child["checkpoint"] is None and "latency" not in child
