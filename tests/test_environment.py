"""Environmental factors and resource targets (keras_evosynth.environments)."""

import numpy as np
import pytest

from keras_evosynth import environments, genetics, quantizers
from keras_evosynth.environments import ConstantEnvironment, ResourceTarget
from keras_evosynth.topology import Sources


def two_layer_genomes():
    rng = np.random.default_rng(0)
    conv = genetics.Genome(
        "conv",
        rng.normal(size=(3, 3, 3, 16)),
        np.ones((3, 3, 3, 16), bool),
        np.ones(16, bool),
        quantizers.get("int4"),
        positions=64,
    )
    sources = Sources(np.zeros((1, 16), int), np.arange(16)[None, :])
    conv2 = genetics.Genome(
        "conv2",
        rng.normal(size=(3, 3, 16, 32)),
        np.ones((3, 3, 16, 32), bool),
        np.ones(32, bool),
        quantizers.get("int4"),
        positions=16,
        inputs=sources,
    )
    return [conv, conv2]


def test_constant_environment_and_milder_rollbacks():
    env = ConstantEnvironment(0.6, 0.8)
    f = env.factors(None, 100, 100, 1, 3)
    assert (f.cluster_factor, f.synapse_factor, f.target) == (0.6, 0.8, None)
    f = env.factors(None, 100, 100, 1, 3, mildness=1)
    assert f.cluster_factor == pytest.approx(0.8)
    assert f.synapse_factor == pytest.approx(0.9)
    f = env.factors(lambda c, s: 50.0 * c * s, 100, 100, 1, 3)
    assert f.expected == pytest.approx(0.5 * 0.6 * 0.8)


@pytest.mark.parametrize("value", [0.0, 1.2, -1.0])
def test_constant_environment_rejects_factors_outside_the_paper_range(value):
    with pytest.raises(ValueError, match="cluster_factor"):
        ConstantEnvironment(cluster_factor=value)
    with pytest.raises(TypeError, match="synapse_factor"):
        ConstantEnvironment(synapse_factor="0.5")


@pytest.mark.parametrize(
    "solve, want",
    [
        ("both", (0.5, 0.5)),
        ("cluster", (0.25, 1.0)),
        ("synapse", (1.0, 0.25)),
    ],
)
def test_solve_factor_modes(solve, want):
    got = environments.solve_factor(lambda c, s: 40.0 * c * s, 10.0, solve, 1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_fixed_factor_holds_the_other_factor():
    got = environments.solve_factor(
        lambda c, s: 40.0 * c * min(s, 1.0), 10.0, "cluster", 1e-6, fixed=np.e
    )
    np.testing.assert_allclose(got, (0.25, np.e), rtol=1e-4)
    env = environments.ResourceTarget(fraction=0.5, solve="cluster", fixed_factor=np.e)
    factors = env.factors(
        lambda c, s: 100 * c, current=100, ancestor=100, generation=1, generations=2
    )
    assert factors.synapse_factor == np.e and factors.cluster_factor == pytest.approx(0.5, rel=1e-3)
    assert environments.get(environments.serialize(env)) == env
    with pytest.raises(ValueError, match="fixed_factor"):
        environments.ResourceTarget(fraction=0.5, fixed_factor=2.0)
    with pytest.raises(ValueError, match="fixed_factor"):
        environments.ResourceTarget(fraction=0.5, solve="cluster", fixed_factor=3.5)


def test_solve_factor_out_of_reach_returns_bounds():
    assert environments.solve_factor(lambda c, s: 1.0, 5.0) == (np.e, np.e)
    low = environments.solve_factor(lambda c, s: 5.0, 1.0)
    assert low[0] == pytest.approx(1e-6)
    with pytest.raises(ValueError, match="solve"):
        environments.solve_factor(lambda c, s: 1.0, 1.0, solve="all")


@pytest.mark.parametrize("resource", ["synapses", "macs"])
@pytest.mark.parametrize("fraction", [0.3, 0.7, 0.95])
def test_resource_target_lands_on_the_expected_fraction(resource, fraction):
    genomes = two_layer_genomes()
    env = ResourceTarget(fraction=fraction, resource=resource)
    current = genetics.amount(genomes, resource)
    f = env.factors(genetics.expectation(genomes, resource), current, current, 1, 5)
    assert f.target == fraction
    assert f.expected == pytest.approx(fraction, rel=2e-3)
    # At R = 1 the paper's probabilities keep about a third of these random
    # weights: milder targets need R > 1 (probabilities clipped at 1).
    assert (f.cluster_factor > 1.0) == (fraction > 0.5)
    # The realised offspring is near the target (sampling noise aside).
    masks = genetics.sample_masks(genomes, f.cluster_factor, f.synapse_factor, seed=0)
    weights = [g.positions if resource == "macs" else 1 for g in genomes]
    kept = sum(m[0].sum() * w for m, w in zip(masks, weights, strict=True))
    assert kept / current == pytest.approx(fraction, abs=0.12)


def test_budget_is_reached_in_equal_ratios():
    env = ResourceTarget(budget=0.1)
    assert env.target_fraction(100, 100, 1, 2) == pytest.approx(0.1**0.5)
    assert env.target_fraction(100 * 0.1**0.5, 100, 2, 2) == pytest.approx(0.1**0.5)
    # Behind schedule: the last generation takes what is left.
    assert env.target_fraction(50, 100, 3, 3) == pytest.approx(0.2)
    # Already under budget: keep everything.
    assert env.target_fraction(5, 100, 2, 3) == 1.0
    f = env.factors(lambda c, s: 100.0 * s, 100, 100, 1, 2, mildness=1)
    assert f.target == pytest.approx(1 - (1 - 0.1**0.5) / 2)


def test_adaptive_cut_grows_after_acceptance_and_shrinks_after_rollback():
    assert environments.adaptive_cut(0.2, []) == 0.2
    assert environments.adaptive_cut(0.2, [True]) == pytest.approx(0.3)
    assert environments.adaptive_cut(0.2, [True, False, False]) == pytest.approx(0.075)
    assert environments.adaptive_cut(0.2, [True, True], grow=2.0, shrink=0.25) == pytest.approx(0.8)
    assert environments.adaptive_cut(0.5, [True] * 3) == environments.MAX_CUT


def test_adaptive_target_carries_its_step_across_generations():
    env = ResourceTarget(fraction=0.8, adaptive=True, grow=2.0, shrink=0.5)

    def wanted(history, mildness=0):
        return env.factors(lambda c, s: 100 * s, 100, 100, 2, 5, mildness=mildness,
                           history=history).target

    assert wanted([]) == pytest.approx(0.8)
    assert wanted([True]) == pytest.approx(0.6)  # cut 0.2 -> 0.4
    assert wanted([True, False]) == pytest.approx(0.8)  # a rollback halves it back
    assert wanted([True, False], mildness=1) == pytest.approx(0.8)  # history, not mildness
    # without adaptive, the same history changes nothing and a rollback halves the cut
    plain = ResourceTarget(fraction=0.8)
    assert plain.factors(lambda c, s: 100 * s, 100, 100, 2, 5, mildness=1).target == (
        pytest.approx(0.9))
    again = environments.get(environments.serialize(env))
    assert again == env and (again.adaptive, again.grow, again.shrink) == (True, 2.0, 0.5)
    assert "adaptive" not in plain.get_config()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"adaptive": 1}, TypeError, "adaptive must be True or False"),
    ({"adaptive": True, "grow": 0.9}, ValueError, "grow must be a number >= 1"),
    ({"adaptive": True, "shrink": 1.0}, ValueError, "shrink must be a number in \\(0, 1\\)"),
])
def test_adaptive_target_rejects_bad_steps(kwargs, error, match):
    with pytest.raises(error, match=match):
        ResourceTarget(fraction=0.7, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one"),
        ({"fraction": 0.5, "budget": 0.2}, "exactly one"),
        ({"fraction": 1.0}, "fraction"),
        ({"fraction": 0.0}, "fraction"),
        ({"budget": 1.5}, "budget"),
        ({"fraction": 0.5, "resource": "latency"}, "needs a latency_table"),
        ({"fraction": 0.5, "solve": "neither"}, "solve"),
        ({"fraction": 0.5, "tolerance": 0.0}, "tolerance"),
    ],
)
def test_resource_target_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResourceTarget(**kwargs)


def test_get_and_serialize_round_trip():
    for env in (ConstantEnvironment(0.5, 0.7), ResourceTarget(budget=0.2, resource="macs")):
        again = environments.get(environments.serialize(env))
        assert again == env and again is not env
    assert environments.get(None) == ResourceTarget(fraction=0.7)
    with pytest.raises(TypeError, match="environment"):
        environments.get(0.5)


def test_serialized_environments_name_the_module_saved_lineages_name():
    # a lineage resumes only with settings equal to its stored ones, and those
    # written before `environments` was a package name `keras_evosynth.environment`
    from keras_evosynth import environment

    stored = {"module": "keras_evosynth.environment", "class_name": "ResourceTarget",
              "config": {"fraction": 0.75, "budget": None, "resource": "synapses",
                         "solve": "both", "tolerance": 0.001, "fixed_factor": 1.0},
              "registered_name": "keras_evosynth>ResourceTarget"}
    env = environments.get(stored)
    assert env == ResourceTarget(fraction=0.75) and environments.serialize(env) == stored
    assert environment.ResourceTarget is ResourceTarget and environment.get(stored) == env


def test_the_base_is_public_and_a_subclass_of_it_round_trips():
    import keras

    import keras_evosynth as ke

    assert ke.Environment is environments.Environment
    assert issubclass(ke.ConstantEnvironment, ke.Environment)
    assert issubclass(ke.ResourceTarget, ke.Environment)

    @keras.saving.register_keras_serializable(package="test_environment")
    class Halving(ke.Environment):
        def __init__(self, start=1.0):
            self.start = start

        def factors(self, expected, current, ancestor, generation, generations, mildness=0):
            return environments.Factors(self.start * 0.5**generation, 1.0)

        def get_config(self):
            return {"start": self.start}

    again = environments.get(environments.serialize(Halving(0.8)))
    assert type(again) is Halving and again == Halving(0.8)
    assert again.factors(None, 1, 1, 2, 3).cluster_factor == pytest.approx(0.2)
