#!/usr/bin/env python3
"""Search by a region (``box``): how often a region finds the photo it came from, among 1,200 indexed photos.

Indexed: 1,200 of the 1,692 shared photos (a seeded draw), embedded and stored as the indexer does, in an embedded
Qdrant (int8 quantization, rescored), searched through ``imgsim.services.SearchService``. Kept out: the other 492,
the surroundings of the scenes below. Sources: 100 indexed photos; from each, crops of 50 %, 25 % and 10 % of its
area (its aspect ratio), at its centre, top left and bottom right corners: 900 regions, each searched five ways:

- ``crop file``: the crop saved as a JPEG (q 90) and searched whole: what a user does without a box (crop it in an
  editor, search with that);
- ``box on photo``: the source photo's own bytes with a box around the region (sent as bytes, not by id: the photo
  itself may rank first);
- ``scene, whole``: the crop pasted, at its resolution, into a scene, a kept-out photo enlarged to 1,200 px (a
  camera photo with the subject somewhere in it), stored as a JPEG (q 90) and searched without a box;
- ``scene, box``: the same scene with a box around the pasted crop (imgsim: cut at the scene's resolution, before
  the decoder's reduction to 448 px);
- ``scene, box after reduction``: the box cut from the scene as decoded whole (448 px), not what imgsim does:
  shown for why it cuts first.

Printed: the share of regions whose source photo comes first (top 1) and among the first five (top 5), per area and
for all. The shared photos hold groups of near-duplicates (tests/data/duplicate_labels.json): a crop may find a copy
of its source first, which counts as a miss here. Then the cost of a box: decode + embed of a 12 MP JPEG, whole and
with boxes of 50 % to 1 % of its area (a smaller box decodes the JPEG at a finer DCT scale).

Run: ``.venv/bin/python tests/bench/bench_region.py`` (or ``make bench``); about two minutes on two cores.
"""

from __future__ import annotations

import io
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
PHOTOS = REPO_ROOT.parent / "shared" / "datasets" / "photos"

INDEXED = 1_200
SOURCES = 100
AREAS = (0.5, 0.25, 0.1)
POSITIONS = ("centre", "top left", "bottom right")
SCENE_LONG_SIDE = 1_200
TOP = 5
MODES = ("crop file", "box on photo", "scene, whole", "scene, box", "scene, box after reduction")
TIMING_BOXES = (None, 0.5, 0.25, 0.1, 0.01)
TIMING_RUNS = 7


class NoObjects:
    """The services' ObjectStorage where results need no URL (the sources are sent as bytes)."""

    def presign_get(self, bucket: str, key: str, *, expires_in: int) -> str:
        return ""

    def presign_post(self, bucket: str, key: str, *, content_type: str, max_bytes: int,
                     expires_in: int) -> tuple[str, dict[str, str]]:
        return "", {}

    def delete(self, bucket: str, key: str) -> None:
        pass

    def copy(self, bucket: str, source: str, target: str) -> None:
        pass

    def exists(self, bucket: str, key: str) -> bool:
        return False

    def get(self, bucket: str, key: str, *, max_bytes: int) -> bytes | None:
        return None


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def nearest(value: float) -> int:
    """A box edge on the nearest pixel, halves up (as imgsim.decode cuts it)."""
    return math.floor(value + 0.5)


def region_of(area: float, position: str) -> tuple[float, float, float, float]:
    side = math.sqrt(area)
    corner = {"centre": (1 - side) / 2, "top left": 0.0, "bottom right": 1 - side}[position]
    return corner, corner, side, side


def pixel_box(region: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    x, y, w, h = region
    return nearest(x * width), nearest(y * height), nearest((x + w) * width), nearest((y + h) * height)


def cut(pixels: np.ndarray, region: tuple[float, float, float, float]) -> np.ndarray:
    left, top, right, bottom = pixel_box(region, pixels.shape[1], pixels.shape[0])
    return pixels[top:bottom, left:right]


def scene_with(crop: Image.Image, background: Image.Image, rng: random.Random) -> tuple[bytes, tuple]:
    """``crop`` pasted at its own resolution somewhere in ``background`` enlarged to SCENE_LONG_SIDE: the scene's
    JPEG and the box around the crop (fractions of the scene)."""
    scale = SCENE_LONG_SIDE / max(background.size)
    scene = background.resize((round(background.width * scale), round(background.height * scale)),
                              Image.Resampling.BICUBIC)
    left = rng.randrange(0, scene.width - crop.width + 1)
    top = rng.randrange(0, scene.height - crop.height + 1)
    scene.paste(crop, (left, top))
    box = (left / scene.width, top / scene.height, crop.width / scene.width, crop.height / scene.height)
    return jpeg(scene), box


def index_photos(embedder, store, paths: list[Path]) -> dict[str, str]:
    """Embed and store ``paths`` as the indexer would; {point id: file name}."""
    from imgsim.ids import point_id_for_object
    from imgsim.points import image_payload
    from imgsim.store import StoredPoint

    ids: dict[str, str] = {}
    batch: list[StoredPoint] = []
    for path in paths:
        data = path.read_bytes()
        image = embedder.decode(data)
        key = f"photos/{path.name}"
        point = point_id_for_object("bench", key)
        vector = embedder.embed_decoded([image])[0]
        batch.append(StoredPoint(point, vector, image_payload(key=key, image=image, size=len(data),
                                                              model=embedder.model_name, bucket="bench")))
        ids[point] = path.name
        if len(batch) == 200:
            store.upsert(batch)
            batch = []
    store.upsert(batch)
    return ids


def rank_of(names: list[str], source: str) -> int | None:
    return names.index(source) + 1 if source in names else None


def timing(embedder, photo: Path) -> None:
    """Decode + embed of a 12 MP JPEG, whole and with centred boxes: median ms of TIMING_RUNS, decoded size."""
    rng = np.random.default_rng(3)
    big = Image.open(photo).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
    noisy = np.clip(np.asarray(big, dtype=np.int16) + rng.normal(0, 6, (3000, 4000, 3)), 0, 255).astype(np.uint8)
    data = jpeg(Image.fromarray(noisy), 90)
    print(f"\ncost of a box: decode + embed of a 4000 x 3000 JPEG ({len(data) / 2**20:.1f} MB, q 90), "
          f"median of {TIMING_RUNS} runs")
    print(f"  {'box (share of the area)':<24} {'ms':>6}  {'the region in the file':>22}  {'to the model':>12}")
    for area in TIMING_BOXES:
        region = None if area is None else region_of(area, "centre")
        runs, size = [], (0, 0)
        for _ in range(TIMING_RUNS):
            start = time.perf_counter()
            image = embedder.decode(data, region)
            embedder.embed_decoded([image])
            runs.append((time.perf_counter() - start) * 1000)
            size = (image.pixels.shape[1], image.pixels.shape[0])
        label = "none (whole picture)" if area is None else f"{area:.0%}"
        print(f"  {label:<24} {statistics.median(runs):>6.1f}  {f'{image.width} x {image.height}':>22}  "
              f"{f'{size[0]} x {size[1]}':>12}")


def main() -> int:
    from imgsim.embedder import Embedder
    from imgsim.services import Box, ImageQuery, SearchRequest, SearchService
    from imgsim.settings import ApiSettings, Settings
    from imgsim.store import open_store

    photos = sorted(PHOTOS.glob("*.jpg"))
    if len(photos) < INDEXED + 100:
        print(f"bench_region: {len(photos)} photos in {PHOTOS}; it needs the shared photos", file=sys.stderr)
        return 1
    rng = random.Random(20)
    order = photos[:]
    rng.shuffle(order)
    indexed, kept_out = order[:INDEXED], order[INDEXED:]
    sources = rng.sample(indexed, SOURCES)

    embedder = Embedder()
    with tempfile.TemporaryDirectory(prefix="imgsim-bench-region-") as tmp:
        store = open_store(Settings(qdrant_path=tmp), dim=embedder.dim, collection="bench")
        store.ensure_collection()
        started = time.perf_counter()
        names = index_photos(embedder, store, indexed)
        print(f"indexed {len(names)} photos in {time.perf_counter() - started:.1f} s; {SOURCES} sources x "
              f"{len(AREAS)} areas x {len(POSITIONS)} positions = {SOURCES * len(AREAS) * len(POSITIONS)} regions, "
              f"each searched {len(MODES)} ways (top {TOP})")
        service = SearchService(ApiSettings(), embedder=lambda: embedder, store=lambda: store,
                                objects=lambda: NoObjects())

        def found(query) -> list[str]:
            body = service.search(SearchRequest(query, limit=TOP))
            return [names.get(r["id"], "?") for r in body["results"]]

        def found_vector(vector) -> list[str]:
            return [names.get(hit.id, "?") for hit in store.search(vector.tolist(), limit=TOP)]

        # {(mode, area): [rank or None]}
        ranks: dict[tuple[str, float], list[int | None]] = {(m, a): [] for m in MODES for a in AREAS}
        itself = 0
        started = time.perf_counter()
        for n, source in enumerate(sources):
            data = source.read_bytes()
            photo = Image.open(io.BytesIO(data)).convert("RGB")
            body = service.search(SearchRequest(ImageQuery(image=data, box=Box(0, 0, 1, 1)), limit=TOP))
            itself += any(names.get(r["id"]) == source.name and r["percent"] == 100.0 for r in body["results"])
            for area in AREAS:
                for position in POSITIONS:
                    region = region_of(area, position)
                    crop = photo.crop(pixel_box(region, photo.width, photo.height))
                    background = Image.open(rng.choice(kept_out)).convert("RGB")
                    scene, scene_box = scene_with(crop, background, rng)
                    naive = cut(embedder.decode(scene).pixels, scene_box)
                    results = {
                        "crop file": found(ImageQuery(image=jpeg(crop))),
                        "box on photo": found(ImageQuery(image=data, box=Box(*region))),
                        "scene, whole": found(ImageQuery(image=scene)),
                        "scene, box": found(ImageQuery(image=scene, box=Box(*scene_box))),
                        "scene, box after reduction": found_vector(embedder.embed_pixels([naive])[0]),
                    }
                    for mode, listed in results.items():
                        ranks[(mode, area)].append(rank_of(listed, source.name))
        elapsed = time.perf_counter() - started
        store.close()

    print(f"searched in {elapsed:.0f} s; the whole photo as a box (0,0,1,1) finds itself at 100 %: "
          f"{itself} / {SOURCES}\n")

    def rates(values: list[int | None]) -> str:
        top1 = sum(r == 1 for r in values) / len(values)
        top5 = sum(r is not None for r in values) / len(values)
        return f"{top1:>5.0%} / {top5:>4.0%}"

    print("source photo first / among the first five, by the crop's share of the photo's area:\n")
    print(f"| {'query':<27} | " + " | ".join(f"{f'{a:.0%} of the area':^16}" for a in AREAS) + f" | {'all':^13} |")
    print(f"| {'-' * 27} | " + " | ".join("-" * 16 for _ in AREAS) + f" | {'-' * 13} |")
    for mode in MODES:
        every = [r for a in AREAS for r in ranks[(mode, a)]]
        print(f"| {mode:<27} | " + " | ".join(f"{rates(ranks[(mode, a)]):^16}" for a in AREAS)
              + f" | {rates(every):^13} |")

    print("\nby position (all areas): source photo first / among the first five")
    for mode in ("crop file", "box on photo", "scene, box"):
        cells = []
        for p, position in enumerate(POSITIONS):
            values = [ranks[(mode, a)][s * len(POSITIONS) + p] for a in AREAS for s in range(SOURCES)]
            cells.append(f"{position} {rates(values)}")
        print(f"  {mode:<14} " + "  ".join(cells))

    timing(embedder, sources[0])
    if itself != SOURCES:
        print("bench_region: a box over the whole photo must find the photo itself at 100 %", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
