"""The generative model of evolutionary synthesis (DESIGN.md §2).

An offspring is sampled from its trained parent, cluster by cluster and
synapse by synapse, with independent seeded Bernoulli draws:

- synapse `j` survives with probability `R_s * exp(|w_j| / Z_s - 1)`, `Z_s`
  the layer's largest live `|w|` (heredity: strong synapses are kept);
- cluster `c` (an output filter / unit) survives with probability
  `R_c * exp(sum_{i in c} q(|w_i|) / Z_c - 1)`, `q` the offspring's b-bit
  precision restriction (weights that round to zero add nothing) and `Z_c`
  the layer's largest such sum;
- a dropped cluster drops all its synapses; the consumers' input synapses
  reading a dropped channel die with it (`dead_inputs`), and a cluster left
  without any live synapse dies too;
- every layer keeps at least one cluster, except where a per-layer cluster
  factor of 0 removes a whole branch (`branches`: an inception branch that
  a latency target drops) or, with `vanish=True`, where the draws leave a
  branch member without a cluster: the whole branch then vanishes (its
  concatenation keeps its other inputs, compaction removes the ops and the
  latency table prices them at 0); protected layers (by default the ones feeding
  model outputs: the classifier, detection heads) are never sampled, only
  their synapses from dead channels are removed.

The maths are pure numpy functions on arrays; `sample_offspring` applies them
to a Keras model.

Example:

>>> import numpy as np
>>> p = synapse_probability(np.array([[0.5], [-1.0], [0.0]]))
>>> np.round(p, 4).ravel().tolist()
[0.6065, 1.0, 0.3679]
"""

from keras_evosynth.genetics.expectation import amount, expectation
from keras_evosynth.genetics.genome import (
    Genome,
    alive_probability,
    branches,
    cluster_factors,
    dead_inputs,
    source_odds,
)
from keras_evosynth.genetics.model import apply_masks, genomes_from_model, sample_offspring
from keras_evosynth.genetics.probability import (
    MAX_FACTOR,
    bernoulli,
    check_factor,
    cluster_probability,
    cluster_strength,
    genome_rng,
    synapse_probability,
)
from keras_evosynth.genetics.sampling import sample_masks

__all__ = [
    "MAX_FACTOR",
    "Genome",
    "alive_probability",
    "amount",
    "apply_masks",
    "bernoulli",
    "branches",
    "check_factor",
    "cluster_factors",
    "cluster_probability",
    "cluster_strength",
    "dead_inputs",
    "expectation",
    "genome_rng",
    "genomes_from_model",
    "sample_masks",
    "sample_offspring",
    "source_odds",
    "synapse_probability",
]
