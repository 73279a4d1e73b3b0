"""Exception types raised by imgsim.

Callers branch on the class, never on the message: the search API maps
``ImageError`` subclasses to HTTP 4xx, the indexer logs and acknowledges them
(a poison object must not be retried forever), and ``StoreUnavailable`` is the
one error that means "try again later".
"""


class ImgsimError(Exception):
    """Base class of every error imgsim raises on purpose."""


class ConfigError(ImgsimError):
    """A setting, the model manifest or the model file is missing or wrong."""


class ModelNotFound(ConfigError):
    """The model file is not where imgsim looked (the message lists the places)."""


class ChecksumMismatch(ConfigError):
    """A model file's sha256 is not the one pinned in the manifest."""


class ImageError(ImgsimError):
    """The bytes given are not an image imgsim can embed. Bad input, not a bug."""

    code = "invalid_image"


class EmptyImage(ImageError):
    code = "empty_image"


class ImageTooLarge(ImageError):
    """More bytes than ``IMGSIM_MAX_IMAGE_BYTES``."""

    code = "image_too_large"


class TooManyPixels(ImageError):
    """More pixels than ``IMGSIM_MAX_PIXELS``: a decompression bomb or an absurd photo."""

    code = "too_many_pixels"


class DecodeTooCostly(ImageError):
    """Decoding would take more memory or time than the budget (``IMGSIM_MAX_DECODE_MB`` /
    ``IMGSIM_MAX_DECODE_MS``), estimated from the header before any pixel is decoded."""

    code = "decode_too_costly"


class NotAnImage(ImageError):
    """Not a format imgsim decodes (JPEG, PNG, GIF, WebP, TIFF, BMP)."""

    code = "not_an_image"


class CorruptImage(ImageError):
    """A known format whose data is truncated or damaged."""

    code = "corrupt_image"


class StoreError(ImgsimError):
    """Qdrant answered, but not as expected."""


class CollectionMismatch(StoreError):
    """The collection exists with another vector size or distance than the model needs."""


class StoreUnavailable(StoreError):
    """Qdrant could not be reached, was rate limited or answered 5xx after the bounded retries: transient.

    ``retry_after``: the delay the server asked for (429 Retry-After), when it gave one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreLocked(StoreError):
    """The embedded store's folder is open in another process (the message names the path and holder)."""
