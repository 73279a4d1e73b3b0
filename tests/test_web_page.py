"""The web page in a real headless Chromium (Debian's `chromium`, driven by Playwright) against `imgsim serve`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from serve_support import API_KEY, Serve

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
# No network beyond localhost, no first-run work, no sandbox (containers run as root).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    serve = Serve(tmp_path_factory.mktemp("web") / "data")
    try:
        yield serve.wait_ready()
    finally:
        serve.stop()
        serve.kill()


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
    page.on("dialog", lambda dialog: dialog.accept())  # the delete confirmation
    page.goto(stack.api_url + "/")
    yield page
    context.close()
    assert not page_errors, page_errors


def enter_key(page, key: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#key-dialog")).to_be_visible()
    page.fill("#api-key", key)
    page.click("#save-key")


def test_add_three_photos_then_search_with_one_finds_it_first(page, photos, tmp_path):
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
    first = page.locator("#results .card").first
    expect(first).to_be_visible(timeout=30_000)
    assert first.get_attribute("data-key").endswith(chosen[1].name)
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

    # Delete one image: its cards go once the indexer has removed it.
    mine = page.locator("#mine .card").first
    deleted_id = mine.get_attribute("data-id")
    mine.get_by_role("button", name="Delete").click()
    expect(page.locator(f'.card[data-id="{deleted_id}"]')).to_have_count(0, timeout=60_000)
    expect(page.locator("#mine .card")).to_have_count(3)
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


@pytest.fixture
def fresh_page(browser, tmp_path):
    """A page on a stack of its own (this test's uploads must not change the other tests' counts)."""
    serve = Serve(tmp_path / "data").wait_ready()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(serve.api_url + "/")
    try:
        yield page
    finally:
        context.close()
        serve.stop()
        serve.kill()
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
