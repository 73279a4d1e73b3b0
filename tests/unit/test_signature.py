"""imgsim.signature: the pair score is symmetric and reads the same from the payload; decode refuses what is not a
signature of this version; score_many is score for many (FakeEmbedder and synthetic int8 signatures, no model)."""

from __future__ import annotations

import base64
import hashlib

import numpy as np
import pytest
from fakes import FakeEmbedder, picture
from imgsim import signature
from imgsim.signature import ROWS, Signature
from PIL import ImageOps


def random_signature(rng: np.random.Generator) -> Signature:
    return Signature(rng.integers(-127, 128, size=(ROWS, signature.DIM)).astype(np.int8))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(19)


def test_score_is_symmetric_exactly(rng):
    for _ in range(200):
        a, b = random_signature(rng), random_signature(rng)
        cosine = float(rng.uniform(-1, 1))
        assert signature.score(a, b, cosine) == signature.score(b, a, cosine)


def test_score_is_symmetric_on_computed_signatures():
    pictures = [np.asarray(picture(seed)) for seed in range(4)]
    pictures.append(np.asarray(ImageOps.grayscale(picture(0)).convert("RGB")))
    sigs = signature.compute(FakeEmbedder(), pictures)
    for a in sigs:
        for b in sigs:
            assert signature.score(a, b, 0.3) == signature.score(b, a, 0.3)


def test_encode_decode_round_trip(rng):
    sig = random_signature(rng)
    text = signature.encode(sig)
    back = signature.decode(text)
    assert text.startswith("s2:")
    assert back is not None
    assert back.codes.dtype == np.int8
    assert np.array_equal(back.codes, sig.codes)


def test_computed_signature_scores_the_same_after_the_round_trip():
    sigs = signature.compute(FakeEmbedder(), [np.asarray(picture(seed)) for seed in range(3)])
    back = [signature.decode(signature.encode(s)) for s in sigs]
    assert all(b is not None for b in back)
    for i, a in enumerate(sigs):
        for j, b in enumerate(sigs):
            stored = back[j]
            assert stored is not None
            assert signature.score(a, b, 0.5) == signature.score(a, stored, 0.5), (i, j)


@pytest.mark.parametrize("text", [
    None, 42, b"s2:AAAA", "", "s2:", "s2:not base64!", "s2:" + base64.b64encode(b"\x01" * 100).decode(),
    "s1:" + base64.b64encode(np.ones((7, 1024), dtype=np.float16).tobytes()).decode(),  # the old 7-row float16
    "s3:" + base64.b64encode(np.ones((ROWS, signature.DIM), dtype=np.int8).tobytes()).decode(),
])
def test_decode_refuses_what_is_not_a_signature_of_this_version(text):
    assert signature.decode(text) is None


def test_decode_refuses_a_row_without_direction():
    codes = np.ones((ROWS, signature.DIM), dtype=np.int8)
    codes[1] = 0
    assert signature.decode("s2:" + base64.b64encode(codes.tobytes()).decode()) is None


def test_decode_many_is_decode_of_each(rng):
    zero_row = np.ones((ROWS, signature.DIM), dtype=np.int8)
    zero_row[0] = 0
    texts = [signature.encode(random_signature(rng)), None, "s2:not base64!", signature.encode(random_signature(rng)),
             "s2:" + base64.b64encode(zero_row.tobytes()).decode(), 42, signature.encode(random_signature(rng))]
    many = signature.decode_many(texts)
    single = [signature.decode(t) for t in texts]
    assert [m is None for m in many] == [s is None for s in single] == [False, True, True, False, True, True, False]
    assert all(np.array_equal(m.codes, s.codes) for m, s in zip(many, single) if m is not None and s is not None)
    assert signature.decode_many([]) == [] and signature.decode_many([None]) == [None]


def test_score_many_is_score_for_each(rng):
    a = random_signature(rng)
    others = [random_signature(rng) for _ in range(16)]
    others.append(a)
    cosines = [float(c) for c in rng.uniform(-0.2, 1.0, size=len(others))]
    many = signature.score_many(a, others, cosines)
    assert many.shape == (len(others),)
    assert list(many) == [signature.score(a, o, c) for o, c in zip(others, cosines, strict=True)]
    assert len(signature.score_many(a, [], [])) == 0


def test_score_many_wants_a_cosine_per_signature(rng):
    with pytest.raises(ValueError, match="2 signatures but 1 cosines"):
        signature.score_many(random_signature(rng), [random_signature(rng), random_signature(rng)], [0.5])


def test_either_detector_decides():
    """A grey copy scores 1 whatever its colour cosine; unrelated pictures score their colour cosine (clipped)."""
    original = np.asarray(picture(1))
    grey = np.asarray(ImageOps.grayscale(picture(1)).convert("RGB"))
    other = np.asarray(picture(2))
    a, b, c = signature.compute(FakeEmbedder(), [original, grey, other])
    assert signature.score(a, b, 0.2) == pytest.approx(1.0)
    assert signature.score(a, c, 0.6) == pytest.approx(0.6)
    assert signature.score(a, c, -0.4) == 0.0
    assert signature.score(a, c, 1.3) == 1.0


def test_compute_shape_and_one_call_for_many():
    embedder = FakeEmbedder()
    sigs = signature.compute(embedder, [np.asarray(picture(seed, size=(300, 200))) for seed in range(3)])
    assert [s.codes.shape for s in sigs] == [(ROWS, signature.DIM)] * 3
    assert all(s.codes.dtype == np.int8 for s in sigs)
    assert embedder.tensors == 3 * ROWS
    assert signature.compute(embedder, []) == []


def test_regions_are_the_whole_and_its_centre():
    pixels = np.zeros((60, 90, 3), dtype=np.uint8)
    pixels[:, 45:] = 255  # left half black, right half white
    whole, crop = signature.regions(pixels)
    assert whole.shape == crop.shape == (signature.SIDE, signature.SIDE)
    assert whole.dtype == crop.dtype == np.uint8
    assert whole[:, :40].max() == 0 and whole[:, -40:].min() == 255
    # the centre crop of half the area spans the middle ~71 % of each side: still black then white, split mid-way
    assert crop[:, :40].max() == 0 and crop[:, -40:].min() == 255


def test_the_projection_is_part_of_the_format():
    """Stored signatures are only comparable with ones projected the same way: changing the projection (or DIM) is
    changing the format, which needs a new version tag (_VERSION) so old signatures decode to None."""
    matrix = signature.projection(1024)
    assert matrix.shape == (1024, signature.DIM)
    assert set(np.unique(matrix)) == {-1.0, 1.0}
    digest = hashlib.sha256(matrix.astype(np.int8).tobytes()).hexdigest()
    assert digest == PROJECTION_SHA256, "the projection changed: bump signature._VERSION"


PROJECTION_SHA256 = "72dc5755e15af1bde294fb0b9b8c9b76e3848b5d11febdf83973dd8a5443cab9"
