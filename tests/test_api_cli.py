"""`imgsim --api URL`: every command that runs against a deployed API, run in-process through ``cli.main`` against
`imgsim serve` (the real handlers, local S3 and queue) in a subprocess: a folder uploaded through presigned POSTs
and indexed (a file over the upload limit refused), search, compare, get, duplicates listed and resolved, delete, the trash listed and restored; the
errors a user meets (a wrong or missing key, an unknown id, a URL that is wrong or does not answer) as one line and
an exit code. The client alone, against a stub: tests/unit/test_api_client.py.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import pytest
from imgsim_tools import cli
from imgsim_tools.api_client import ROUTES, ApiClient, ApiError
from serve_support import API_KEY, Serve, free_port, running

pytestmark = pytest.mark.slow

# Far apart in the photo set (cats, dogs, monkeys, squirrels in blocks): no two are duplicates of each other.
SINGLES = {"cats/one.jpg": 10, "dogs/two.jpg": 500, "monkeys/three.jpg": 1000, "squirrels/four.jpg": 1400}
# Two exact copies each, under other names: two duplicate groups.
PAIRS = {"group-x/original.jpg": 700, "group-x/deeper/copy.jpg": 700,
         "group-y/original.jpg": 1600, "group-y/copy.jpg": 1600}


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Serve]:
    with running(tmp_path_factory.mktemp("api-cli") / "data") as serve:
        yield serve


@pytest.fixture(scope="module")
def folder(tmp_path_factory, photos) -> Path:
    root = tmp_path_factory.mktemp("upload")
    for name, n in {**SINGLES, **PAIRS}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photos[n], root / name)
    (root / "notes.txt").write_text("not an image")
    shutil.copyfile(photos[1], root / ".hidden.jpg")
    return root


@pytest.fixture(scope="module")
def uploaded(stack, folder) -> dict[str, str]:
    """The folder, uploaded with --wait --json once for the module: each file's id, by its name in the folder."""
    out, err = StringIO(), StringIO()
    with pytest.MonkeyPatch.context() as patch, redirect_stdout(out), redirect_stderr(err):
        patch.setenv("IMGSIM_API_KEY", API_KEY)
        code = cli.main(["--api", stack.api_url, "upload", str(folder), "--wait", "--timeout", "120", "--json"])
    assert code == 0, err.getvalue()
    report = json.loads(out.getvalue())
    assert report["failed"] == [] and report["skipped"] == [str(folder / "notes.txt")]
    assert all(u["indexed"] for u in report["uploads"])
    return {str(Path(u["path"]).relative_to(folder)): u["id"] for u in report["uploads"]}


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("IMGSIM_API_KEY", API_KEY)


def imgsim(capsys, url: str, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["--api", url, *argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- upload ---------------------------------------------------------------------------------------------------------


def test_upload_of_a_folder_skips_what_is_no_image_and_waits_for_indexing(uploaded, folder):
    assert sorted(uploaded) == sorted({**SINGLES, **PAIRS})  # recursive; hidden files and notes.txt left out
    assert len(set(uploaded.values())) == len(uploaded)


def test_upload_shows_progress_and_each_file(capsys, monkeypatch, stack, photos, tmp_path):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    for n in (200, 1200):
        shutil.copyfile(photos[n], tmp_path / f"p{n}.jpg")
    (tmp_path / "readme.md").write_text("#")
    code, out, err = imgsim(capsys, stack.api_url, "upload", str(tmp_path), "--wait", "--concurrency", "2")
    assert code == 0, err
    lines = out.splitlines()
    assert sorted(line.split(" -> ")[0] for line in lines[:2]) == [f"uploaded {tmp_path / 'p1200.jpg'}",
                                                                   f"uploaded {tmp_path / 'p200.jpg'}"]
    assert all(" -> uploads/" in line for line in lines[:2])
    assert lines[2].startswith("uploaded 2 (") and lines[2].endswith("skipped 1, failed 0")
    assert lines[3].startswith("indexed 2 of 2 in ")
    assert "uploading" in err and "B/s" in err  # the bytes bar, on the terminal
    assert "indexing" in err and "img" in err
    assert f"imgsim: warning: skipped {tmp_path / 'readme.md'}: not an image type the API takes" in err


def test_a_file_over_the_upload_limit_is_that_files_error(capsys, stack, photos, tmp_path):
    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as file:
        file.truncate(int(31.2 * 1024 * 1024))  # sparse: nothing written; never read either
    shutil.copyfile(photos[300], tmp_path / "fine.jpg")
    code, out, err = imgsim(capsys, stack.api_url, "upload", str(tmp_path))
    assert code == 1
    message = "31.2 MB is over this API's upload limit of 25 MB (IMGSIM_MAX_UPLOAD_MB)"
    assert err.splitlines() == [f"imgsim upload: {huge}: {message} (upload_too_large)"]
    assert out.splitlines()[0].startswith(f"uploaded {tmp_path / 'fine.jpg'} -> uploads/")
    assert out.splitlines()[1].endswith("skipped 0, failed 1")
    code, out, _ = imgsim(capsys, stack.api_url, "upload", str(huge), "--json")
    (failed,) = json.loads(out)["failed"]
    assert code == 1 and failed == {"path": str(huge), "status": None, "code": "upload_too_large", "error":
                                    f"{message} (upload_too_large)"}


def test_s3_refusing_a_file_as_too_large_is_one_clear_line(stack, tmp_path):
    """A client that believes the limit larger than the policy's sends the file: the local S3 refuses it as S3 does
    (EntityTooLarge, with the sizes), and the error says it in one line naming the limit S3 applied."""
    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as file:
        file.truncate(30 * 1024 * 1024)
    with ApiClient(stack.api_url, API_KEY) as api:
        upload = api.create_upload(huge.name, "image/jpeg")
        with pytest.raises(ApiError) as refused:
            api.post_upload({**upload, "max_bytes": 10 ** 9}, huge)
    assert (refused.value.status, refused.value.code) == (400, "EntityTooLarge")
    assert str(refused.value) == ("S3 refused the file: 30 MB is over this API's upload limit of 25 MB "
                                  "(IMGSIM_MAX_UPLOAD_MB) (HTTP 400 EntityTooLarge)")


def test_upload_without_api_is_a_usage_error(capsys, tmp_path):
    code = cli.main(["upload", str(tmp_path)])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "give --api URL" in err


# -- search and compare -----------------------------------------------------------------------------------------------


def test_search_prints_the_table_and_json(capsys, stack, uploaded, folder):
    query = folder / "monkeys/three.jpg"
    code, out, err = imgsim(capsys, stack.api_url, "search", str(query), "--limit", "3")
    assert code == 0, err
    header, first, *rest = out.splitlines()
    assert header.split() == ["rank", "similar", "score", "key"]
    assert first.split()[:3] == ["1", "100.0%", "1.0000"] and first.endswith("-three.jpg")
    assert first.split()[3].startswith("s3://imgsim-images/uploads/") and len(rest) == 2

    code, out, _ = imgsim(capsys, stack.api_url, "search", str(query), "--json", "--limit", "150", "--prefix", "uploads/")
    results = json.loads(out)["results"]
    assert code == 0 and results[0]["id"] == uploaded["monkeys/three.jpg"] and results[0]["similar"] is True
    assert {"id", "key", "score", "percent", "url", "width"} <= results[0].keys()
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True) and len(results) >= len(uploaded)

    code, out, _ = imgsim(capsys, stack.api_url, "search", str(query), "--prefix", "elsewhere/")
    assert code == 0 and out == "no matches\n"


def test_compare(capsys, stack, folder):
    same = folder / "group-x/original.jpg"
    code, out, _ = imgsim(capsys, stack.api_url, "compare", str(same), str(folder / "group-x/deeper/copy.jpg"))
    assert code == 0 and out == "100.0% similar (score 1.0000)\n"
    code, out, _ = imgsim(capsys, stack.api_url, "compare", str(same), str(folder / "cats/one.jpg"), "--json")
    answer = json.loads(out)
    assert code == 0 and answer["percent"] < 90 and answer["model"] and answer["a"] == str(same)


def test_search_with_no_image_names_the_file(capsys, stack, folder):
    code, out, err = imgsim(capsys, stack.api_url, "search", str(folder / "notes.txt"))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"imgsim: error: {folder / 'notes.txt'}: ") and "(HTTP 400 not_an_image)" in err
    code, _, err = imgsim(capsys, stack.api_url, "compare", str(folder / "missing.jpg"), str(folder / "notes.txt"))
    assert code == 2 and err == f"imgsim: error: {folder / 'missing.jpg'}: no such file\n"


# -- get -------------------------------------------------------------------------------------------------------------


def test_get_shows_the_image_and_its_group(capsys, stack, uploaded):
    original, copy = uploaded["group-x/original.jpg"], uploaded["group-x/deeper/copy.jpg"]
    code, out, _ = imgsim(capsys, stack.api_url, "get", copy, "--json")
    image = json.loads(out)
    assert code == 0 and image["id"] == copy and image["key"].endswith("-copy.jpg")
    assert image["url"].startswith(stack.s3_url) and image["width"] > 0
    # One of the two copies is the group's image to keep; the other names it.
    code, out, _ = imgsim(capsys, stack.api_url, "get", original, "--json")
    other = json.loads(out)
    assert {image.get("duplicate_of"), other.get("duplicate_of")} - {None} <= {original, copy}
    assert 1 in (image.get("duplicates"), other.get("duplicates"))

    code, out, _ = imgsim(capsys, stack.api_url, "get", copy)
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert code == 0 and fields["id"] == copy and fields["key"] == image["key"]
    # The link is signed per request (its X-Amz-Date moves with the clock): the same object, not the same string.
    assert fields["url"].split("?")[0] == image["url"].split("?")[0] and "X-Amz-Signature=" in fields["url"]


# -- duplicates ---------------------------------------------------------------------------------------------------------


def test_duplicates_list_every_page(capsys, stack, uploaded):
    code, out, _ = imgsim(capsys, stack.api_url, "duplicates", "--json")
    listed = json.loads(out)
    assert code == 0 and listed["next_cursor"] is None
    groups = {frozenset(m["id"] for m in g["members"]) for g in listed["groups"]}
    pair_x = frozenset({uploaded["group-x/original.jpg"], uploaded["group-x/deeper/copy.jpg"]})
    assert pair_x in groups
    # The CLI read every page; read one group a page, the client finds the same groups.
    with ApiClient(stack.api_url, API_KEY) as api:
        pages = list(api.all_duplicates(page_size=1))
    paged = [frozenset(m["id"] for m in g["members"]) for p in pages for g in p["groups"]]
    assert all(len(p["groups"]) <= 1 for p in pages) and len(paged) == len(groups) and set(paged) == groups

    code, out, _ = imgsim(capsys, stack.api_url, "duplicates")
    assert code == 0 and out.splitlines()[-1].endswith(f"images at threshold {listed['threshold']}")
    assert f"({uploaded['group-x/deeper/copy.jpg']})" in out
    code, out, _ = imgsim(capsys, stack.api_url, "duplicates", "--csv")
    assert code == 0 and out.splitlines()[0].startswith("group,keep,id,key")


def test_resolve_is_a_dry_run_until_yes_then_restore_brings_the_copy_back(capsys, stack, uploaded):
    keep, copy = uploaded["group-y/original.jpg"], uploaded["group-y/copy.jpg"]
    code, out, err = imgsim(capsys, stack.api_url, "duplicates", "--resolve", "--keep", keep, "--remove", copy)
    assert code == 0 and out.startswith("would move to the trash: uploads/") and out.endswith(f"-copy.jpg ({copy})\n")
    assert "dry run: nothing moved" in err
    assert stack.request("GET", f"/images/{copy}")[0] == 200

    code, out, _ = imgsim(capsys, stack.api_url, "duplicates", "--resolve", "--keep", keep, "--remove", copy, "--yes")
    assert code == 0 and out.startswith("moved to the trash: uploads/") and f"-copy.jpg ({copy}); restore with" in out
    trash_id = out.split("`imgsim trash restore ")[1].split("`")[0]
    stack.wait_gone(copy)
    code, out, _ = imgsim(capsys, stack.api_url, "trash", "restore", trash_id)
    assert code == 0 and out.startswith("restored uploads/") and out.endswith(f"-copy.jpg ({copy})\n")
    assert stack.request("GET", f"/images/{copy}")[0] == 200


def test_resolve_refuses_what_is_no_duplicate(capsys, stack, uploaded):
    code, out, err = imgsim(capsys, stack.api_url, "duplicates", "--resolve", "--keep", uploaded["cats/one.jpg"],
                            "--remove", uploaded["dogs/two.jpg"], "--yes")
    assert code == 1 and out == "" and err.startswith("imgsim duplicates: ") and err.count("\n") == 1
    assert stack.request("GET", f"/images/{uploaded['dogs/two.jpg']}")[0] == 200
    code, _, err = imgsim(capsys, stack.api_url, "duplicates", "--rescan")
    assert code == 2 and "run it without --api" in err


# -- delete and the trash -----------------------------------------------------------------------------------------------


def test_delete_then_the_trash_lists_it_and_restore_brings_it_back(capsys, stack, uploaded):
    image = uploaded["squirrels/four.jpg"]
    code, out, _ = imgsim(capsys, stack.api_url, "delete", image)
    assert code == 0 and out.startswith("moved to the trash: uploads/") and f"-four.jpg ({image}); restore" in out
    trash_id = out.split("`imgsim trash restore ")[1].split("`")[0]

    code, out, err = imgsim(capsys, stack.api_url, "get", image)
    assert code == 1 and out == "" and err == f"imgsim get: {image}: no indexed image with id {image}\n"
    code, out, _ = imgsim(capsys, stack.api_url, "trash", "list")
    (line,) = [line for line in out.splitlines() if line.startswith(trash_id)]
    assert line.endswith("-four.jpg") and " until " in line
    assert out.splitlines()[-1].endswith("in the trash (kept 30 days)")
    code, out, _ = imgsim(capsys, stack.api_url, "trash", "list", "--json")
    listed = json.loads(out)
    (entry,) = [i for i in listed["items"] if i["id"] == trash_id]
    assert code == 0 and entry["image_id"] == image and listed["trash_days"] == 30

    code, out, _ = imgsim(capsys, stack.api_url, "trash", "restore", trash_id)
    assert code == 0 and out.startswith("restored uploads/") and out.endswith(f"-four.jpg ({image})\n")
    code, out, _ = imgsim(capsys, stack.api_url, "get", image, "--json")
    assert code == 0 and json.loads(out)["id"] == image
    code, _, err = imgsim(capsys, stack.api_url, "trash", "restore", trash_id)
    assert code == 1 and err == f"imgsim trash: nothing in the trash with id {trash_id}\n"
    code, _, err = imgsim(capsys, stack.api_url, "trash", "empty", "--yes")
    assert code == 2 and "the API has no route to empty the trash" in err


def test_delete_reports_each_unknown_id_and_refuses_keys(capsys, stack):
    unknown = "00000000-0000-4000-8000-000000000000"
    code, out, err = imgsim(capsys, stack.api_url, "delete", unknown)
    assert code == 1 and out == "" and err == f"imgsim delete: {unknown}: no indexed image with id {unknown}\n"
    code, out, err = imgsim(capsys, stack.api_url, "delete", unknown, "photos/cat.jpg")
    assert code == 2 and out == ""  # nothing deleted: the key is refused first
    assert err == "imgsim delete: photos/cat.jpg: through the API an image is named by its id (a UUID), not by its key\n"


# -- errors -------------------------------------------------------------------------------------------------------------


def test_a_wrong_key_is_one_line_and_exit_2(capsys, monkeypatch, stack, folder):
    monkeypatch.setenv("IMGSIM_API_KEY", "not-the-key")
    for argv in (["search", str(folder / "cats/one.jpg")], ["trash", "list"], ["duplicates"],
                 ["upload", str(folder / "cats")]):
        code, out, err = imgsim(capsys, stack.api_url, *argv)
        assert code == 2 and out == "", argv
        assert err == ("imgsim: error: the x-api-key header is not a key this API accepts (revoked, or mistyped) "
                       "(HTTP 401 invalid_api_key); check IMGSIM_API_KEY\n"), argv


def test_keys_made_with_imgsim_keys_work_at_once_with_their_scopes_until_revoked(capsys, monkeypatch, stack, folder,
                                                                                 uploaded):
    """The local stack reads the ring `imgsim keys` writes in its data dir on every request; the key's name (never
    the key) is in the function's log lines."""
    ring = ["keys", "--data-dir", str(stack.data_dir)]
    assert cli.main([*ring, "create", "--name", "reader", "--scopes", "search"]) == 0
    key = capsys.readouterr().out.strip()
    monkeypatch.setenv("IMGSIM_API_KEY", key)
    code, out, err = imgsim(capsys, stack.api_url, "search", str(folder / "cats/one.jpg"), "--json")
    assert code == 0, err
    assert json.loads(out)["results"][0]["id"] == uploaded["cats/one.jpg"]
    code, out, err = imgsim(capsys, stack.api_url, "delete", uploaded["dogs/two.jpg"])
    assert code == 2 and "key 'reader' lacks the 'delete' scope" in err and "imgsim keys create" in err
    assert cli.main([*ring, "revoke", "reader"]) == 0
    capsys.readouterr()
    code, _, err = imgsim(capsys, stack.api_url, "search", str(folder / "cats/one.jpg"))
    assert code == 2 and "invalid_api_key" in err
    logs = stack.stdout()
    assert '"api_key":"reader"' in logs.replace(" ", "") and key not in logs and key not in stack.stderr()


def test_a_tenant_key_uploads_into_its_tenant_and_sees_only_its_images(capsys, monkeypatch, stack, photos, tmp_path,
                                                                       uploaded):
    """`imgsim --api` with a tenant key: its upload lands under tenants/<tenant>/, its searches and listings show
    only its images, and the images of no tenant (the module's uploads) are absent to it, and it to them."""
    ring = ["keys", "--data-dir", str(stack.data_dir)]
    assert cli.main([*ring, "create", "--name", "acme-cli", "--scopes", "search", "upload", "delete",
                     "--tenant", "acme"]) == 0
    key = capsys.readouterr().out.strip()
    photo = tmp_path / "acme-photo.jpg"
    shutil.copyfile(photos[1650], photo)
    monkeypatch.setenv("IMGSIM_API_KEY", key)
    code, out, err = imgsim(capsys, stack.api_url, "upload", str(photo), "--wait", "--json")
    assert code == 0, err
    (upload,) = json.loads(out)["uploads"]
    assert upload["key"].startswith("tenants/acme/") and upload["indexed"]
    code, out, err = imgsim(capsys, stack.api_url, "search", str(photo), "--json")
    assert code == 0, err
    assert [r["id"] for r in json.loads(out)["results"]] == [upload["id"]]
    code, out, _ = imgsim(capsys, stack.api_url, "duplicates", "--json")
    assert code == 0 and json.loads(out)["groups"] == []  # the module's duplicate groups are of no tenant
    code, _, err = imgsim(capsys, stack.api_url, "get", uploaded["cats/one.jpg"])
    assert code == 1 and "no indexed image with id" in err
    monkeypatch.setenv("IMGSIM_API_KEY", API_KEY)  # no tenant: the tenant's image is absent
    code, _, err = imgsim(capsys, stack.api_url, "get", upload["id"])
    assert code == 1 and "no indexed image with id" in err
    assert cli.main([*ring, "revoke", "acme-cli"]) == 0


def test_a_missing_key_is_a_usage_error(capsys, monkeypatch, stack):
    monkeypatch.delenv("IMGSIM_API_KEY")
    code, out, err = imgsim(capsys, stack.api_url, "trash", "list")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("imgsim: error: --api needs the API's key in IMGSIM_API_KEY (")


def test_a_url_that_does_not_answer_or_is_no_url(capsys):
    port = free_port()  # nothing listens there
    code, out, err = imgsim(capsys, f"http://127.0.0.1:{port}", "trash", "list")
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith(f"imgsim: error: cannot reach http://127.0.0.1:{port}: ") and err.endswith("(unreachable)\n")
    code, _, err = imgsim(capsys, "127.0.0.1:3000", "trash", "list")
    assert code == 2 and err == "imgsim: error: --api: the API URL must be http(s)://host[/stage], got '127.0.0.1:3000'\n"


def test_a_url_of_another_service(capsys, stack):
    """A URL answering in its own way (here the local S3: XML errors): still one line."""
    code, out, err = imgsim(capsys, stack.s3_url, "trash", "list")
    assert code == 1 and out == "" and err == "imgsim: error: The specified bucket does not exist (HTTP 404 NoSuchBucket)\n"


def test_commands_without_a_remote_path_refuse_api(capsys, stack, folder):
    code, _, err = imgsim(capsys, stack.api_url, "index", str(folder))
    assert code == 2 and err == "imgsim: error: imgsim index works on Qdrant or local files, not through the API: drop --api\n"
    code = cli.main(["--api", stack.api_url, "--qdrant-path", "/tmp/q", "search", str(folder / "cats/one.jpg")])
    _, err = capsys.readouterr()
    assert code == 2 and "--qdrant-path is for a direct Qdrant connection" in err


# -- the contract -------------------------------------------------------------------------------------------------------


def test_every_route_the_client_calls_is_in_the_document(stack):
    with ApiClient(stack.api_url, API_KEY) as api:
        document = api.openapi()
        assert api.health()["status"] == "ok"
    declared = {(method, path) for path, item in document["paths"].items() for method in item}
    assert set(ROUTES) <= declared, set(ROUTES) - declared
