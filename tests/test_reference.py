"""imgsim's preprocessing + model agree with the reference runtime (MediaPipe Tasks ImageEmbedder).

Both get the SAME decoded uint8 RGB pixels; only the resize/normalize/invoke path
differs. Images are up to 448 px on the long side (what decode hands over after
its reduction), so this pins down the final resize exactly.
"""

from __future__ import annotations

# A hard dependency of the tests (requirements-dev.txt): a missing oracle must fail, not skip.
import mediapipe as mp
import numpy as np
import pytest
import skimage.data
from imgsim.decode import REDUCE_TO_LONG_SIDE
from imgsim.preprocess import resize_like_reference
from mediapipe.tasks import python as mp_tasks
from mediapipe.tasks.python import vision
from PIL import Image

MIN_COSINE = 0.999
SKIMAGE_IMAGES = {
    "astronaut": skimage.data.astronaut,
    "chelsea": skimage.data.chelsea,
    "coffee": skimage.data.coffee,
    "rocket": skimage.data.rocket,
    "motorcycle_left": lambda: skimage.data.stereo_motorcycle()[0],
    "motorcycle_right": lambda: skimage.data.stereo_motorcycle()[1],
    "retina": skimage.data.retina,
    "hubble_deep_field": skimage.data.hubble_deep_field,
    "immunohistochemistry": skimage.data.immunohistochemistry,
    "camera": skimage.data.camera,  # grayscale
    "moon": skimage.data.moon,  # grayscale
    "horse": skimage.data.horse,  # binary silhouette
    "coins": skimage.data.coins,
}
SKIMAGE_NAMES = list(SKIMAGE_IMAGES)


@pytest.fixture(scope="module")
def reference_embedder(embedder):
    options = vision.ImageEmbedderOptions(
        base_options=mp_tasks.BaseOptions(model_asset_path=str(embedder.model_path)),
        l2_normalize=True,
        quantize=False,
    )
    reference = vision.ImageEmbedder.create_from_options(options)
    yield reference
    reference.close()


def reference_vector(reference, pixels: np.ndarray) -> np.ndarray:
    image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(pixels, dtype=np.uint8))
    return np.asarray(reference.embed(image).embeddings[0].embedding, dtype=np.float32)


def as_rgb(array: np.ndarray) -> np.ndarray:
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.ndim == 2:
        array = np.dstack([array] * 3)
    return np.ascontiguousarray(array[..., :3].astype(np.uint8))


def fit(pixels: np.ndarray, long_side: int = REDUCE_TO_LONG_SIDE) -> np.ndarray:
    height, width = pixels.shape[:2]
    if max(height, width) <= long_side:
        return pixels
    scale = long_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))


def skimage_pixels() -> list[tuple[str, np.ndarray]]:
    return [(name, fit(as_rgb(load()))) for name, load in SKIMAGE_IMAGES.items()]


@pytest.mark.parametrize("height,width", [(224, 224), (100, 333), (500, 480), (3, 5)])
def test_sampler_matches_opencv_pixel_for_pixel(height, width):
    # MediaPipe's CPU converter maps the image's corners onto the tensor's with
    # cv2.getPerspectiveTransform and resamples with cv2.warpPerspective (bilinear,
    # replicated border). opencv-contrib-python comes with mediapipe.
    import cv2

    pixels = as_rgb(skimage.data.astronaut())[:301, :437]
    src_h, src_w = pixels.shape[:2]
    corners = lambda w, h: np.float32([[0, h], [0, 0], [w, 0], [w, h]])
    matrix = cv2.getPerspectiveTransform(corners(src_w, src_h), corners(width, height))
    expected = cv2.warpPerspective(
        pixels, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    np.testing.assert_array_equal(resize_like_reference(pixels, height, width), expected)


def test_agrees_with_reference_runtime_on_real_photos(embedder, reference_embedder, photos):
    # ~40 photos spread over the cats, dogs, monkeys and squirrels blocks.
    chosen = photos[:: len(photos) // 40]
    assert len(chosen) >= 40
    cosines = []
    for path in chosen:
        pixels = embedder.decode(path.read_bytes()).pixels
        assert max(pixels.shape[:2]) <= REDUCE_TO_LONG_SIDE
        ours = embedder.embed_pixels([pixels])[0]
        cosines.append(float(ours @ reference_vector(reference_embedder, pixels)))
    assert min(cosines) >= MIN_COSINE, f"worst {min(cosines):.6f}, mean {np.mean(cosines):.6f}"


@pytest.mark.parametrize("name,pixels", skimage_pixels(), ids=SKIMAGE_NAMES)
def test_agrees_with_reference_runtime_on_skimage_images(name, pixels, embedder, reference_embedder):
    ours = embedder.embed_pixels([pixels])[0]
    assert float(ours @ reference_vector(reference_embedder, pixels)) >= MIN_COSINE


@pytest.mark.parametrize("height,width", [(7, 11), (64, 300), (224, 224), (225, 223), (448, 150), (333, 448)])
def test_agrees_with_reference_runtime_at_odd_sizes(height, width, embedder, reference_embedder):
    # Up- and downscaling, extreme aspect ratios, sizes one pixel off the model's input.
    pixels = as_rgb(skimage.data.coffee())
    crop = np.ascontiguousarray(pixels[:height, :width]) if height <= 400 else fit(pixels[:, :width], height)
    crop = np.asarray(Image.fromarray(crop).resize((width, height), Image.Resampling.LANCZOS))
    ours = embedder.embed_pixels([crop])[0]
    assert float(ours @ reference_vector(reference_embedder, crop)) >= MIN_COSINE


def test_reduced_large_photo_agrees_too(embedder, reference_embedder):
    # decode's reduction output (here from a 2000 px JPEG) is what the final resize sees.
    import io

    big = Image.fromarray(as_rgb(skimage.data.astronaut())).resize((2000, 2000), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=90)
    pixels = embedder.decode(buf.getvalue()).pixels
    assert pixels.shape == (448, 448, 3)
    ours = embedder.embed_pixels([pixels])[0]
    assert float(ours @ reference_vector(reference_embedder, pixels)) >= MIN_COSINE
