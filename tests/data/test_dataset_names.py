"""The config layer's spellings of dataset names (vocabulary.dataset_key) are the reader registry's."""
from __future__ import annotations

from mammo_keras import data
from mammo_keras.vocabulary import dataset_key


def test_every_registered_name_and_alias_has_the_same_key_in_the_config_layer():
    spellings = [*data.names(), *data.READERS._aliases]
    assert len(spellings) > len(data.names())  # the aliases are there (mini-mias, ddsm, ...)
    for spelling in spellings:
        assert dataset_key(spelling) == data.canonical_name(spelling), spelling
    assert dataset_key("mini-MIAS") == "mias" and dataset_key("DDSM") == "cbis_ddsm"
