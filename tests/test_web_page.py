"""The web page in a real headless Chromium (Debian's `chromium`, driven by Playwright) against `imgsim serve`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from serve_support import API_KEY, Serve, running

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
# No network beyond localhost, no first-run work, no sandbox (containers run as root).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running(tmp_path_factory.mktemp("web") / "data") as serve:
        yield serve


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (installs Debian's chromium) before these tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, stack):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    page.on("dialog", lambda dialog: dialog.accept())  # none expected: deletes go to the trash, with an undo
    page.goto(stack.api_url + "/")
    yield page
    context.close()
    assert not page_errors, page_errors


def enter_key(page, key: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#key-dialog")).to_be_visible()
    page.fill("#api-key", key)
    page.click("#save-key")


def test_add_three_photos_then_search_with_one_finds_it_first(page, stack, photos, tmp_path):
    from playwright.sync_api import expect

    enter_key(page, API_KEY)
    expect(page.locator("#key-dialog")).to_be_hidden()
    chosen = [photos[10], photos[700], photos[1200]]  # a cat, a dog, a squirrel
    page.set_input_files("#add-files", [str(p) for p in chosen])
    # Each upload shows its progress and then when it is indexed.
    expect(page.locator("#uploads li")).to_have_count(3)
    expect(page.locator('#uploads li[data-state="indexed"]')).to_have_count(3, timeout=90_000)
    expect(page.locator("#mine .card")).to_have_count(3)
    assert all(page.eval_on_selector_all("#uploads progress", "bars => bars.map(b => b.value === 100)"))

    page.set_input_files("#search-file", str(chosen[1]))
    # The status names the query once its results are drawn (never a grid left from before).
    expect(page.locator("#search-status")).to_contain_text(f"most similar to {chosen[1].name}", timeout=30_000)
    first = page.locator("#results .card").first
    shown = page.eval_on_selector_all("#results .card", "cards => cards.map(c => [c.dataset.key, c.innerText])")
    assert first.get_attribute("data-key").endswith(chosen[1].name), shown
    percent = float(first.locator(".percent").inner_text().rstrip("%"))
    assert percent >= 99.0
    # Thumbnails are the presigned URLs of the results, and they load.
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)",
        timeout=15_000)
    expect(page.locator("#results .card")).to_have_count(3)
    expect(page.locator("#health")).to_contain_text("3 images indexed")
    page.screenshot(path=str(tmp_path / "search.png"), full_page=True)

    # Compare two images: the same photo twice is 100%, a cat and a monkey much less.
    page.set_input_files("#compare-a", str(chosen[0]))
    page.set_input_files("#compare-b", str(chosen[0]))
    page.click("#compare-button")
    expect(page.locator("#compare-result")).to_have_text("100.0%", timeout=30_000)
    page.set_input_files("#compare-b", str(chosen[2]))
    page.click("#compare-button")
    expect(page.locator("#compare-result")).to_have_text(re.compile(r"^\d+\.\d%$"), timeout=30_000)
    assert float(page.locator("#compare-result").inner_text().rstrip("%")) < 90.0

    # "Similar" on a card searches by the indexed image (itself excluded).
    target_key = first.get_attribute("data-key")
    first.get_by_role("button", name="Similar").click()
    expect(page.locator("#target-caption")).to_contain_text("(indexed)")
    expect(page.locator("#results .card")).to_have_count(2, timeout=30_000)
    assert target_key not in page.eval_on_selector_all("#results .card", "cards => cards.map(c => c.dataset.key)")

    # A mirrored copy of an indexed photo: once indexed, its row says whose duplicate it looks like.
    from PIL import Image, ImageOps

    mirrored = tmp_path / "mirrored-dog.jpg"
    ImageOps.mirror(Image.open(chosen[1]).convert("RGB")).save(mirrored, "JPEG", quality=90)
    page.set_input_files("#add-files", str(mirrored))
    row = page.locator("#uploads li", has_text="mirrored-dog.jpg")
    expect(row).to_have_attribute("data-state", "indexed", timeout=90_000)
    expect(row).to_contain_text(re.compile(r"looks like a duplicate of uploads/\S+-" + re.escape(chosen[1].name)
                                           + r" \((9\d|100)\.\d %\)"))

    # Delete one image (the mirrored copy): it moves to the trash and leaves search at once; Undo brings it back.
    mine = page.locator("#mine .card").first
    deleted_id = mine.get_attribute("data-id")
    mine.get_by_role("button", name="Delete").click()
    toast = page.locator("#toast")
    expect(toast).to_contain_text("mirrored-dog.jpg moved to the trash")
    expect(page.locator(f'.card[data-id="{deleted_id}"]')).to_have_count(0)
    expect(page.locator("#mine .card")).to_have_count(3)
    expect(page.locator("#health")).to_contain_text("3 images indexed")
    assert stack.request("GET", f"/images/{deleted_id}")[0] == 404
    dog_again = tmp_path / "dog-again.jpg"  # another file: choosing the same one again is no change of the input
    dog_again.write_bytes(chosen[1].read_bytes())
    page.set_input_files("#search-file", str(dog_again))
    expect(page.locator("#search-status")).to_contain_text("3 most similar to dog-again.jpg", timeout=30_000)
    assert deleted_id not in page.eval_on_selector_all("#results .card", "cards => cards.map(c => c.dataset.id)")

    toast.get_by_role("button", name="Undo").click()
    expect(toast).to_contain_text("Restored mirrored-dog.jpg")
    expect(page.locator(f'#mine .card[data-id="{deleted_id}"]')).to_have_count(1)
    expect(page.locator("#mine .card")).to_have_count(4)
    expect(page.locator("#health")).to_contain_text("4 images indexed")
    assert stack.request("GET", f"/images/{deleted_id}")[0] == 200
    page.set_input_files("#search-file", str(chosen[1]))
    expect(page.locator("#search-status")).to_contain_text(f"4 most similar to {chosen[1].name}", timeout=30_000)
    assert page.eval_on_selector_all("#results .card", "cards => cards.map(c => c.dataset.id)")[1] == deleted_id
    expect(page.locator("#alerts")).to_be_empty()


def test_a_wrong_key_is_refused_and_errors_are_shown(page, tmp_path):
    from playwright.sync_api import expect

    enter_key(page, "not-the-key")
    expect(page.locator("#key-error")).to_contain_text("401")
    expect(page.locator("#key-dialog")).to_be_visible()
    enter_key(page, API_KEY)
    expect(page.locator("#key-dialog")).to_be_hidden()
    # A file that is not an image: the API's 400 message is shown, not swallowed.
    not_image = tmp_path / "notes.jpg"
    not_image.write_bytes(b"this is not a picture")
    page.set_input_files("#search-file", str(not_image))
    expect(page.locator("#alerts")).to_contain_text("HTTP 400", timeout=30_000)
    expect(page.locator("#search-status")).to_have_text("search failed")


def make_key(stack, name: str, *scopes: str, tenant: str | None = None) -> str:
    """A key of the stack's ring, as `imgsim keys create` makes it (the stack reads the ring on every request)."""
    from contextlib import redirect_stderr, redirect_stdout
    from io import StringIO

    from imgsim_tools import cli

    out = StringIO()
    with redirect_stdout(out), redirect_stderr(StringIO()):
        assert cli.main(["keys", "--data-dir", str(stack.data_dir), "create", "--name", name,
                         "--scopes", *scopes, *(["--tenant", tenant] if tenant else [])]) == 0
    return out.getvalue().strip()


def test_the_page_shows_the_key_and_only_what_its_scopes_allow(fresh_page, fresh_stack, photos, tmp_path):
    """An upload-only key: only the upload panel, and an upload is reported without polling GET /images (which it
    may not call). A search-only key: it finds that image; no upload panel, no Delete/Restore/resolve buttons."""
    from playwright.sync_api import expect

    page = fresh_page
    uploader = make_key(fresh_stack, "page-uploader", "upload", tenant="acme")
    enter_key(page, uploader)
    expect(page.locator("#key-dialog")).to_be_hidden()
    expect(page.locator("#who")).to_have_text("page-uploader · tenant acme · upload")
    for hidden in ("search-title", "compare-title", "dups-title", "mine-title", "trash-title"):
        expect(page.locator(f'section[aria-labelledby="{hidden}"]')).to_be_hidden()
    page.set_input_files("#add-files", str(photos[1300]))
    expect(page.locator('#uploads li[data-state="indexed"]')).to_contain_text("cannot search", timeout=60_000)
    expect(page.locator("#alerts")).to_be_empty()
    expect(page.locator("#health")).to_contain_text("1 image indexed", timeout=60_000)

    page.click("#change-key")
    reader = make_key(fresh_stack, "page-reader", "search", tenant="acme")
    enter_key(page, reader)
    expect(page.locator("#key-dialog")).to_be_hidden()
    expect(page.locator("#who")).to_have_text("page-reader · tenant acme · search")
    expect(page.locator('section[aria-labelledby="add-title"]')).to_be_hidden()
    page.set_input_files("#search-file", str(photos[1300]))
    expect(page.locator("#search-status")).to_contain_text("1 most similar to", timeout=30_000)
    card = page.locator("#results .card").first
    expect(card).to_have_attribute("data-key", re.compile(r"^tenants/acme/uploads/"))  # the tenant's folder
    expect(card.get_by_role("button", name="Similar")).to_be_visible()
    expect(card.locator('button[data-needs="delete"]')).to_be_hidden()
    page.click("#trash-button")
    expect(page.locator("#trash-status")).not_to_have_text("", timeout=15_000)
    expect(page.locator("#alerts")).to_be_empty()

    # Another tenant's key (every scope) does not see it: the same search finds nothing.
    page.click("#change-key")
    enter_key(page, make_key(fresh_stack, "page-other", "search", "upload", "delete", tenant="globex"))
    expect(page.locator("#who")).to_have_text("page-other · tenant globex · search, upload, delete")
    again = tmp_path / "same-photo.jpg"  # another name: choosing the same file again fires no change event
    again.write_bytes(photos[1300].read_bytes())
    page.set_input_files("#search-file", str(again))
    expect(page.locator("#search-status")).to_contain_text("no indexed images match same-photo.jpg", timeout=30_000)

    # "Images added from this browser" is kept per tenant: another tenant's key neither shows nor forgets them.
    acme_full = make_key(fresh_stack, "page-acme", "search", "upload", tenant="acme")
    for key, shown in ((acme_full, None), (make_key(fresh_stack, "page-globex", "search", tenant="globex"), 0),
                       (acme_full, 1)):
        page.click("#change-key")
        enter_key(page, key)
        expect(page.locator("#key-dialog")).to_be_hidden()
        if shown is None:  # acme adds one
            page.set_input_files("#add-files", str(photos[1301]))
            expect(page.locator("#mine .card")).to_have_count(1, timeout=60_000)
        else:
            expect(page.locator("#mine .card")).to_have_count(shown, timeout=15_000)
    expect(page.locator("#alerts")).to_be_empty()


def test_a_file_over_the_upload_limit_is_refused_before_any_request_for_it(page, stack, tmp_path):
    from playwright.sync_api import expect

    enter_key(page, API_KEY)
    expect(page.locator("#key-dialog")).to_be_hidden()
    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as file:
        file.truncate(int(31.2 * 1024 * 1024))  # over the stack's default limit, 25 MB (IMGSIM_MAX_UPLOAD_MB)
    asked: list[tuple[str, str]] = []
    page.on("request", lambda request: asked.append((request.method, request.url)))
    page.set_input_files("#add-files", str(huge))
    row = page.locator("#uploads li", has_text="huge.jpg")
    expect(row).to_have_attribute("data-state", "error", timeout=30_000)
    message = "31.2 MB is over this API's upload limit of 25 MB"
    expect(row).to_contain_text(message)
    expect(page.locator("#alerts")).to_have_text(f"huge.jpg: {message}")
    expect(page.locator("#upload-limit")).to_have_text(", up to 25 MB each")  # shown from GET /me
    # Nothing went out for it (GET /me was asked when the key was entered): no presigned POST, nothing sent to S3.
    assert not [url for method, url in asked if method == "POST"], asked
    assert not [url for _, url in asked if url.startswith(stack.s3_url)], asked


def test_s3_refusing_a_file_as_too_large_is_shown_with_the_limit(page, stack, tmp_path):
    """A page that believes the limit larger (GET /me answered so here) sends the file: the local S3 refuses it as
    S3 does, with CORS headers on the refusal, and the page shows S3's sizes, not a network failure."""
    from playwright.sync_api import expect

    def larger_limit(route):
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), "max_upload_bytes": 10 ** 9})

    page.route(f"{stack.api_url}/me", larger_limit)
    enter_key(page, API_KEY)
    expect(page.locator("#key-dialog")).to_be_hidden()
    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as file:
        file.truncate(30 * 1024 * 1024)
    page.set_input_files("#add-files", str(huge))
    row = page.locator("#uploads li", has_text="huge.jpg")
    expect(row).to_have_attribute("data-state", "error", timeout=60_000)
    expect(row).to_contain_text("storage refused the upload: 30 MB is over this API's upload limit of 25 MB "
                                "(HTTP 400 EntityTooLarge)")


@pytest.fixture
def fresh_stack(tmp_path):
    """A stack of its own (this test's uploads must not change the other tests' counts)."""
    serve = Serve(tmp_path / "data").wait_ready()
    try:
        yield serve
    finally:
        serve.stop()
        serve.kill()


@pytest.fixture
def fresh_page(browser, fresh_stack):
    """A page on a stack of its own."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(fresh_stack.api_url + "/")
    try:
        yield page
    finally:
        context.close()
    assert not page_errors, page_errors


def test_duplicates_view_and_more_like_this(fresh_page, photos, tmp_path):
    from PIL import Image, ImageOps
    from playwright.sync_api import expect

    page = fresh_page
    enter_key(page, API_KEY)
    original = photos[700]
    smaller = tmp_path / "smaller-mirror.jpg"
    img = Image.open(original).convert("RGB")
    ImageOps.mirror(img).resize((img.width * 4 // 5, img.height * 4 // 5)).save(smaller, "JPEG", quality=90)
    page.set_input_files("#add-files", [str(original), str(photos[20]), str(photos[1500])])
    expect(page.locator('#uploads li[data-state="indexed"]')).to_have_count(3, timeout=90_000)
    page.set_input_files("#add-files", str(smaller))
    expect(page.locator('#uploads li[data-state="indexed"]')).to_have_count(4, timeout=90_000)

    page.click("#dups-button")
    group = page.locator("#dups .group")
    expect(group).to_have_count(1, timeout=30_000)
    expect(group.locator(".card")).to_have_count(2)
    keep = group.locator(".card.keep")
    expect(keep).to_have_count(1)
    assert keep.get_attribute("data-key").endswith(original.name)  # the larger one is suggested
    expect(group.locator(".card:not(.keep)")).to_contain_text("smaller-mirror.jpg")

    # "More like this" on the kept one: its copy comes first, itself is not among the results.
    keep.get_by_role("button", name=re.compile("^More images like")).click()
    expect(page.locator("#target-caption")).to_contain_text("(more like this)")
    first = page.locator("#results .card").first
    expect(first).to_be_visible(timeout=30_000)
    assert first.get_attribute("data-key").endswith("smaller-mirror.jpg")
    expect(page.locator("#results .card")).to_have_count(3)

    # Keep all: the pair is remembered as not duplicates and the group is gone, also when asked again.
    group.get_by_role("button", name="Keep all (not duplicates)").click()
    expect(page.locator("#dups .group")).to_have_count(0, timeout=15_000)
    page.click("#dups-button")
    expect(page.locator("#dups-status")).to_have_text("no duplicates found", timeout=15_000)
    expect(page.locator("#alerts")).to_be_empty()


def assert_every_button_shows(group) -> int:
    """Each button of the group is visible and wholly inside its card (cards clip what runs past their edge), the
    group's own buttons inside the group, the group inside the viewport; how many card buttons there are."""

    def inside(inner, outer):
        return (inner["x"] >= outer["x"] - 0.5 and inner["y"] >= outer["y"] - 0.5
                and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 0.5
                and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + 0.5)

    from playwright.sync_api import expect

    page = group.page
    viewport = {"x": 0, "y": -1e9, "width": page.viewport_size["width"], "height": 2e9}
    box = group.bounding_box()
    assert inside(box, viewport), (box, page.viewport_size)
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]
    shown = 0
    for card in group.locator(".card").all():
        outer = card.bounding_box()
        for button in card.locator("button").all():
            expect(button).to_be_visible()
            assert inside(button.bounding_box(), outer), (button.inner_text(), button.bounding_box(), outer)
            shown += 1
    for button in group.locator(".row button").all():
        expect(button).to_be_visible()
        assert inside(button.bounding_box(), box), (button.inner_text(), button.bounding_box(), box)
    return shown


def test_group_cards_show_every_button_and_resolving_moves_to_the_trash(fresh_page, fresh_stack, photos, tmp_path):
    from PIL import Image, ImageOps
    from playwright.sync_api import expect

    page, stack = fresh_page, fresh_stack
    enter_key(page, API_KEY)
    original = photos[700]
    img = Image.open(original).convert("RGB")
    mirrored, smaller = tmp_path / "mirrored-copy.jpg", tmp_path / "smaller-copy.jpg"
    ImageOps.mirror(img).save(mirrored, "JPEG", quality=90)
    img.resize((img.width // 2, img.height // 2)).save(smaller, "JPEG", quality=80)
    page.set_input_files("#add-files", [str(original), str(photos[20]), str(photos[1500])])
    expect(page.locator('#uploads li[data-state="indexed"]')).to_have_count(3, timeout=90_000)
    page.set_input_files("#add-files", [str(mirrored), str(smaller)])
    expect(page.locator('#uploads li[data-state="indexed"]')).to_have_count(5, timeout=90_000)

    # One group of three: the suggested keep is labelled, each copy shows its score with the keep (the API's).
    page.click("#dups-button")
    group = page.locator("#dups .group")
    expect(group).to_have_count(1, timeout=30_000)
    expect(group.locator(".card")).to_have_count(3)
    keep = group.locator(".card.keep")
    expect(keep.locator(".badge")).to_have_text("Suggested keep")
    assert keep.get_attribute("data-key").endswith(original.name)
    status, listed = stack.request("GET", "/duplicates")
    assert status == 200 and len(listed["groups"]) == 1
    keep_id = listed["groups"][0]["keep"]
    assert keep.get_attribute("data-id") == keep_id
    copies = {m["id"]: m for m in listed["groups"][0]["members"] if m["id"] != keep_id}
    for card in group.locator(".card:not(.keep)").all():
        shown = card.locator(".percent").inner_text().strip()
        # The API's score to one decimal (JavaScript's toFixed and Python's format round a half differently).
        assert shown.endswith("%") and abs(float(shown[:-1]) - copies[card.get_attribute("data-id")]["score"] * 100) <= 0.05 + 1e-9
        expect(card).to_contain_text("like the suggested keep")

    # Every button of every card is on screen and inside its card, on a desktop and on a phone.
    assert assert_every_button_shows(group) == 3 * 3 + 2  # Similar, More like this, Delete; Not a duplicate
    page.locator("section", has=page.locator("#dups")).screenshot(path=str(tmp_path / "duplicates.png"))
    page.set_viewport_size({"width": 390, "height": 844})
    assert assert_every_button_shows(group) == 3 * 3 + 2
    group.screenshot(path=str(tmp_path / "duplicates-390.png"))
    page.set_viewport_size({"width": 1280, "height": 900})

    # A single delete in the group: the copy leaves the group at once; Undo puts it back, in the API's groups too.
    toast = page.locator("#toast")
    one = group.locator(".card:not(.keep)").first
    one_id = one.get_attribute("data-id")
    one.get_by_role("button", name="Delete").click()
    expect(toast).to_contain_text("moved to the trash")
    expect(group.locator(".card")).to_have_count(2)
    expect(group.locator(f'.card[data-id="{one_id}"]')).to_have_count(0)
    expect(group.get_by_role("button", name="Keep the suggested one, move 1 to the trash")).to_be_visible()
    assert stack.request("GET", f"/images/{one_id}")[0] == 404
    assert len(stack.request("GET", "/duplicates")[1]["groups"][0]["members"]) == 2
    toast.get_by_role("button", name="Undo").click()
    expect(toast).to_contain_text("Restored")
    expect(group.locator(".card")).to_have_count(3)
    expect(group.locator(f'.card[data-id="{one_id}"]')).to_have_count(1)
    expect(group.get_by_role("button", name="Keep the suggested one, move 2 to the trash")).to_be_visible()
    assert len(stack.request("GET", "/duplicates")[1]["groups"][0]["members"]) == 3

    # Resolving from the page moves both copies to the trash (the group goes); Undo brings the group back.
    group.get_by_role("button", name="Keep the suggested one, move 2 to the trash").click()
    expect(toast).to_contain_text("2 images moved to the trash")
    expect(page.locator("#dups .group")).to_have_count(0)
    trash = stack.request("GET", "/trash")[1]
    assert {item["image_id"] for item in trash["items"]} == set(copies)
    assert all(stack.request("GET", f"/images/{copy}")[0] == 404 for copy in copies)
    toast.get_by_role("button", name="Undo").click()
    expect(toast).to_contain_text("Restored 2 images")
    expect(page.locator("#dups .group .card")).to_have_count(3)
    assert stack.request("GET", "/trash")[1]["items"] == []
    assert len(stack.request("GET", "/duplicates")[1]["groups"][0]["members"]) == 3

    # Again, then the Trash view: it lists both copies (thumbnail, when deleted, when they go), Restore brings one back.
    group.get_by_role("button", name="Keep the suggested one, move 2 to the trash").click()
    expect(toast).to_contain_text("2 images moved to the trash")
    page.click("#trash-button")
    trashed = page.locator("#trash .card")
    expect(trashed).to_have_count(2, timeout=15_000)
    assert set(page.eval_on_selector_all("#trash .card", "cards => cards.map(c => c.dataset.imageId)")) == set(copies)
    expect(trashed.first).to_contain_text(re.compile(r"Deleted (just now|\d+ minutes? ago)"))
    expect(trashed.first).to_contain_text(re.compile(r"Goes for good \w{3} \d{1,2}, \d{4} \(in 30 days\)"))
    expect(page.locator("#trash-days")).to_have_text("30 days")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#trash img')].every(i => i.complete && i.naturalWidth > 0)",
        timeout=15_000)
    page.locator("section", has=page.locator("#trash")).screenshot(path=str(tmp_path / "trash.png"))
    back = page.locator("#trash .card", has_text="mirrored-copy.jpg")
    back_id = back.get_attribute("data-image-id")
    back.get_by_role("button", name="Restore").click()
    expect(toast).to_contain_text("Restored mirrored-copy.jpg")
    expect(trashed).to_have_count(1)
    assert stack.request("GET", f"/images/{back_id}")[0] == 200
    expect(page.locator("#dups .group .card")).to_have_count(2, timeout=15_000)  # the group is listed again
    expect(page.locator(f'#dups .group .card[data-id="{back_id}"]')).to_have_count(1)
    expect(page.locator("#alerts")).to_be_empty()

    # Another reviewer moves the keep to the trash meanwhile: the page's resolve is refused, with the server's reason.
    assert stack.request("DELETE", f"/images/{keep_id}")[0] == 200
    group.get_by_role("button", name="Keep the suggested one, move 1 to the trash").click()
    expect(group.locator(".note")).to_contain_text(re.compile(r"^Refused: .*trash.*\(HTTP 409\)$"))
    assert stack.request("GET", f"/images/{back_id}")[0] == 200


# -- search by a region, every button on screen, the screenshot ----------------------------------------------------

# `make screenshot` sets it: where the region search test writes the page's picture (docs/images/page.png, the
# README's); unset, the picture goes to the test's own temporary folder, never into the repository.
SCREENSHOT_ENV = "IMGSIM_PAGE_SCREENSHOT"

# Every visible button: inside its card (cards clip what runs past their edge), its section and the viewport, and
# its label within it; the page never scrolls sideways. What is wrong, one line each.
CLIPPED_BUTTONS_JS = """() => {
  const problems = [], width = document.documentElement.clientWidth;
  for (const button of document.querySelectorAll("button")) {
    const r = button.getBoundingClientRect();
    if (!r.width || !r.height || getComputedStyle(button).visibility === "hidden") continue;
    const name = (button.getAttribute("aria-label") || button.textContent).trim();
    const inside = (o) => r.left >= o.left - .5 && r.right <= o.right + .5 && r.top >= o.top - .5 && r.bottom <= o.bottom + .5;
    if (button.scrollWidth > button.clientWidth + 1) problems.push(`${name}: its label overflows it`);
    for (const around of [".card", "section", "header", "figure", "#toast"]) {
      const box = button.closest(around);
      if (box && !inside(box.getBoundingClientRect())) problems.push(`${name}: runs past its ${around}`);
    }
    if (r.left < -.5 || r.right > width + .5) problems.push(`${name}: runs past the viewport`);
  }
  if (document.documentElement.scrollWidth > width) problems.push("the page scrolls sideways");
  return problems;
}"""


def mosaic(paths: list[Path], out: Path) -> list[tuple[float, float, float, float]]:
    """The photos on a 2 x 2 sheet at their own size; each one's box (fractions of the sheet)."""
    from PIL import Image

    images = [Image.open(path).convert("RGB") for path in paths]
    cell_w, cell_h = max(i.width for i in images), max(i.height for i in images)
    sheet = Image.new("RGB", (2 * cell_w, 2 * cell_h), (233, 236, 242))
    boxes = []
    for n, img in enumerate(images):
        left, top = (n % 2) * cell_w, (n // 2) * cell_h
        sheet.paste(img, (left, top))
        boxes.append((left / sheet.width, top / sheet.height, img.width / sheet.width, img.height / sheet.height))
    sheet.save(out)
    return boxes


def drag_box(page, box, inset: float = 0.01) -> str:
    """Drag over the target preview around ``box`` (fractions of the picture, ``inset`` inside it); the box the
    search request then carries."""
    page.locator("#target-preview").scroll_into_view_if_needed()
    pic = page.evaluate("() => pictureRect()")
    x, y, w, h = box
    start = (pic["left"] + (x + inset) * pic["width"], pic["top"] + (y + inset) * pic["height"])
    end = (pic["left"] + (x + w - inset) * pic["width"], pic["top"] + (y + h - inset) * pic["height"])
    with page.expect_request(lambda r: "/search?" in r.url and "box=" in r.url) as request:
        page.mouse.move(*start)
        page.mouse.down()
        page.mouse.move(*end, steps=8)
        page.mouse.up()
    from urllib.parse import parse_qs, urlparse

    return parse_qs(urlparse(request.value.url).query)["box"][0]


def assert_no_button_clipped(page, width: int) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    problems = page.evaluate(CLIPPED_BUTTONS_JS)
    assert not problems, (width, problems)


def test_search_by_a_region_dragged_on_the_target(fresh_page, fresh_stack, photos, tmp_path):
    """Drag a box on the target: the search runs with it (a file, then an indexed image by id); Clear the box
    searches the whole picture again. Then no button of any view is clipped, on a desktop and on a phone."""
    import os

    from playwright.sync_api import expect

    page, stack = fresh_page, fresh_stack
    enter_key(page, API_KEY)
    on_sheet = [photos[10], photos[700], photos[1200], photos[1500]]
    page.set_input_files("#add-files", [str(p) for p in [*on_sheet, photos[30], photos[1000]]])
    expect(page.locator('#uploads li[data-state="indexed"]')).to_have_count(6, timeout=120_000)
    sheet = tmp_path / "four-photos.png"
    boxes = mosaic(on_sheet, sheet)

    page.fill("#limit", "5")
    page.set_input_files("#search-file", str(sheet))
    expect(page.locator("#search-status")).to_contain_text("5 most similar to four-photos.png", timeout=30_000)
    expect(page.locator("#clear-box")).to_be_hidden()
    expect(page.locator("#box-overlay")).to_be_hidden()

    # A box around the bottom right photo: the search runs with it, and that photo comes first.
    sent = [float(v) for v in drag_box(page, boxes[3]).split(",")]
    assert all(abs(a - b) <= 0.03 for a, b in zip(sent, boxes[3])), (sent, boxes[3])
    expect(page.locator("#search-status")).to_contain_text("most similar to the boxed region of four-photos.png",
                                                           timeout=30_000)
    first = page.locator("#results .card").first
    shown = page.eval_on_selector_all("#results .card", "cards => cards.map(c => [c.dataset.key, c.innerText])")
    assert first.get_attribute("data-key").endswith(on_sheet[3].name), shown
    expect(page.locator("#box-overlay")).to_be_visible()
    expect(page.locator("#clear-box")).to_be_visible()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)",
        timeout=15_000)
    page.evaluate("() => document.activeElement.blur()")  # no focus ring in the picture
    picture = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "page.png")
    bottom = page.evaluate("() => document.querySelector('#results').closest('section').getBoundingClientRect()"
                           ".bottom + window.scrollY")
    page.screenshot(path=str(picture), full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": bottom + 16})

    # Another box, around the top left photo: that one first.
    drag_box(page, boxes[0])
    expect(page.locator("#search-status")).to_contain_text("the boxed region of four-photos.png", timeout=30_000)
    expect(page.locator("#results .card").first).to_have_attribute("data-key", re.compile(re.escape(on_sheet[0].name)
                                                                                          + "$"), timeout=30_000)

    # A click is no box: the box stays, nothing is searched.
    searches = []
    page.on("request", lambda r: searches.append(r.url) if "/search?" in r.url else None)
    pic = page.evaluate("() => pictureRect()")
    page.mouse.click(pic["left"] + pic["width"] / 2, pic["top"] + pic["height"] / 2)
    expect(page.locator("#box-overlay")).to_be_visible()

    # Clear the box: the whole picture again.
    with page.expect_request(lambda r: "/search?" in r.url) as request:
        page.click("#clear-box")
    assert "box=" not in request.value.url and len(searches) == 1
    expect(page.locator("#search-status")).to_contain_text(re.compile(r"most similar to four-photos\.png"))
    expect(page.locator("#box-overlay")).to_be_hidden()
    expect(page.locator("#clear-box")).to_be_hidden()

    # An indexed image as the target ("Similar"): a box on it searches by its id with the box (the API reads its
    # object); the image itself is never among the results.
    card = page.locator("#mine .card", has_text=on_sheet[1].name)
    card_id = card.get_attribute("data-id")
    card.get_by_role("button", name="Similar").click()
    expect(page.locator("#target-caption")).to_contain_text("(indexed)")
    expect(page.locator("#results .card")).to_have_count(5, timeout=30_000)
    page.wait_for_function("() => document.querySelector('#target-preview').naturalWidth > 0", timeout=15_000)
    with page.expect_response(lambda r: "/search?" in r.url and "box=" in r.url) as response:
        drag_box(page, (0.0, 0.0, 0.6, 1.0), inset=0.02)
    assert response.value.status == 200
    assert json.loads(response.value.request.post_data) == {"id": card_id}
    expect(page.locator("#search-status")).to_contain_text(f"the boxed region of {on_sheet[1].name}", timeout=30_000)
    assert card_id not in page.eval_on_selector_all("#results .card", "cards => cards.map(c => c.dataset.id)")
    expect(page.locator("#alerts")).to_be_empty()

    # Every view with its buttons: results, your images, duplicates (none here), the trash, compare.
    page.locator("#mine .card", has_text=photos[30].name).get_by_role("button", name="Delete").click()
    expect(page.locator("#toast")).to_contain_text("moved to the trash")
    page.click("#trash-button")
    expect(page.locator("#trash .card")).to_have_count(1, timeout=15_000)
    page.set_input_files("#compare-a", str(on_sheet[0]))
    page.set_input_files("#compare-b", str(on_sheet[1]))
    for width in (1280, 390):
        assert_no_button_clipped(page, width)
        page.screenshot(path=str(tmp_path / f"page-{width}.png"), full_page=True)
    assert stack.request("GET", "/me")[1]["images"] == 5
