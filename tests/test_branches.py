"""Whole-branch removal: which branches a network can lose, sampling them
away, pricing what vanishes, and the latency environment that chooses them."""

import keras
import numpy as np
import pytest
from test_latency import synthetic_table

import keras_evosynth as ke
from keras_evosynth import genetics, latency
from keras_evosynth.environments import LatencyTarget, ResourceTarget, latency_target
from keras_evosynth.latency import LatencyTable
from keras_evosynth.latency.calibration import _Measurer


def _module(width=8):
    """One inception module: 1x1, 1x1->3x3, 1x1->5x5, pool->1x1, concat."""
    x = keras.Input((12, 12, 3))
    y = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="stem")(x)
    b1 = keras.layers.Conv2D(width, 1, activation="relu", name="b1")(y)
    r3 = keras.layers.Conv2D(width, 1, activation="relu", name="r3")(y)
    b3 = keras.layers.Conv2D(2 * width, 3, padding="same", activation="relu", name="b3")(r3)
    r5 = keras.layers.Conv2D(width // 2, 1, activation="relu", name="r5")(y)
    b5 = keras.layers.Conv2D(width, 5, padding="same", name="b5")(r5)
    b5 = keras.layers.BatchNormalization(name="b5_bn")(b5)
    b5 = keras.layers.ReLU(name="b5_relu")(b5)
    pool = keras.layers.MaxPooling2D(3, 1, padding="same", name="pool")(y)
    bp = keras.layers.Conv2D(width, 1, activation="relu", name="bp")(pool)
    y = keras.layers.Concatenate(name="cat")([b1, b3, b5, bp])
    y = keras.layers.Conv2D(width, 1, activation="relu", name="next")(y)
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)
    return keras.Model(x, keras.layers.Dense(3, name="head")(y), name="module")


def _shifted(model, seed=0):
    """Non-zero biases and batch-norm statistics: a removed filter then
    outputs a non-zero constant that compaction must fold."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.5, n),
                               rng.normal(0, 0.5, n), rng.uniform(0.5, 1.5, n)])
        elif getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0, 0.5, layer.bias.shape))
    return model


def _names(genomes, indices):
    return [genomes[i].name for i in indices]


def test_branches_of_an_inception_module():
    genomes, _ = genetics.genomes_from_model(ke.evolvable(_module()))
    found = {genomes[t].name: _names(genomes, m) for t, m in genetics.branches(genomes).items()}
    # b3 holds the most synapses: the anchor stays; each other branch goes
    # with its reduction, the pool branch without one (pool is not evolvable)
    assert found == {"b1": ["b1"], "b5": ["r5", "b5"], "bp": ["bp"]}


def test_no_branch_in_a_chain_or_a_residual_sum():
    x = keras.Input((8, 8, 4))
    y = keras.layers.Conv2D(4, 1, name="c1")(x)
    z = keras.layers.Conv2D(4, 3, padding="same", name="c2")(y)
    y = keras.layers.Add(name="add")([y, z])
    y = keras.layers.Conv2D(4, 1, name="c3")(y)
    model = ke.evolvable(keras.Model(x, keras.layers.Conv2D(2, 1, name="out")(y)))
    genomes, _ = genetics.genomes_from_model(model)
    assert genetics.branches(genomes) == {}


def test_a_zero_factor_removes_a_branch_and_only_a_branch():
    genomes, _ = genetics.genomes_from_model(ke.evolvable(_module()))
    names = [g.name for g in genomes]
    factors = [1.0] * len(genomes)
    for name in ("r5", "b5"):
        factors[names.index(name)] = 0.0
    masks = genetics.sample_masks(genomes, factors, 1.0, seed=3)
    alive = {name: int(clusters.sum()) for name, (_, clusters) in zip(names, masks, strict=True)}
    assert alive["r5"] == alive["b5"] == 0
    assert all(alive[n] > 0 for n in names if n not in ("r5", "b5"))
    # the next layer lost exactly the synapses that read the 5x5 branch
    syn, _ = masks[names.index("next")]
    assert not syn[0, 0, 24:32].any() and syn[0, 0, :24].any()
    # same draws for every other layer as at factor 1 (one stream per layer)
    ones = genetics.sample_masks(genomes, [1.0] * len(genomes), 1.0, seed=3)
    for name in ("stem", "b1", "b3"):
        i = names.index(name)
        assert (ones[i][1] == masks[i][1]).all()
    factors[names.index("b3")] = 0.0
    with pytest.raises(ValueError, match=r"\['b3'\].*not members of a removable branch"):
        genetics.sample_masks(genomes, factors, 1.0)
    with pytest.raises(ValueError, match="cluster_factor must be in"):
        genetics.sample_masks(genomes, 0.0, 1.0)


def _remove(model, names):
    for name in names:
        layer = model.get_layer(name)
        layer.set_masks(cluster_mask=np.zeros(layer.cluster_mask.shape, bool))


def test_removed_branch_vanishes_from_compaction_and_prediction():
    model = _shifted(ke.evolvable(_module()))
    table = synthetic_table(model, remainder=0.0)
    full = table.op_costs(model)
    _remove(model, ["b5"])  # r5 stays sampled but only b5 read it
    ops, live = latency.kept_channels(model)
    kept = {op.name: n for op, n in zip(ops, live, strict=True)}
    assert kept["b5"] == kept["r5"] == (0, 0)
    assert kept["next"] == (32, 8) and kept["cat"] == (32, 32)  # 40 less the 5x5
    costs = table.op_costs(model)
    assert costs["b5"] == costs["r5"] == 0.0
    assert costs["b1"] == full["b1"] and costs["next"] < full["next"]
    assert table.predict(model) == pytest.approx(sum(costs.values()))
    compacted = ke.compact(model)
    layers = {layer.name for layer in compacted.layers}
    assert not {"b5", "r5", "b5_bn", "b5_relu"} & layers and {"b1", "b3", "bp"} <= layers
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 3)).astype("float32")
    np.testing.assert_allclose(compacted(x), model(x), rtol=1e-4, atol=1e-5)


def test_removing_the_pool_branch_takes_the_pool_with_it():
    model = ke.evolvable(_module())
    _remove(model, ["bp"])
    kept = dict(zip((op.name for op in latency.model_ops(model)),
                    latency.kept_channels(model)[1], strict=True))
    assert kept["pool"] == kept["bp"] == (0, 0)


def test_expectation_prices_a_removed_branch_as_compaction_does():
    model = ke.evolvable(_module())
    table = synthetic_table(model, remainder=0.0)
    genomes, _ = genetics.genomes_from_model(model)
    expected = table.expectation(model, genomes)
    names = [g.name for g in genomes]
    odds = [np.ones_like(p) for p in expected.p_c]
    for name in ("bp", "b1"):
        odds[names.index(name)] = np.zeros_like(odds[names.index(name)])
    _remove(model, ["bp", "b1"])
    assert expected.at_odds(odds) == pytest.approx(table.predict(model))


def _cost_5x5_heavy(op, cin, cout):
    """Thin ops cost per op (fixed), the 5x5 a lot: removing it pays."""
    if op.two_d:
        fixed = 3.0 if op.signature.get("kernel") == [5, 5] else 0.2
        return fixed + 0.001 * cin * cout
    return 0.01


def test_branch_removals_take_the_branch_that_saves_most_per_strength():
    model = ke.evolvable(_module())
    table = synthetic_table(model, remainder=0.0, cost=_cost_5x5_heavy)
    genomes, _ = genetics.genomes_from_model(model)
    expected = table.expectation(model, genomes)
    current = expected.current
    # the 5x5 branch saves 3.2+ ms of ~5 for 4+8 filters: first, and enough
    assert _names(genomes, latency_target.branch_removals(expected, 0.7 * current, 0.5)) == [
        "r5", "b5"]
    assert latency_target.branch_removals(expected, current, 0.5) == []  # nothing to shed
    assert latency_target.branch_removals(expected, 0.7 * current, 0.999) == []  # filter floor
    # a deeper cut takes the next branches too, never the anchor b3
    deep = _names(genomes, latency_target.branch_removals(expected, 0.1 * current, 0.1))
    assert {"r5", "b5", "b1", "bp"} == set(deep)


def test_latency_target_removes_branches_and_records_them(tmp_path):
    model = ke.evolvable(_module())
    table = synthetic_table(model, remainder=0.0, cost=_cost_5x5_heavy)
    genomes, _ = genetics.genomes_from_model(model)
    env = LatencyTarget(table, fraction=0.7,
                        remove_branches=True)
    expected, current = env.resource_model(model, genomes)
    factors = env.factors(expected, current, current, 1, 1)
    names = [g.name for g in genomes]
    assert factors.removed == ["r5", "b5"]
    assert [names[i] for i, r in enumerate(factors.cluster_factor) if r == 0.0] == ["r5", "b5"]
    # removing it already sheds more than asked: no filter is cut elsewhere
    assert factors.expected < 0.7
    assert all(r == genetics.MAX_FACTOR for i, r in enumerate(factors.cluster_factor)
               if names[i] not in ("r5", "b5") and not genomes[i].protected)
    plain = LatencyTarget(table, fraction=0.7)
    assert plain.factors(expected, current, current, 1, 1).removed is None
    assert min(plain.factors(expected, current, current, 1, 1).cluster_factor) > 0
    assert ResourceTarget.from_config(env.get_config()) == env
    assert env.get_config()["remove_branches"] is True
    assert "remove_branches" not in plain.get_config()
    with pytest.raises(ValueError, match="remove_branches only applies"):
        ResourceTarget(fraction=0.7, resource="macs", remove_branches=True)
    with pytest.raises(TypeError, match="remove_branches must be True or False"):
        LatencyTarget(table, fraction=0.7,
                      remove_branches=1)

    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(16, 12, 12, 3)).astype("float32")
    y = np.arange(16) % 3
    evolution = ke.EvolutionCallback(generations=1, environment=env, monitor="loss",
                                     verbose=0, directory=str(tmp_path))
    model.fit(x, y, epochs=4, batch_size=8, verbose=0, callbacks=[evolution])
    record = evolution.records[1]
    assert record["removed"] == ["r5", "b5"]
    assert model.get_layer("b5").cluster_mask.numpy().sum() == 0
    assert record["latency"] == pytest.approx(table.predict(model))


def test_a_removed_branch_stays_removed_and_is_not_removed_twice():
    model = ke.evolvable(_module())
    table = synthetic_table(model, remainder=0.0, cost=_cost_5x5_heavy)
    _remove(model, ["r5", "b5"])  # the parent already lost its 5x5 branch
    genomes, _ = genetics.genomes_from_model(model)
    names = [g.name for g in genomes]
    assert not genomes[names.index("b5")].probabilities()[0].any()
    expected = table.expectation(model, genomes)
    assert expected.current == pytest.approx(table.predict(model))
    removed = _names(genomes, latency_target.branch_removals(expected, 0.7 * expected.current, 0.5))
    assert removed and not {"r5", "b5", "b3"} & set(removed)
    masks = genetics.sample_masks(genomes, [genetics.MAX_FACTOR] * len(genomes), 1.0, seed=2)
    assert masks[names.index("b5")][1].sum() == 0  # never revived


def test_a_branchy_model_is_also_anchored_with_branches_removed(monkeypatch):
    class Backend:  # a made-up device: every op 1 us per output channel, models 1 ms
        cpu, runtime, threads = "fake", "fake runtime", 1

        def op_costs(self, flatbuffers):
            return [0.001 * (cout or cin) for _, cin, cout in flatbuffers]

        def invoke_ms(self, flatbuffers):
            return [1.0 for _ in flatbuffers]

    monkeypatch.setattr(_Measurer, "flatbuffer",
                        lambda self, op, cin, cout=None: (op.name, cin, cout))
    model = ke.evolvable(_module())
    table = LatencyTable.measure(model, backend=Backend(), verbose=0)
    (record,) = table.models.values()
    anchors = record["anchors"]
    assert [(a["keep"], a.get("branches", 0.0)) for a in anchors] == [
        (k, 0.0) for k in latency.ANCHOR_KEEP] + [(1.0, b) for b in latency.ANCHOR_BRANCHES]
    full, all_removed, half = anchors[0], anchors[-2], anchors[-1]
    assert all_removed["grid_ms"] < half["grid_ms"] < full["grid_ms"]
    # every branch (b1, r5+b5, bp) removed: the model with only b3 left, as predict prices it
    _remove(model, ["b1", "r5", "b5", "bp"])
    assert sum(table.op_costs(model).values()) == pytest.approx(all_removed["grid_ms"])


def test_vanish_lets_a_branch_go_when_its_draws_leave_no_filter():
    genomes, _ = genetics.genomes_from_model(ke.evolvable(_module()))
    names = [g.name for g in genomes]
    members = {"b1": ["b1"], "b5": ["r5", "b5"], "bp": ["bp"]}
    vanished = set()
    for seed in range(12):
        kept = genetics.sample_masks(genomes, 0.08, 1.0, seed=seed)
        gone = genetics.sample_masks(genomes, 0.08, 1.0, seed=seed, vanish=True)
        alive = {n: int(c.sum()) for n, (_, c) in zip(names, gone, strict=True)}
        assert all(int(c.sum()) >= 1 for _, c in kept)  # the paper's guard
        for name in ("stem", "b3", "next"):  # never a branch member: never vanish
            assert alive[name] >= 1
        for terminal, group in members.items():
            counts = [alive[n] for n in group]
            assert all(counts) or not any(counts), (seed, terminal, counts)
            if not any(counts):
                vanished.add(terminal)
                assert all(not gone[names.index(n)][0].any() for n in group)
        for name in ("stem", "b3"):  # same stream, same draws, whatever vanished
            i = names.index(name)
            assert (kept[i][1] == gone[i][1]).all()
    assert vanished == {"b1", "b5", "bp"}  # every branch vanished in some draw


def test_resource_target_vanish_reaches_the_factors_and_the_config():
    target = ResourceTarget(fraction=0.5, resource="macs", solve="cluster", vanish=True)
    f = target.factors(lambda c, s: 100 * c, current=100, ancestor=100, generation=1,
                       generations=2)
    assert f.vanish is True and ResourceTarget(fraction=0.5).factors(
        lambda c, s: 100 * s, 100, 100, 1, 2).vanish is False
    assert ResourceTarget.from_config(target.get_config()) == target
    assert target.get_config()["vanish"] is True
    with pytest.raises(TypeError, match="vanish must be True or False"):
        ResourceTarget(fraction=0.5, vanish=1)
