"""The Embedder: default model, output contract, batching, threads, interpreter fallback."""

from __future__ import annotations

import importlib
import importlib.util
import io
import sys
import types
from dataclasses import replace
from pathlib import Path

import imgsim
import imgsim.embedder
import numpy as np
import pytest
from imgsim import Embedder
from imgsim.composition import Root
from imgsim.models import REPO_MODEL_DIR
from imgsim.settings import load
from PIL import Image


@pytest.fixture(scope="module")
def photo_bytes(photos) -> list[bytes]:
    # A spread across the cats, dogs, monkeys and squirrels blocks.
    return [path.read_bytes() for path in photos[::170]]


def embedder_configured_by(variables: dict[str, str]) -> Embedder:
    """The embedder a process configured by ``variables`` gets: its settings read once (``imgsim.settings.load``),
    its composition root's model (IMGSIM_MODEL, or the manifest's default) built with them. No store is opened."""
    root = Root(load(variables))
    return root.embedder(root.configured_model())


def test_default_model_needs_no_configuration(embedder):
    for fresh in (Embedder(), embedder_configured_by({})):
        assert fresh.model_name == "mobilenet_v3_small_075_224"
        assert fresh.dim == 1024
        assert fresh.model_path.parent == REPO_MODEL_DIR


def test_embed_returns_a_unit_float32_vector(embedder, photo_bytes):
    vector = embedder.embed(photo_bytes[0])
    assert vector.shape == (1024,)
    assert vector.dtype == np.float32
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    assert np.isfinite(vector).all() and np.abs(vector).max() < 1.0  # not one-hot, not garbage


def test_embed_is_deterministic(embedder, photo_bytes):
    np.testing.assert_array_equal(embedder.embed(photo_bytes[1]), embedder.embed(photo_bytes[1]))


@pytest.mark.parametrize("batch_size", [1, 3, 4, 16])
def test_embed_many_equals_stacked_embed_across_batch_boundaries(batch_size, embedder, photo_bytes):
    # 10 images: batches of 3 leave a remainder, 16 holds them all in one.
    batched = Embedder(settings=replace(embedder.settings, batch_size=batch_size))
    many = batched.embed_many(photo_bytes)
    one_by_one = np.stack([embedder.embed(data) for data in photo_bytes])
    assert many.shape == (len(photo_bytes), 1024) and many.dtype == np.float32
    np.testing.assert_allclose(many, one_by_one, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(many, axis=1), 1.0, atol=1e-5)


def test_embed_many_of_nothing_is_an_empty_matrix(embedder):
    empty = embedder.embed_many([])
    assert empty.shape == (0, 1024) and empty.dtype == np.float32


def test_different_pictures_get_different_vectors(embedder, photos):
    cat_a, cat_b, squirrel = (path.read_bytes() for path in (photos[0], photos[1], photos[-1]))
    vectors = embedder.embed_many([cat_a, cat_b, squirrel])
    assert float(vectors[0] @ vectors[1]) < 0.99
    assert float(vectors[0] @ vectors[2]) < 0.95


def test_num_threads_is_configurable(embedder, photo_bytes):
    two = Embedder(num_threads=2)
    assert two.num_threads == 2
    # Thread count changes scheduling, not results (XNNPACK splits work, not arithmetic order per output).
    np.testing.assert_allclose(two.embed(photo_bytes[2]), embedder.embed(photo_bytes[2]), atol=1e-5)
    assert embedder_configured_by({"IMGSIM_NUM_THREADS": "2"}).num_threads == 2


def test_pixels_entry_point_matches_bytes_entry_point(embedder, photo_bytes):
    decoded = embedder.decode(photo_bytes[3])
    np.testing.assert_array_equal(embedder.embed_pixels([decoded.pixels])[0], embedder.embed(photo_bytes[3]))
    np.testing.assert_array_equal(embedder.embed_decoded([decoded])[0], embedder.embed(photo_bytes[3]))


def test_uses_ai_edge_litert_when_installed():
    assert imgsim.embedder.INTERPRETER_PACKAGE == "ai_edge_litert"


def load_embedder_module_copy(name: str = "imgsim._embedder_import_probe"):
    """Execute imgsim/embedder.py afresh as a separate module.

    Reloading ``imgsim.embedder`` in place would swap its ``Embedder`` class for a
    new one while ``imgsim.composition`` and other importers keep the old class, which
    leaks into later tests. A copy under another name leaves the real module alone.
    """
    spec = importlib.util.spec_from_file_location(name, imgsim.embedder.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def without_ai_edge_litert(monkeypatch):
    """Make ``import ai_edge_litert`` fail and offer a stand-in ``tflite_runtime``; restored after."""
    from ai_edge_litert.interpreter import Interpreter as RealInterpreter

    class FakeTfliteInterpreter(RealInterpreter):
        """Behaves like the real one (same API) but is recognisably the fallback."""

    package = types.ModuleType("tflite_runtime")
    module = types.ModuleType("tflite_runtime.interpreter")
    module.Interpreter = FakeTfliteInterpreter
    package.interpreter = module
    monkeypatch.setitem(sys.modules, "tflite_runtime", package)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", module)
    # None in sys.modules makes the import statement raise ImportError.
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    return FakeTfliteInterpreter


def test_falls_back_to_tflite_runtime_without_ai_edge_litert(without_ai_edge_litert, embedder, photo_bytes):
    fallback_module = load_embedder_module_copy()
    assert fallback_module.INTERPRETER_PACKAGE == "tflite_runtime"
    assert fallback_module.Interpreter is without_ai_edge_litert
    fallback = fallback_module.Embedder()
    assert isinstance(fallback._interpreter, without_ai_edge_litert)
    np.testing.assert_allclose(fallback.embed(photo_bytes[0]), embedder.embed(photo_bytes[0]), atol=1e-6)
    # The real module was never touched.
    assert imgsim.embedder.INTERPRETER_PACKAGE == "ai_edge_litert"


def test_settings_from_env_reach_the_embedder():
    fresh = embedder_configured_by({"IMGSIM_BATCH_SIZE": "5", "IMGSIM_MAX_IMAGE_BYTES": "1234"})
    assert (fresh.settings.batch_size, fresh.settings.max_image_bytes) == (5, 1234)
    with pytest.raises(imgsim.ImageTooLarge):
        fresh.embed(b"x" * 2000)


def camera_sizes(photo: Path, rng: np.random.Generator) -> tuple[bytes, bytes]:
    """The same photo as a 4000 px camera JPEG (upscaled, sensor-like noise) and as a 1000 px export of it."""
    img = Image.open(photo).convert("RGB")
    scale = 4000 / max(img.size)
    big = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)
    noisy = np.asarray(big, dtype=np.float32) + 10 * rng.standard_normal((big.height, big.width, 3), np.float32)
    big = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    medium = big.resize((round(big.width / 4), round(big.height / 4)), Image.Resampling.LANCZOS)
    encoded = []
    for picture in (big, medium):
        buf = io.BytesIO()
        picture.save(buf, "JPEG", quality=90)
        encoded.append(buf.getvalue())
    return encoded[0], encoded[1]


@pytest.mark.parametrize("index", [388, 1064])
def test_same_photo_at_4000_and_1000_px_embeds_alike(index, embedder, photos):
    big, medium = camera_sizes(photos[index], np.random.default_rng(index))
    assert max(Image.open(io.BytesIO(big)).size) == 4000 and max(Image.open(io.BytesIO(medium)).size) == 1000
    ours = float(embedder.embed(big) @ embedder.embed(medium))
    assert ours >= 0.99
    # The check has teeth: the reference runtime's plain bilinear on the full-size pixels
    # aliases the noise differently at each size and lands well below.
    def full_size(data: bytes) -> np.ndarray:
        return embedder.embed_pixels([np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))])[0]

    assert float(full_size(big) @ full_size(medium)) < ours - 0.01


def test_embed_tensors_of_another_size_run_at_that_size(embedder, photos):
    """The duplicate signature's 96x96 grey regions (imgsim.signature) on their own interpreter: unit vectors,
    deterministic, describing the picture (a re-encoded copy scores near 1, another photo well below), and a tensor
    of the model's size in the same call still takes the model's own path."""
    from imgsim import signature
    from imgsim.preprocess import to_input_tensor

    def tensors(pixels: np.ndarray) -> list[np.ndarray]:
        return [np.repeat((plane.astype(np.float32) / 255)[:, :, None], 3, axis=2) for plane in signature.regions(pixels)]

    pixels = embedder.decode(photos[0].read_bytes()).pixels
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=40)
    copy = embedder.decode(buf.getvalue()).pixels
    other = embedder.decode(photos[170].read_bytes()).pixels
    regions = embedder.embed_tensors(tensors(pixels))
    assert regions.shape == (2, 1024)
    np.testing.assert_allclose(np.linalg.norm(regions, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(regions, embedder.embed_tensors(tensors(pixels)))
    of_copy, of_other = embedder.embed_tensors(tensors(copy)), embedder.embed_tensors(tensors(other))
    for row in range(2):
        assert float(regions[row] @ of_copy[row]) >= 0.99
        assert float(regions[row] @ of_other[row]) < 0.9
    mixed = embedder.embed_tensors([to_input_tensor(pixels, embedder.spec.input_size, embedder.spec.input_range),
                                    tensors(pixels)[0]])
    np.testing.assert_array_equal(mixed[0], embedder.embed_pixels([pixels])[0])
    np.testing.assert_array_equal(mixed[1], regions[0])
