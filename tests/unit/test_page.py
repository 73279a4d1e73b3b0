"""The web page (functions/search/static/index.html) against what the indexer decodes: its upload hint names every
accepted format, every file input accepts them, and a file the browser gives no type gets one from its extension."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from imgsim.services.images import UPLOAD_CONTENT_TYPES

PAGE = Path(__file__).resolve().parents[2] / "functions" / "search" / "static" / "index.html"


class _Page(HTMLParser):
    """The text of the upload hint and the accept attribute of each file input."""

    def __init__(self) -> None:
        super().__init__()
        self.hint = ""
        self.accepts: dict[str, str] = {}
        self._in_hint = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if attributes.get("id") == "upload-formats":
            self._in_hint = True
        if tag == "input" and attributes.get("type") == "file":
            self.accepts[attributes.get("id") or "?"] = attributes.get("accept") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "p":
            self._in_hint = False

    def handle_data(self, data: str) -> None:
        if self._in_hint:
            self.hint += data


def page() -> tuple[_Page, str]:
    text = PAGE.read_text(encoding="utf-8")
    parsed = _Page()
    parsed.feed(text)
    return parsed, text


def formats() -> set[str]:
    """Each upload content type's format, as people name it: image/heic-sequence is HEIC, image/jpeg JPEG."""
    return {mime.split("/", 1)[1].removesuffix("-sequence").upper() for mime in UPLOAD_CONTENT_TYPES}


def extension_types(text: str) -> dict[str, str]:
    """The page's EXT_TYPES table: file extension -> the content type an upload announces."""
    table = re.search(r"const EXT_TYPES = \{(.*?)\};", text, re.DOTALL)
    assert table, "EXT_TYPES is gone from the page"
    return dict(re.findall(r"(\w+): \"(image/[\w.+-]+)\"", table.group(1)))


def test_the_upload_hint_names_every_format_the_indexer_decodes():
    parsed, _ = page()
    named = {word.upper() for word in re.findall(r"[A-Za-z]+", parsed.hint)}
    assert formats() >= {"JPEG", "PNG", "HEIC", "HEIF", "AVIF"}
    assert formats() <= named, (sorted(formats() - named), parsed.hint)


def test_every_upload_type_has_an_extension_and_every_file_input_accepts_it():
    parsed, text = page()
    extensions = extension_types(text)
    canonical = {mime for mime in UPLOAD_CONTENT_TYPES if not mime.endswith("-sequence")}
    assert set(extensions.values()) == canonical
    assert set(parsed.accepts) == {"add-files", "search-file", "compare-a", "compare-b"}
    for input_id, accept in parsed.accepts.items():
        listed = set(accept.split(","))
        # image/* alone misses what browsers give no image/ type (HEIC on most desktops): each extension is listed.
        assert listed == {"image/*"} | {"." + ext for ext in extensions}, (input_id, accept)
