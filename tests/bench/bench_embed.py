"""Embedding engine benchmark: imgsim vs the reference runtime vs a naive pipeline, same run.

Prints:

1. ms/image for the model alone and end to end (bytes -> unit vector) for a
   ~300 px JPEG (real photos), a 1 MP and a 12 MP JPEG (derived here from real
   photos: upscale + sensor-like noise + JPEG re-encode), each with its ratio to
   (a) the reference runtime: a full Pillow decode, then mediapipe's
       ImageEmbedder.embed, and
   (b) naive: a full Pillow decode, ``resize((224, 224))``, TFLite invoke;
   ratio = imgsim time / baseline time (below 1 means imgsim is faster).
2. where imgsim's time goes (decode + reduction, resize, invoke);
3. interpreter batch size and thread count figures behind the Embedder's design;
4. resolution invariance: cosine between the 4000 px and the 1000 px version
   of the same photo, for imgsim, naive and the reference runtime.

Timings are the best of a few repetitions (the machine is shared), all
measured in this run. Run: ``make bench`` or
``.venv/bin/python tests/bench/bench_embed.py``.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
PHOTOS_DIR = (REPO_ROOT.parent / "shared" / "datasets" / "photos").resolve()
sys.path.insert(0, str(REPO_ROOT / "layers" / "shared"))

os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's C++ logging
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from imgsim import Embedder
from imgsim.embedder import INTERPRETER_PACKAGE, Interpreter, l2_normalize
from imgsim.preprocess import to_input_tensor

REPEATS = 5


def best_ms_per_item(fn: Callable[[bytes], object], items: Sequence[bytes], repeats: int = REPEATS) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, (time.perf_counter() - started) * 1000 / len(items))
    return best


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def camera_like(photo: Path, long_side: int, rng: np.random.Generator, noise_sigma: float = 10.0) -> Image.Image:
    """A real photo upscaled to camera size with per-pixel sensor-like noise."""
    img = Image.open(photo).convert("RGB")
    scale = long_side / max(img.size)
    big = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)
    noisy = np.asarray(big, dtype=np.float32)
    noisy += noise_sigma * rng.standard_normal(noisy.shape, np.float32)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


class Reference:
    """mediapipe's ImageEmbedder after a full Pillow decode: what a user of the reference runtime writes."""

    def __init__(self, model_path: Path) -> None:
        import mediapipe as mp
        from mediapipe.tasks import python as mp_tasks
        from mediapipe.tasks.python import vision

        self._mp = mp
        options = vision.ImageEmbedderOptions(
            base_options=mp_tasks.BaseOptions(model_asset_path=str(model_path)), l2_normalize=True, quantize=False
        )
        self._embedder = vision.ImageEmbedder.create_from_options(options)

    def embed(self, data: bytes) -> np.ndarray:
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(pixels))
        return np.asarray(self._embedder.embed(image).embeddings[0].embedding, dtype=np.float32)

    def close(self) -> None:
        self._embedder.close()


class Naive:
    """Full Pillow decode, Pillow's resize to the input size, TFLite: the obvious implementation."""

    def __init__(self, model_path: Path) -> None:
        self._interpreter = Interpreter(model_path=str(model_path), num_threads=1)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._interpreter.resize_tensor_input(self._input, [1, 224, 224, 3])
        self._interpreter.allocate_tensors()

    def embed(self, data: bytes) -> np.ndarray:
        img = Image.open(io.BytesIO(data)).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
        self._interpreter.set_tensor(self._input, (np.asarray(img, dtype=np.float32) / 255.0)[None])
        self._interpreter.invoke()
        return l2_normalize(self._interpreter.get_tensor(self._output))[0]


def invoke_ms_per_image(model_path: Path, batch: int, threads: int = 1, images: int = 48) -> float:
    interpreter = Interpreter(model_path=str(model_path), num_threads=threads)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, [batch, 224, 224, 3])
    interpreter.allocate_tensors()
    tensor = np.random.default_rng(0).random((batch, 224, 224, 3), dtype=np.float32)
    calls = max(1, images // batch)

    def run(_: object) -> None:
        interpreter.set_tensor(index, tensor)
        interpreter.invoke()

    run(None)
    return best_ms_per_item(run, [b""] * calls) / batch


def reallocation_ms(model_path: Path) -> float:
    interpreter = Interpreter(model_path=str(model_path), num_threads=1)
    index = interpreter.get_input_details()[0]["index"]
    shapes = [[1, 224, 224, 3], [2, 224, 224, 3]] * 5
    started = time.perf_counter()
    for shape in shapes:
        interpreter.resize_tensor_input(index, shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, np.zeros(shape, np.float32))
        interpreter.invoke()
    return (time.perf_counter() - started) * 1000 / len(shapes)


def stage_breakdown(embedder: Embedder, items: Sequence[bytes]) -> tuple[float, float, float]:
    decoded = [embedder.decode(data) for data in items]
    decode_ms = best_ms_per_item(embedder.decode, items)
    tensors = {}

    def resize(index: int) -> None:
        tensors[index] = to_input_tensor(decoded[index].pixels, embedder.spec.input_size, embedder.spec.input_range)

    resize_ms = best_ms_per_item(resize, range(len(items)))  # type: ignore[arg-type]
    with embedder._lock:
        invoke_ms = best_ms_per_item(embedder._invoke, [tensors[i] for i in range(len(items))])  # type: ignore[arg-type]
    return decode_ms, resize_ms, invoke_ms


def main() -> int:
    started = time.perf_counter()
    photos = sorted(PHOTOS_DIR.glob("*.jpg"))
    if not photos:
        print(f"bench_embed: no photos in {PHOTOS_DIR}", file=sys.stderr)
        return 1
    rng = np.random.default_rng(42)
    embedder = Embedder(num_threads=1)
    reference = Reference(embedder.model_path)
    naive = Naive(embedder.model_path)

    small = [p.read_bytes() for p in photos[:: len(photos) // 40][:40]]
    sources = photos[100 :: len(photos) // 4][:4]
    one_mp = [jpeg_bytes(camera_like(p, 1155, rng)) for p in sources]  # 1155 x ~866 = 1 MP at 4:3
    twelve_mp = [jpeg_bytes(camera_like(p, 4000, rng)) for p in sources[:3]]  # 4000 x ~3000
    cases = [
        (f"~300 px JPEG (n={len(small)})", small),
        (f"1 MP JPEG (n={len(one_mp)})", one_mp),
        (f"12 MP JPEG (n={len(twelve_mp)})", twelve_mp),
    ]
    for _, items in cases:  # warm caches, plans and delegates
        for fn in (embedder.embed, reference.embed, naive.embed):
            fn(items[0])

    print(
        f"\nimgsim embedding engine: model {embedder.model_name}, {INTERPRETER_PACKAGE}, 1 thread, "
        f"best of {REPEATS}; ratio = imgsim / baseline (< 1: imgsim faster)"
    )
    header = f"{'case':<22} {'imgsim':>9} {'reference':>10} {'ratio':>7} {'naive':>9} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    model_ms = invoke_ms_per_image(embedder.model_path, batch=1)
    print(f"{'model only (invoke)':<22} {model_ms:>7.2f}ms")
    rows = []
    for label, items in cases:
        ours = best_ms_per_item(embedder.embed, items)
        ref = best_ms_per_item(reference.embed, items)
        nv = best_ms_per_item(naive.embed, items)
        rows.append((label, ours, ref, nv))
        print(f"{label:<22} {ours:>7.2f}ms {ref:>8.2f}ms {ours / ref:>7.2f} {nv:>7.2f}ms {ours / nv:>7.2f}")

    print("\nwhere imgsim's time goes (ms/image): decode+reduce, resize to 224, invoke")
    for label, items in cases:
        decode_ms, resize_ms, invoke_ms = stage_breakdown(embedder, items)
        print(f"{label:<22} {decode_ms:>7.2f} {resize_ms:>7.2f} {invoke_ms:>7.2f}")

    print("\ninterpreter (ms/image of invoke): batch size and threads")
    for batch in (1, 4, 16):
        print(f"  batch {batch:<3} 1 thread  {invoke_ms_per_image(embedder.model_path, batch):>6.2f}")
    print(f"  batch 1   2 threads {invoke_ms_per_image(embedder.model_path, 1, threads=2):>6.2f}")
    print(f"  changing the batch size (resize + allocate_tensors + invoke): {reallocation_ms(embedder.model_path):.2f} ms")

    print("\nresolution invariance: cosine(4000 px, 1000 px) of the same noisy photo")
    print(f"{'photo':<18} {'imgsim':>8} {'naive':>8} {'reference':>10}")
    sums = {"imgsim": [], "naive": [], "reference": []}
    for photo in photos[50 :: len(photos) // 5][:5]:
        big = camera_like(photo, 4000, rng)
        big_jpeg = jpeg_bytes(big)
        # The same photo as a camera's smaller export: downscaled (area filter) and re-encoded.
        medium_jpeg = jpeg_bytes(big.resize((round(big.width / 4), round(big.height / 4)), Image.Resampling.LANCZOS))
        values = {}
        for name, fn in (("imgsim", embedder.embed), ("naive", naive.embed), ("reference", reference.embed)):
            values[name] = float(fn(big_jpeg) @ fn(medium_jpeg))
            sums[name].append(values[name])
        print(f"{photo.name:<18} {values['imgsim']:>8.4f} {values['naive']:>8.4f} {values['reference']:>10.4f}")
    print(f"{'min':<18} {min(sums['imgsim']):>8.4f} {min(sums['naive']):>8.4f} {min(sums['reference']):>10.4f}")

    reference.close()
    ok = min(sums["imgsim"]) >= 0.99
    print(f"\nimgsim resolution invariance >= 0.99: {'yes' if ok else 'NO'}; bench_embed took {time.perf_counter() - started:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
