"""Schemathesis hooks for the fuzz run of the search API (tests/api_fuzz.py; loaded through SCHEMATHESIS_HOOKS).

Three things the OpenAPI document cannot say, and nothing else:

- What a valid image is. JSON Schema can say "bytes" (``format: binary``, ``format: byte``) but not "a JPEG", so
  without help every schema-valid image body schemathesis makes is random bytes, which the API rightly refuses
  (400 ``not_an_image``) and the positive-data check would report as a valid request rejected. Here, the bodies
  declared as images (raw ``image/*`` and ``application/octet-stream``, multipart parts encoded ``image/*``, and
  the JSON ``format: byte`` fields, the base64 images of POST /search and /compare) are real images of the formats
  the API decodes, of random sizes and colours. Negative cases still get random bytes and broken base64.
- What a valid box is (POST /search ``box``, ``format: box``): four fractions whose region is inside the image and
  not empty (x + w <= 1, y + h <= 1, w and h > 0), which no JSON Schema pattern can say. Negative cases still get
  anything.
- The one accepted exception: a method a path lacks. API Gateway routes by method and path, so it answers 404, not
  405, and so does the handler (app.handle_not_found). The run excludes schemathesis' ``unsupported_method``
  check (which expects 405) and this check takes its place for exactly those requests: 404, nothing else.
"""

from __future__ import annotations

import base64
import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image
from schemathesis.generation.meta import CoveragePhaseData, CoverageScenario

# Formats Pillow writes and the API decodes (imgsim.decode); HEIC and AVIF have their own tests.
FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")


@st.composite
def images(draw: st.DrawFn) -> bytes:
    width, height = draw(st.integers(1, 96)), draw(st.integers(1, 96))
    colour = draw(st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)))
    image = Image.new("RGB", (width, height), colour)
    if draw(st.booleans()):  # some structure, not only flat colour
        image.paste(tuple(255 - c for c in colour), (0, 0, max(1, width // 2), max(1, height // 2)))
    out = io.BytesIO()
    image.save(out, format=draw(st.sampled_from(FORMATS)))
    return out.getvalue()


IMAGES = images()
schemathesis.openapi.media_type("image/*", IMAGES)
schemathesis.openapi.media_type("application/octet-stream", IMAGES)
schemathesis.openapi.format("byte", IMAGES.map(lambda data: base64.b64encode(data).decode("ascii")))


@st.composite
def boxes(draw: st.DrawFn) -> str:
    values = []
    for _ in range(2):  # (x, w), then (y, h)
        start = draw(st.integers(0, 99))
        size = draw(st.integers(1, 100 - start))
        values.append((start / 100, size / 100))
    (x, w), (y, h) = values
    return f"{x},{y},{w},{h}"


schemathesis.openapi.format("box", boxes())


@schemathesis.check
def undeclared_method_is_not_found(ctx, response, case):
    """A method the document does not declare for a path: 404, as API Gateway answers it (no 405)."""
    meta = case.meta
    if meta is None or not isinstance(meta.phase.data, CoveragePhaseData):
        return
    if meta.phase.data.scenario != CoverageScenario.UNSPECIFIED_HTTP_METHOD or response.request.method == "OPTIONS":
        return
    if response.status_code != 404:
        raise AssertionError(f"{response.request.method} {case.path}, a method the path lacks, answered "
                             f"{response.status_code}; API Gateway answers 404")
