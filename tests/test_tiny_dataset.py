"""The shared tiny dataset fixture is what the stage tests assume."""

from echomotion.stores.ragged import RaggedStore


def test_tiny_dataset_has_every_split_and_ed_es(tiny_dataset):
    store = RaggedStore(tiny_dataset["videos"])
    assert len(store) == 8
    assert set(store.table["split"]) == {"TRAIN", "VAL", "TEST"}
    assert (store.table["ed"] >= 0).all() and store.video(0).shape[1:] == (64, 64)
