"""Every service as two tenants (and a caller of no tenant) see it: ``Services.for_tenant`` on the memory store.

The same picture is indexed three times: by acme, by globex and outside ``tenants/`` (no tenant), each with a copy
linked as its duplicate. Each caller must see its own three-of-a-kind only, and another tenant's image must answer
exactly as an image nobody has: the same error, the same message but for the id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fakes_services import FakeEmbedder, image, link, put, settings, vector_of
from imgsim.errors import NotFound
from imgsim.services import (
    DuplicatesQuery,
    ImageQuery,
    RecommendRequest,
    Resolution,
    SearchRequest,
    Services,
    UploadRequest,
)
from imgsim.store.scoped import ALL_TENANTS, SHARED_COMPANIONS
from imgsim.trash import LOCKS_SUFFIX, Locks

ABSENT = "00000000-0000-4000-8000-000000000000"
OWNERS: tuple[str | None, ...] = ("acme", "globex", None)


def folder(owner: str | None) -> str:
    return f"tenants/{owner}/" if owner else "shared/"


@pytest.fixture
def services(store, objects) -> Services:
    embedder = FakeEmbedder()
    return Services.build(settings(), store=lambda: store, embedder=lambda: embedder, objects=lambda: objects,
                          read_secret=lambda name: "")


@pytest.fixture
def library(store) -> dict[str, str]:
    """``"<owner>/<name>"`` -> id: the same picture (and a linked copy) in each tenant and outside tenants/."""
    ids: dict[str, str] = {}
    for owner in OWNERS:
        tenant = {"tenant": owner} if owner else {}
        ids[f"{owner}/a"] = put(store, f"{folder(owner)}a.jpg", vector_of("same"), etag=f"{owner}-a", width=1000,
                                height=800, **tenant)
        ids[f"{owner}/b"] = put(store, f"{folder(owner)}b.jpg", vector_of("same"), etag=f"{owner}-b", **tenant)
        link(store, ids[f"{owner}/b"], ids[f"{owner}/a"])
    return ids


def keys_of(results: list[dict[str, Any]]) -> set[str]:
    return {str(r["key"]) for r in results}


def as_absent(call: Callable[[str], object], foreign: str) -> None:
    """``call`` with another tenant's id fails exactly as with an id nobody has."""
    with pytest.raises(NotFound) as absent:
        call(ABSENT)
    with pytest.raises(NotFound) as hidden:
        call(foreign)
    assert str(hidden.value).replace(foreign, ABSENT) == str(absent.value)


def test_search_by_bytes_id_and_key_sees_the_callers_tenant_only(services, library):
    for owner in OWNERS:
        mine = services.for_tenant(owner).search
        found = mine.search(SearchRequest(ImageQuery(image=image("same")), limit=10))
        assert keys_of(found["results"]) == {f"{folder(owner)}a.jpg", f"{folder(owner)}b.jpg"}
        by_id = mine.search(SearchRequest(ImageQuery(point_id=library[f"{owner}/a"]), limit=10))
        assert keys_of(by_id["results"]) == {f"{folder(owner)}b.jpg"}
        collapsed = mine.search(SearchRequest(ImageQuery(image=image("same")), limit=10, collapse=True))
        assert [r["duplicates"] for r in collapsed["results"]] == [1]
        by_key = mine.search(SearchRequest(ImageQuery(key=f"{folder(owner)}b.jpg"), limit=10))
        assert keys_of(by_key["results"]) == {f"{folder(owner)}a.jpg"}
    acme = services.for_tenant("acme").search
    for other in ("globex", None):
        as_absent(lambda i: acme.search(SearchRequest(ImageQuery(point_id=i))), library[f"{other}/a"])
    with pytest.raises(NotFound) as absent:
        acme.search(SearchRequest(ImageQuery(key="tenants/acme/nothing.jpg")))
    with pytest.raises(NotFound) as hidden:
        acme.search(SearchRequest(ImageQuery(key="tenants/globex/a.jpg")))
    assert str(hidden.value).replace("tenants/globex/a.jpg", "tenants/acme/nothing.jpg") == str(absent.value)


def test_operators_see_every_tenant_and_count_them_all(services, library):
    assert services.visibility is ALL_TENANTS
    found = services.search.search(SearchRequest(ImageQuery(image=image("same")), limit=10))
    assert len(found["results"]) == 6
    assert services.search.visible_images() == 6
    assert services.for_tenant("acme").search.visible_images() < 6


def test_get_an_image_and_its_group_within_the_tenant(services, library):
    acme = services.for_tenant("acme").images
    shown = acme.get(library["acme/b"])
    assert shown["tenant"] == "acme" and shown["duplicate_of"] == library["acme/a"]
    assert acme.get(library["acme/a"])["duplicates"] == 1
    assert services.for_tenant(None).images.get(library["None/a"])["duplicates"] == 1
    for other in ("globex/a", "None/b"):
        as_absent(acme.get, library[other])
    as_absent(services.for_tenant(None).images.get, library["acme/a"])


def test_a_tenants_uploads_land_in_its_folder(services):
    request = UploadRequest(filename="../../other/cat.jpg", content_type="image/jpeg")
    acme = services.for_tenant("acme").images.create_upload(request)
    assert acme["key"].startswith("tenants/acme/uploads/") and acme["key"].endswith("-cat.jpg")
    for untenanted in (services.for_tenant(None), services):
        assert untenanted.images.create_upload(request)["key"].startswith("uploads/")


def test_delete_never_leases_another_tenants_image(services, library, store, objects, monkeypatch):
    leased: list[str] = []
    take = Locks._take
    monkeypatch.setattr(Locks, "_take", lambda self, point_id, token: leased.append(point_id) or take(
        self, point_id, token))
    globex = services.for_tenant("globex").trash
    # acme is deleting its image right now (holds the lease): globex's delete of that id is a 404, never a 409 busy.
    with services.for_tenant("acme").trash.locks().held([library["acme/a"]]):
        as_absent(globex.delete, library["acme/a"])
    assert leased == [library["acme/a"]]  # acme's own lease only
    assert objects.copied == [] and store.get(library["acme/a"]) is not None
    moved = services.for_tenant("acme").trash.delete(library["acme/a"])
    assert moved["status"] == "trashed" and store.get(library["acme/a"]) is None


def test_the_trash_is_the_tenants_own(services, library):
    acme, globex, nobody = (services.for_tenant(owner).trash for owner in OWNERS)
    trash_id = acme.delete(library["acme/a"])["trash_id"]
    nobody.delete(library["None/a"])
    assert [i["image_id"] for i in acme.list()["items"]] == [library["acme/a"]]
    assert globex.list()["items"] == [] and [i["key"] for i in nobody.list()["items"]] == ["shared/a.jpg"]
    assert len(services.trash.list()["items"]) == 2  # operators (imgsim trash list) see all of it
    as_absent(globex.restore, trash_id)
    as_absent(nobody.restore, trash_id)
    assert acme.restore(trash_id)["status"] == "restored"


def test_duplicate_groups_and_their_cursors_stay_within_the_tenant(services, library, store):
    # More groups in acme, so its pages have cursors.
    for n in range(3):
        a = put(store, f"tenants/acme/g{n}/a.jpg", vector_of(f"g{n}"), etag="x", width=1000, height=800, tenant="acme")
        b = put(store, f"tenants/acme/g{n}/b.jpg", vector_of(f"g{n}"), etag="y", tenant="acme")
        link(store, b, a)
    acme, globex = services.for_tenant("acme").curation, services.for_tenant("globex").curation
    first = acme.duplicates(DuplicatesQuery(limit=2))
    assert first["next_cursor"] and all(m["key"].startswith("tenants/acme/") for g in first["groups"]
                                        for m in g["members"])
    rest = acme.duplicates(DuplicatesQuery(limit=100, cursor=first["next_cursor"]))
    assert len(first["groups"]) + len(rest["groups"]) == 4
    # acme's cursor given to globex shows globex's groups from that point on, nothing of acme's.
    leaked = globex.duplicates(DuplicatesQuery(limit=100, cursor=first["next_cursor"]))
    assert all(m["key"].startswith("tenants/globex/") for g in leaked["groups"] for m in g["members"])
    (own,) = globex.duplicates(DuplicatesQuery(limit=100))["groups"]
    assert {m["id"] for m in own["members"]} == {library["globex/a"], library["globex/b"]}
    assert [g["keep"] for g in services.for_tenant(None).curation.duplicates(DuplicatesQuery())["groups"]] == [
        library["None/a"]]


def test_resolve_refuses_another_tenants_images_as_absent_without_leasing_them(services, library, monkeypatch):
    leased: list[str] = []
    take = Locks._take
    monkeypatch.setattr(Locks, "_take", lambda self, point_id, token: leased.append(point_id) or take(
        self, point_id, token))
    globex = services.for_tenant("globex").curation
    as_absent(lambda i: globex.resolve(Resolution(keep=i, remove=[library["globex/b"]])), library["acme/a"])
    as_absent(lambda i: globex.resolve(Resolution(keep=library["globex/a"], remove=[i])), library["acme/b"])
    as_absent(lambda i: globex.resolve(Resolution(keep=library["globex/a"], not_duplicates=[i])), library["None/b"])
    assert leased == []
    done = globex.resolve(Resolution(keep=library["globex/a"], remove=[library["globex/b"]]))
    assert [r["id"] for r in done["removed"]] == [library["globex/b"]]


def test_recommend_within_the_tenant(services, library):
    acme = services.for_tenant("acme").curation
    found = acme.recommend(RecommendRequest(positive=[library["acme/a"]]))
    assert keys_of(found["results"]) == {"tenants/acme/b.jpg"}
    found = acme.recommend(RecommendRequest(positive=["tenants/acme/a.jpg"]))
    assert keys_of(found["results"]) == {"tenants/acme/b.jpg"}
    as_absent(lambda i: acme.recommend(RecommendRequest(positive=[i])), library["globex/a"])
    as_absent(lambda i: acme.recommend(RecommendRequest(positive=[library["acme/a"]], negative=[i])),
              library["None/a"])


def test_only_the_leases_are_shared_between_tenants():
    """imgsim.store.scoped names the leases' companion itself (imgsim.trash imports the store, not the reverse)."""
    assert SHARED_COMPANIONS == (LOCKS_SUFFIX,)
