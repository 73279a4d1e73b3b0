"""The catalog contract (collections and aliases: what a model switch needs), on every backend,
and the deployment layout resolved on top of it (imgsim.deployment)."""

from __future__ import annotations

import pytest
from imgsim.deployment import collection_for, model_of, resolve
from imgsim.errors import ConfigError, StoreError
from imgsim.store import StoredPoint
from store_backends import make_catalog

DIM = 4


@pytest.fixture
def catalog(backend, tmp_path):
    catalog = make_catalog(backend, tmp_path)
    yield catalog
    catalog.close()


def put(catalog, collection: str, n: int, model: str = "m1") -> None:
    store = catalog.open_store(collection, dim=DIM)
    store.upsert([StoredPoint(f"00000000-0000-0000-0000-{i:012d}", [1.0, float(i), 0.0, 0.5],
                              {"key": f"k{i}", "model": model}) for i in range(n)])


def test_an_alias_leads_to_its_collection_and_switches_in_one_step(catalog):
    put(catalog, "images__m1", 3)
    put(catalog, "images__m2", 5, model="m2")
    assert catalog.alias_target("images") is None and not catalog.exists("images")
    catalog.switch_alias("images", "images__m1")
    assert catalog.alias_target("images") == "images__m1"
    assert catalog.exists("images__m1") and not catalog.exists("images")  # an alias is not a collection
    catalog.switch_alias("images", "images__m2")
    assert catalog.alias_target("images") == "images__m2"
    assert catalog.open_store("images__m2", dim=DIM).count() == 5


def test_open_store_returns_one_object_per_collection(catalog):
    assert catalog.open_store("a", dim=DIM) is catalog.open_store("a", dim=DIM)


def test_drop_removes_a_collection_and_its_companions(catalog):
    put(catalog, "images__m1", 2)
    catalog.open_store("images__m1_tombstones", dim=1).ensure_collection()
    put(catalog, "images__m2", 1)
    catalog.drop("images__m1")
    assert not catalog.exists("images__m1") and not catalog.exists("images__m1_tombstones")
    assert catalog.exists("images__m2")
    catalog.drop("never_was")  # nothing there: nothing to do


def test_first_use_creates_the_model_collection_behind_the_alias(catalog):
    layout = resolve(catalog, "images", "m1", dim_of={"m1": DIM})
    assert layout.created and layout.serving.collection == "images__m1" and layout.building is None
    assert catalog.alias_target("images") == "images__m1" and catalog.exists("images__m1")
    again = resolve(catalog, "images", "m1", dim_of={"m1": DIM})
    assert not again.created and again.serving == layout.serving


def test_another_configured_model_is_built_while_the_served_one_stays(catalog):
    resolve(catalog, "images", "m1", dim_of={"m1": DIM})
    layout = resolve(catalog, "images", "m2", dim_of={"m2": DIM})
    assert layout.serving.collection == "images__m1" and layout.serving.model == "m1"
    assert layout.building is not None and layout.building.collection == "images__m2"
    with pytest.raises(StoreError, match="images__m2"):  # not built yet: the alias cannot lead there
        catalog.switch_alias("images", "images__m2")
    assert catalog.alias_target("images") == "images__m1"
    put(catalog, "images__m2", 1, model="m2")
    catalog.switch_alias("images", "images__m2")
    assert resolve(catalog, "images", "m2", dim_of={"m2": DIM}).building is None


def test_a_collection_from_before_per_model_names_is_served_with_its_recorded_model(catalog):
    put(catalog, "images", 2, model="old_model")
    layout = resolve(catalog, "images", "m2", dim_of={"m2": DIM})
    assert layout.serving.collection == "images" and layout.serving.model == "old_model"
    assert layout.building is not None and layout.building.collection == "images__m2"


def test_model_names_that_cannot_name_a_collection_are_refused():
    assert collection_for("images", "mobilenet_v3") == "images__mobilenet_v3"
    assert model_of("images", "images__mobilenet_v3") == "mobilenet_v3" and model_of("images", "other") is None
    with pytest.raises(ConfigError):
        collection_for("images", "../escape")
