"""imgsim.composition.Root: one object per process builds each shared object once, from one AppSettings."""

from __future__ import annotations

from typing import Any

from fakes import FakeEmbedder, FakeS3, encode, picture
from imgsim.composition import Root
from imgsim.pipeline import INDEXED, PUT, ObjectEvent, UnavailablePipeline
from imgsim.settings import Settings, load
from imgsim.store import Catalog
from roots import server_catalogs


def fake_root(variables: dict[str, str] | None = None, **kwargs: Any) -> tuple[Root, list[str], FakeS3]:
    made: list[str] = []
    s3 = FakeS3()

    def embedders(model: str, settings: Settings) -> FakeEmbedder:
        made.append(model)
        return FakeEmbedder(model, settings=settings)

    root = Root(load({"IMGSIM_MODEL": "fake", **(variables or {})}), embedders=embedders,
                catalogs=kwargs.pop("catalogs", server_catalogs()), clients=lambda service: s3, **kwargs)
    return root, made, s3


def test_each_shared_object_is_built_once_and_kept() -> None:
    root, made, s3 = fake_root()
    assert root.store() is root.store()
    assert root.embedder() is root.embedder() is root.embedder("fake")
    assert root.s3() is root.client("s3") is s3
    assert made == ["fake"]
    assert root.layout().serving.collection == "images__fake" and root.building() is None


def test_the_qdrant_key_is_read_from_ssm_once_and_only_for_a_server() -> None:
    reads: list[str] = []

    def read_secret(name: str) -> str:
        reads.append(name)
        return "from-ssm"

    local, _, _ = fake_root({"QDRANT_API_KEY_PARAM": "/imgsim/qdrant"}, read_secret=read_secret)
    assert local.engine.qdrant_api_key is None and reads == []  # the embedded store never reads SSM
    server, _, _ = fake_root({"QDRANT_URL": "http://qdrant:6333", "QDRANT_API_KEY_PARAM": "/imgsim/qdrant"},
                             read_secret=read_secret)
    assert server.engine.qdrant_api_key == "from-ssm" and server.engine.qdrant_api_key == "from-ssm"
    assert reads == ["/imgsim/qdrant"]


def test_the_pipeline_indexes_into_the_served_collection() -> None:
    root, _, s3 = fake_root()
    s3.put("imgsim-images", "photos/a.jpg", encode(picture(1)))
    report = root.pipeline().process_events([ObjectEvent("m1", PUT, "imgsim-images", "photos/a.jpg")])
    assert [o.status for o in report.outcomes] == [INDEXED]
    assert root.store().count() == 1


def test_an_unreachable_store_fails_every_event_for_redelivery() -> None:
    from imgsim.errors import StoreUnavailable

    def unreachable(_settings: Settings) -> Catalog:
        raise StoreUnavailable("connection refused")

    root, _, _ = fake_root(catalogs=unreachable)
    pipeline = root.pipeline()
    assert isinstance(pipeline, UnavailablePipeline)
    report = pipeline.process_events([ObjectEvent("m1", PUT, "imgsim-images", "photos/a.jpg")])
    assert report.failed_message_ids == ["m1"]


def test_close_forgets_what_was_built() -> None:
    root, made, _ = fake_root()
    first = root.store()
    root.close()
    assert root.store() is not first
    assert made == ["fake", "fake"]


def test_a_function_module_builds_its_root_once_or_takes_the_one_handed_over() -> None:
    from imgsim.composition import RootHolder

    changes: list[str] = []
    holder = RootHolder(on_change=lambda: changes.append("changed"))
    built = holder.get()
    assert holder.get() is built  # one root per execution environment
    mine, _, _ = fake_root()
    holder.use(mine)
    assert holder.get() is mine and changes == ["changed"]
