"""EvolutionSettings: the epoch budget of a lineage from its records."""

import pytest

from keras_evosynth.settings import EvolutionSettings


def record(generation, accepted=True, synapses=100):
    return {"generation": generation, "accepted": accepted, "synapses": synapses}


@pytest.mark.parametrize("records, left", [
    ([], 2 + 3 * 2 * 3),                                  # new: ancestor + 3 x 3 tries x 2
    ([record(0)], 3 * 3 * 2),
    ([record(0), record(1)], 2 * 3 * 2),
    ([record(0), record(1), record(2, False)], ((3 - 1) * 3 - 1) * 2),  # 1 try spent
    ([record(0), record(1), record(2, False), record(2, False), record(2, False)], 0),  # none left
    ([record(0), record(1), record(2), record(3)], 0),    # complete
    ([record(0), record(1, synapses=40)], 0),             # stop_when reached
])
def test_epochs_left_counts_what_the_lineage_can_still_need(records, left):
    settings = EvolutionSettings(generations=3, epochs_per_generation=2, ancestor_epochs=2,
                                 stop_when={"synapses": 0.5})
    assert settings.max_epochs == 20
    assert settings.epochs_left(records) == left


def test_lineage_config_keeps_the_mode_as_asked_or_as_stored():
    settings = EvolutionSettings(generations=1, precision=4, monitor="score")
    assert settings.lineage_config()["mode"] == "auto"
    assert settings.lineage_config("max")["mode"] == "max"
    assert settings.lineage_config()["precision"] == 4 and settings.precision.bits == 4
