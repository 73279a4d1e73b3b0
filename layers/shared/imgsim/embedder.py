"""The feature extractor: TFLite MobileNet, one interpreter per process."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from .config import Settings
from .decode import DecodedImage, decode_image
from .models import ModelSpec, resolve_model, verify_file
from .preprocess import to_input_tensor

try:  # tflite-runtime: the small runtime Lambda layers use (Python <= 3.11)
    from tflite_runtime.interpreter import Interpreter
except ImportError:  # pragma: no cover - newer Pythons: Google's successor package, same API
    from ai_edge_litert.interpreter import Interpreter  # type: ignore[no-redef]


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, np.float32(1e-12))).astype(np.float32)


class Embedder:
    """Turns image bytes into L2-normalized float32 vectors.

    Create one per process and reuse it: building the interpreter costs tens of
    milliseconds. Calls are serialized with a lock because a TFLite interpreter
    is not thread-safe; parallelism comes from ``num_threads`` inside invoke().
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        model_dir: str | None = None,
        num_threads: int | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.spec, self.model_path = resolve_model(model or self.settings.model_name, model_dir or self.settings.model_dir)
        verify_file(self.model_path, self.spec.sha256)
        self._interpreter = Interpreter(
            model_path=str(self.model_path), num_threads=num_threads or self.settings.num_threads
        )
        self._input_index = self._interpreter.get_input_details()[0]["index"]
        self._output_index = self._interpreter.get_output_details()[0]["index"]
        self._batch = 0
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self.spec.name

    @property
    def dim(self) -> int:
        return self.spec.output_dim

    def decode(self, data: bytes) -> DecodedImage:
        return decode_image(data, max_bytes=self.settings.max_image_bytes, max_pixels=self.settings.max_pixels)

    def embed(self, data: bytes) -> np.ndarray:
        """One image's bytes -> (dim,) float32, unit length. Raises ``ImageError`` on bad input."""
        return self.embed_many([data])[0]

    def embed_many(self, items: Sequence[bytes]) -> np.ndarray:
        """Many images' bytes -> (N, dim). Raises on the first bad image; decode
        items yourself with ``decode`` and call ``embed_decoded`` to skip bad ones."""
        return self.embed_decoded([self.decode(data) for data in items])

    def embed_decoded(self, images: Sequence[DecodedImage]) -> np.ndarray:
        return self.embed_pixels([image.pixels for image in images])

    def embed_pixels(self, pixel_arrays: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 RGB arrays -> (N, dim), run in batches of ``IMGSIM_BATCH_SIZE``."""
        if not pixel_arrays:
            return np.zeros((0, self.dim), dtype=np.float32)
        tensors = np.stack(
            [to_input_tensor(p, self.spec.input_size, self.spec.input_range) for p in pixel_arrays]
        )
        step = max(1, self.settings.batch_size)
        out = [self._run(tensors[i : i + step]) for i in range(0, len(tensors), step)]
        return l2_normalize(np.concatenate(out))

    def _run(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            if batch.shape[0] != self._batch:
                # The model's batch dimension is dynamic; reallocate only when it changes.
                self._interpreter.resize_tensor_input(self._input_index, list(batch.shape))
                self._interpreter.allocate_tensors()
                self._batch = batch.shape[0]
            self._interpreter.set_tensor(self._input_index, batch)
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self._output_index).copy()


__all__ = ["Embedder", "ModelSpec", "l2_normalize"]
