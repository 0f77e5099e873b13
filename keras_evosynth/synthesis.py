"""One generation's synthesis: the parent turned into its offspring in place.

The environment gives the factors from the parent's genomes and the
lineage so far, `genetics.sample_masks` draws `population` candidates, and
the kept one is written into the model: the only candidate at once, or the
fittest after the executor's trials (`trials.LocalExecutor`,
`distributed.RayExecutor`). `EvolutionCallback` calls it between
generations; the draws depend only on `(seed, generation, attempt,
candidate)`, so a resumed lineage synthesizes what it synthesized before.
"""

import keras

from keras_evosynth import genetics, trials
from keras_evosynth.lineage import AMOUNT_FIELD


def synthesize(model, settings, records, generation, attempt, mode, selection):
    """Turns `model` (holding the parent) into the next offspring.

    Args:
        model: The fitted model (a `ParentDistiller`'s student is evolved).
        settings: The callback's `EvolutionSettings`.
        records: The lineage records so far (the ancestor first).
        generation, attempt: The offspring to synthesize.
        mode: The monitor's direction (`"min"` / `"max"`), for the trials.
        selection: The lineage's `Selection` (picks the fittest candidate).

    Returns:
        `(factors, candidate)`: the environment's `Factors` and the index of
        the kept candidate.
    """
    net = trials.evolved_net(model)
    genomes, layers = genetics.genomes_from_model(net, settings.precision, settings.protect)
    environment = settings.environment
    expected, current = environment.resource_model(net, genomes)
    factors = environment.factors(
        expected=expected,
        current=current,
        ancestor=records[0][AMOUNT_FIELD[environment.resource]],
        generation=generation,
        generations=settings.generations,
        mildness=attempt,
        **({"history": [r["accepted"] for r in records[1:]]} if environment.adaptive else {}),
    )
    keys = (settings.seed, generation, attempt)
    candidates = []
    for candidate in range(settings.population):
        masks = genetics.sample_masks(
            genomes,
            factors.cluster_factor,
            factors.synapse_factor,
            *keys,
            candidate,
            round_to=factors.round_to,
            vanish=factors.vanish,
        )
        seeds = (trials.trial_seed(*keys, candidate),
                 [*keys, candidate] if settings.reinitialize else None)
        candidates.append((masks, seeds))
    if settings.population == 1:
        masks, (_, reinitialize) = candidates[0]
        trials.apply_candidate(model, layers, masks, settings.precision, reinitialize)
        return factors, 0
    spec = {
        "precision": settings.precision,
        "trial_data": settings.trial_data,
        "selection_data": settings.selection_data,
        "trial_steps": settings.trial_steps,
        "monitor": settings.monitor,
        "mode": mode,
        "trial_score": settings.trial_score,
        "layers": [layer.name for layer in layers],
    }
    where = f"generation {generation} (attempt {attempt})"
    fitnesses, fetch = settings.executor.run(model, spec, candidates, where)
    best = selection.fittest(fitnesses)
    trials.restore(model, fetch(best))
    trials.retrace(model)
    trials.reset_optimizer(model)
    # the retraining draws from the lineage's seed, whoever ran the trials
    keras.utils.set_random_seed(trials.trial_seed(*keys, settings.population))
    return factors, best
