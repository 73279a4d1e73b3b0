"""The feature extractor: TFLite MobileNet, one interpreter per process."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .decode import DecodedImage, Region, decode_image
from .errors import ConfigError
from .models import ModelSpec, resolve_model, verify_file
from .preprocess import to_input_tensor
from .settings import Settings

try:  # ai-edge-litert (LiteRT): what the layer ships, tflite-runtime's successor with the same Interpreter API and
    # wheels for both of Lambda's architectures on python3.13 / Amazon Linux 2023 (glibc 2.34; tests/test_packaging.py
    # checks every library's symbol versions).
    from ai_edge_litert.interpreter import Interpreter

    INTERPRETER_PACKAGE = "ai_edge_litert"
except ImportError:  # machines that only have the older tflite-runtime
    from tflite_runtime.interpreter import Interpreter

    INTERPRETER_PACKAGE = "tflite_runtime"


def l2_normalize(vectors: NDArray[Any]) -> NDArray[Any]:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    normalized: NDArray[Any] = (vectors / np.maximum(norms, np.float32(1e-12))).astype(np.float32)
    return normalized


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
        self.settings = settings or Settings()
        self.spec, self.model_path = resolve_model(model or self.settings.model_name, model_dir or self.settings.model_dir)
        verify_file(self.model_path, self.spec.sha256)
        self.num_threads = max(1, num_threads or self.settings.num_threads)
        self._interpreter = Interpreter(model_path=str(self.model_path), num_threads=self.num_threads)
        input_details = self._interpreter.get_input_details()[0]
        output_details = self._interpreter.get_output_details()[0]
        self._check_shapes(tuple(input_details["shape"]), tuple(output_details["shape"]))
        self._input_index = input_details["index"]
        self._output_index = output_details["index"]
        # The model's batch dimension is dynamic, but on this CPU runtime (XNNPACK)
        # batching buys nothing: measured per image, batch 1 is ~1.37 ms, batch 16
        # ~1.59 ms, and every change of batch size re-plans the delegate (~6 ms).
        # So the input stays at batch 1, allocated once, and images are invoked one
        # by one (tests/bench/bench_embed.py prints both figures).
        self._interpreter.resize_tensor_input(self._input_index, [1, *input_details["shape"][1:]])
        self._interpreter.allocate_tensors()
        self._lock = threading.Lock()
        self._sized: dict[tuple[int, int], tuple[Any, int, int]] = {}  # other input sizes (embed_tensors)

    def _check_shapes(self, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> None:
        """The manifest describes the model file; a disagreement is a manifest error, said clearly."""
        height, width = self.spec.input_size
        if len(input_shape) != 4 or tuple(input_shape[1:]) != (height, width, 3):
            raise ConfigError(
                f"model {self.spec.name!r} ({self.model_path}) takes input of shape {list(input_shape)}, "
                f"but the manifest says input_size {height}x{width} (RGB); fix models.json"
            )
        if output_shape[-1] != self.spec.output_dim:
            raise ConfigError(
                f"model {self.spec.name!r} ({self.model_path}) outputs {output_shape[-1]}-d vectors, "
                f"but the manifest says output_dim {self.spec.output_dim}; fix models.json"
            )

    @property
    def model_name(self) -> str:
        return self.spec.name

    @property
    def dim(self) -> int:
        return self.spec.output_dim

    @property
    def max_image_bytes(self) -> int:
        """The largest file ``decode`` accepts (IMGSIM_MAX_IMAGE_BYTES): what a caller reads of a file at most."""
        return self.settings.max_image_bytes

    def decode(self, data: bytes, region: Region | None = None) -> DecodedImage:
        """``region``: only that part of the upright picture (``imgsim.decode.decode_image``)."""
        return decode_image(
            data, max_bytes=self.settings.max_image_bytes, max_pixels=self.settings.max_pixels,
            max_decode_bytes=self.settings.max_decode_mb * 2**20, max_decode_ms=self.settings.max_decode_ms,
            region=region,
        )

    def embed(self, data: bytes) -> NDArray[Any]:
        """One image's bytes -> (dim,) float32, unit length. Raises ``ImageError`` on bad input."""
        vector: NDArray[Any] = self.embed_many([data])[0]
        return vector

    def embed_many(self, items: Sequence[bytes]) -> NDArray[Any]:
        """Many images' bytes -> (N, dim). Raises on the first bad image; decode
        items yourself with ``decode`` and call ``embed_decoded`` to skip bad ones."""
        return self.embed_decoded([self.decode(data) for data in items])

    def embed_decoded(self, images: Sequence[DecodedImage]) -> NDArray[Any]:
        return self.embed_pixels([image.pixels for image in images])

    def embed_pixels(self, pixel_arrays: Sequence[NDArray[Any]]) -> NDArray[Any]:
        """uint8 RGB arrays -> (N, dim).

        Preprocessed ``IMGSIM_BATCH_SIZE`` at a time (bounds the float tensors
        held at once); each image is one batch-1 invoke (see ``__init__``).
        """
        out = np.empty((len(pixel_arrays), self.dim), dtype=np.float32)
        step = max(1, self.settings.batch_size)
        for start in range(0, len(pixel_arrays), step):
            chunk = pixel_arrays[start : start + step]
            tensors = [to_input_tensor(p, self.spec.input_size, self.spec.input_range) for p in chunk]
            with self._lock:
                for offset, tensor in enumerate(tensors):
                    out[start + offset] = self._invoke(tensor)
        return l2_normalize(out)

    def embed_tensors(self, tensors: Sequence[NDArray[Any]]) -> NDArray[Any]:
        """Already preprocessed (h, w, 3) float32 tensors in the model's input range -> (N, dim), unit length.
        For callers that prepare their own inputs (the duplicate signature's small grey regions); a tensor of
        another size than the model's runs on an interpreter for that size (``_interpreter_for``)."""
        out = np.empty((len(tensors), self.dim), dtype=np.float32)
        with self._lock:
            for i, tensor in enumerate(tensors):
                if tuple(tensor.shape[:2]) == self.spec.input_size:
                    out[i] = self._invoke(tensor)
                    continue
                interpreter, input_index, output_index = self._interpreter_for((tensor.shape[0], tensor.shape[1]))
                interpreter.set_tensor(input_index, tensor[None])
                interpreter.invoke()
                out[i] = interpreter.get_tensor(output_index)[0]
        return l2_normalize(out)

    def _interpreter_for(self, size: tuple[int, int]) -> tuple[Any, int, int]:
        """A second interpreter of the model with its input resized to ``size`` (h, w), built on first use (~5 ms
        at 96x96) and kept. Caller holds the lock.

        Why it works: MobileNet is convolutional up to its last pooling, a fixed 7x7 window that is global at 224
        (a 7x7 map). At 96x96 the map is 3x3, and LiteRT's CPU path (the XNNPACK delegate) averages the window as
        zero-padded: the map's sum / 49, the global average times a constant. So the vectors are a deterministic
        description of the input, comparable among themselves (never with the model-size ones): the duplicate
        signature (``imgsim.signature``) embeds two 96x96 grey regions at ~0.3 ms each instead of ~1 ms at 224.
        Measured there: the same separation as with the exact global average (computed from the 3x3 map).
        The reference kernels (no XNNPACK) refuse such a shape: that is a ``ConfigError`` here."""
        found = self._sized.get(size)
        if found is None:
            interpreter = Interpreter(model_path=str(self.model_path), num_threads=self.num_threads)
            input_index = interpreter.get_input_details()[0]["index"]
            try:
                interpreter.resize_tensor_input(input_index, [1, size[0], size[1], 3])
                interpreter.allocate_tensors()
            except (RuntimeError, ValueError) as exc:
                raise ConfigError(
                    f"model {self.spec.name!r} cannot run at {size[0]}x{size[1]} on {INTERPRETER_PACKAGE} here "
                    f"(the duplicate signature needs it): {exc}"
                ) from exc
            found = (interpreter, input_index, interpreter.get_output_details()[0]["index"])
            self._sized[size] = found
        return found

    def _invoke(self, tensor: NDArray[Any]) -> NDArray[Any]:
        """One (h, w, 3) float32 tensor -> the raw (dim,) output. Caller holds the lock."""
        self._interpreter.set_tensor(self._input_index, tensor[None])
        self._interpreter.invoke()
        output: NDArray[Any] = self._interpreter.get_tensor(self._output_index)[0]
        return output


__all__ = ["INTERPRETER_PACKAGE", "Embedder", "ModelSpec", "l2_normalize"]
