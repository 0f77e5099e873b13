"""Golden values and guards of the generative model (keras_evosynth.genetics)."""

import keras
import numpy as np
import pytest

from keras_evosynth import evolvable, genetics, quantizers
from keras_evosynth.genetics import Genome
from keras_evosynth.topology import Sources

E = np.e


def dense_genome(kernel, name="d", precision=32, inputs=None, protected=False, **kw):
    kernel = np.asarray(kernel, dtype=np.float64)
    return Genome(
        name=name,
        kernel=kernel,
        synapse_mask=kw.pop("synapse_mask", np.ones(kernel.shape, bool)),
        cluster_mask=kw.pop("cluster_mask", np.ones(kernel.shape[-1], bool)),
        precision=quantizers.get(precision),
        input_axis=0,
        inputs=inputs,
        protected=protected,
        **kw,
    )


# ------------------------------------------------------------ probabilities
def test_synapse_probability_golden():
    p = genetics.synapse_probability([[0.5, -2.0], [0.0, 1.0]])
    expected = [[np.exp(0.25 - 1), 1.0], [np.exp(-1), np.exp(0.5 - 1)]]
    np.testing.assert_allclose(p, expected, rtol=1e-12)


def test_synapse_probability_normaliser_uses_live_synapses_only():
    p = genetics.synapse_probability([[4.0, 1.0, 2.0]], synapse_mask=[[0, 1, 1]])
    np.testing.assert_allclose(p, [[0.0, np.exp(0.5 - 1), 1.0]], rtol=1e-12)


def test_all_zero_layer_gets_e_minus_one():
    np.testing.assert_allclose(genetics.synapse_probability(np.zeros((2, 2))), 1 / E)
    p = genetics.cluster_probability(np.zeros((3, 2)), cluster_mask=[1, 0])
    np.testing.assert_allclose(p, [1 / E, 0.0])


def test_cluster_probability_float_golden():
    # Column sums of |w|: 1.2 and 0.4; Z_c = 1.2.
    p = genetics.cluster_probability([[1.0, 0.1], [-0.2, -0.3]])
    np.testing.assert_allclose(p, [1.0, np.exp(0.4 / 1.2 - 1)], rtol=1e-6)


def test_cluster_probability_precision_restriction_golden():
    # int2 has levels {-1, 0, 1} x max|w_c|: 0.2 (< half of 1.0) and 0.1
    # (< half of 0.3) round to zero and add nothing: sums 1.0 and 0.3.
    kernel = [[1.0, 0.1], [-0.2, -0.3]]
    np.testing.assert_allclose(genetics.cluster_strength(kernel, "int2"), [1.0, 0.3], rtol=1e-6)
    p = genetics.cluster_probability(kernel, "int2")
    np.testing.assert_allclose(p, [1.0, np.exp(0.3 - 1)], rtol=1e-6)


def test_cluster_strength_matches_quantizer_for_depthwise_channels():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 2, 2)).astype(np.float32)
    q = quantizers.get("int4").quantize_numpy(kernel, channel_axes=2)
    expected = np.abs(q).reshape(-1, 4).sum(axis=0)
    np.testing.assert_allclose(
        genetics.cluster_strength(kernel, "int4", channel_axes=2), expected, rtol=1e-6
    )


def test_cluster_probability_dead_clusters_and_synapses():
    kernel = [[1.0, 3.0, 2.0], [1.0, 3.0, 2.0]]
    p = genetics.cluster_probability(
        kernel, cluster_mask=[1, 0, 1], synapse_mask=[[1, 1, 1], [1, 1, 0]]
    )
    # Live sums: 2.0, (dead), 2.0 -> both 1.
    np.testing.assert_allclose(p, [1.0, 0.0, 1.0])


@pytest.mark.parametrize(
    "value, error",
    [
        (0.0, ValueError),
        (-0.5, ValueError),
        (3.0, ValueError),
        (True, TypeError),
        ("0.5", TypeError),
    ],
)
def test_check_factor_rejects(value, error):
    with pytest.raises(error, match="R_s"):
        genetics.check_factor(value, "R_s")


def test_check_factor_accepts_up_to_e():
    assert genetics.check_factor(np.e, "R") == pytest.approx(np.e)
    with pytest.raises(ValueError):
        genetics.check_factor(1.5, "R", maximum=1.0)


def test_non_finite_kernel_is_rejected():
    with pytest.raises(ValueError, match="non-finite"):
        genetics.synapse_probability([[np.nan, 1.0]])


# ----------------------------------------------------------------- sampling
def test_genome_rng_is_a_pure_function_of_its_keys():
    a = genetics.genome_rng(3, 2, 1, 0, 5).random(4)
    np.testing.assert_array_equal(a, genetics.genome_rng(3, 2, 1, 0, 5).random(4))
    for other in [(4, 2, 1, 0, 5), (3, 3, 1, 0, 5), (3, 2, 0, 0, 5), (3, 2, 1, 1, 5)]:
        assert not np.array_equal(a, genetics.genome_rng(*other).random(4))
    with pytest.raises(ValueError, match="generation"):
        genetics.genome_rng(0, -1)


def test_sample_masks_follows_the_formula_exactly():
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(6, 5))
    g = dense_genome(kernel, precision="int4")
    ((syn, clu),) = genetics.sample_masks([g], 0.8, 0.6, seed=11, generation=2)
    draws = genetics.genome_rng(11, 2, 0, 0, 0)
    u_c, u_s = draws.random(5), draws.random((6, 5))
    p_c = genetics.cluster_probability(kernel, "int4")
    p_s = genetics.synapse_probability(kernel)
    want_c = u_c < 0.8 * p_c
    want_s = (u_s < 0.6 * p_s) & want_c[None, :]
    want_c &= want_s.any(axis=0)
    assert want_c.any()  # the guard is not involved for this seed
    np.testing.assert_array_equal(clu, want_c)
    np.testing.assert_array_equal(syn, want_s & want_c[None, :])


def test_same_seed_same_masks_other_seed_other_masks():
    kernel = np.random.default_rng(0).normal(size=(20, 16))
    g = dense_genome(kernel)
    a = genetics.sample_masks([g], 0.7, 0.7, seed=5)
    b = genetics.sample_masks([g], 0.7, 0.7, seed=5)
    c = genetics.sample_masks([g], 0.7, 0.7, seed=6)
    np.testing.assert_array_equal(a[0][0], b[0][0])
    assert not np.array_equal(a[0][0], c[0][0])


def test_dropped_cluster_drops_all_its_synapses_and_dead_stay_dead():
    kernel = np.random.default_rng(2).normal(size=(10, 8))
    parent_syn = np.random.default_rng(3).random((10, 8)) < 0.7
    g = dense_genome(kernel, synapse_mask=parent_syn)
    for seed in range(5):
        ((syn, clu),) = genetics.sample_masks([g], 0.5, 0.9, seed=seed)
        assert not syn[:, ~clu].any()
        assert not (syn & ~parent_syn).any()


def test_guard_keeps_one_cluster_per_layer():
    kernel = np.array([[0.1, 3.0, 0.2], [0.1, 2.0, 0.1]])
    g = dense_genome(kernel)
    ((syn, clu),) = genetics.sample_masks([g], 1e-6, 1e-6, seed=0)
    assert clu.tolist() == [False, True, False]  # the most probable cluster
    assert syn[:, 1].sum() == 1 and syn[0, 1]  # and its strongest synapse


def test_protected_layer_is_not_sampled_but_loses_dead_inputs():
    producer = dense_genome(np.eye(4) * [1.0, 0.01, 1.0, 0.01], name="p")
    sources = Sources(np.zeros((1, 4), int), np.arange(4)[None, :])
    head = dense_genome(np.ones((4, 3)), name="head", inputs=sources, protected=True)
    (p_syn, p_clu), (h_syn, h_clu) = genetics.sample_masks([producer, head], 1e-3, 1e-3, seed=0)
    assert h_clu.all()
    np.testing.assert_array_equal(h_syn, np.repeat(p_clu[:, None], 3, axis=1))


def test_dead_channels_propagate_and_orphan_clusters_die():
    # Producer with 2 clusters; consumer cluster 0 reads only channel 0.
    producer = dense_genome([[5.0, 1e-3]], name="p")
    consumer_kernel = np.array([[1.0, 1.0], [0.0, 1.0]])
    sources = Sources(np.zeros((1, 2), int), np.array([[0, 1]]))
    consumer = dense_genome(
        consumer_kernel,
        name="c",
        inputs=sources,
        synapse_mask=np.array([[1, 1], [0, 1]], bool),
    )
    for seed in range(20):
        masks = genetics.sample_masks([producer, consumer], 0.2, 1.0, seed=seed)
        (_, p_clu), (c_syn, c_clu) = masks
        dead = ~p_clu
        assert not c_syn[dead, :].any()
        if dead[0]:
            # Cluster 0 only read channel 0: it has no synapse left and dies
            # (unless it is the one the guard keeps).
            assert not c_clu[0] or not c_clu[1]


def test_dead_inputs_needs_every_alternative_dead():
    sources = Sources(np.array([[0, 0, -1], [1, -2, 1]]), np.array([[0, 1, 0], [0, 0, 1]]))
    alive = [np.array([False, False]), np.array([True, False])]
    np.testing.assert_array_equal(genetics.dead_inputs(sources, alive), [False, True, False])
    assert genetics.dead_inputs(None, alive) is None


def test_channel_count_mismatch_is_reported():
    g = dense_genome(np.ones((3, 2)), inputs=Sources.unknown(4))
    with pytest.raises(ValueError, match="input sources list 4"):
        genetics.sample_masks([g], 1.0, 1.0)


# -------------------------------------------------------------- expectation
def test_expectation_golden_with_producer_odds():
    producer = dense_genome(np.ones((1, 2)), name="p")  # p_c = p_s = 1
    sources = Sources(np.zeros((1, 2), int), np.arange(2)[None, :])
    consumer = dense_genome(np.ones((2, 3)), name="c", inputs=sources)
    f = genetics.expectation([producer, consumer])
    # producer: 2 * R_c R_s; consumer: 6 * R_c (input alive) * R_c * R_s.
    assert f(0.5, 0.8) == pytest.approx(2 * 0.5 * 0.8 + 6 * 0.5 * 0.5 * 0.8)
    # Factors above 1 clip the probabilities at 1: everything is kept.
    assert f(np.e, np.e) == pytest.approx(8.0)
    assert genetics.amount([producer, consumer]) == 8


def test_expectation_matches_monte_carlo():
    rng = np.random.default_rng(4)
    producer = Genome(
        "conv",
        rng.normal(size=(3, 3, 2, 8)),
        np.ones((3, 3, 2, 8), bool),
        np.ones(8, bool),
        quantizers.get("int4"),
        positions=16,
    )
    sources = Sources(np.zeros((1, 32), int), np.tile(np.arange(8), 4)[None, :])
    head = dense_genome(rng.normal(size=(32, 5)), name="head", inputs=sources, positions=1)
    genomes = [producer, head]
    for resource in ("synapses", "macs"):
        f = genetics.expectation(genomes, resource)
        totals = []
        for seed in range(400):
            masks = genetics.sample_masks(genomes, 0.9, 0.9, seed=seed)
            totals.append(
                sum(m[0].sum() * g.positions for m, g in zip(masks, genomes, strict=True))
                if resource == "macs"
                else sum(m[0].sum() for m in masks)
            )
        assert np.mean(totals) == pytest.approx(f(0.9, 0.9), rel=0.05)


def test_macs_need_known_positions():
    g = dense_genome(np.ones((2, 2)), positions=None)
    with pytest.raises(ValueError, match="unknown spatial"):
        genetics.amount([g], "macs")
    with pytest.raises(ValueError, match="resource"):
        genetics.amount([g], "latency")


# --------------------------------------------------------------- Keras side
def small_model():
    keras.utils.set_random_seed(0)
    base = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(8, 3, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(name="relu"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(4, name="head"),
        ]
    )
    return evolvable(base)


def test_sample_offspring_applies_masks_precision_and_propagation():
    model = small_model()
    masks = genetics.sample_offspring(model, 0.5, 0.9, precision="int4", seed=3)
    conv, head = model.get_layer("conv"), model.get_layer("head")
    syn, clu = conv.get_masks()
    np.testing.assert_array_equal(clu, masks["conv"][1])
    assert 0 < clu.sum() < 8 and conv.precision.bits == 4
    # Flatten of 4x4x8: feature i reads channel i % 8.
    head_syn, head_clu = head.get_masks()
    dead_rows = ~np.tile(clu, 16)
    assert not head_syn[dead_rows].any() and head_syn[~dead_rows].all()
    assert head_clu.all()  # the output layer is protected by default
    kernel = keras.ops.convert_to_numpy(conv.kernel)
    assert not kernel[..., ~clu].any()


def test_sample_offspring_is_deterministic_and_protect_names_checked():
    a, b = small_model(), small_model()
    ma = genetics.sample_offspring(a, 0.6, 0.6, seed=9, generation=4)
    mb = genetics.sample_offspring(b, 0.6, 0.6, seed=9, generation=4)
    for name in ma:
        np.testing.assert_array_equal(ma[name][0], mb[name][0])
    with pytest.raises(ValueError, match="not evolvable layers"):
        genetics.sample_offspring(small_model(), protect=["nope"])
    c = small_model()
    genetics.sample_offspring(c, 1e-3, 1e-3, seed=0, protect=[])
    assert c.get_layer("head").count_clusters() < 4


def test_model_without_evo_layers_is_rejected():
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no evolvable layer"):
        genetics.sample_offspring(plain)
