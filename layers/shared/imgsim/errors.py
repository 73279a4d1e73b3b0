"""Exception types raised by imgsim.

Callers branch on the class, never on the message: the indexer logs and acknowledges ``ImageError``s (a poison
object must not be retried forever) and retries on ``StoreUnavailable``; the search API's services
(``imgsim.services``) refuse requests with ``InvalidRequest``, ``NotFound``, ``Conflict``, ``TooCostly`` and
``Unavailable``, and the HTTP side maps each class to a status in one table (``imgsim.http.errors``). Every error a
caller may be shown has a stable ``code`` (the API's ``{"error": {"code", "message"}}``); messages may change.
"""


class ImgsimError(Exception):
    """Base class of every error imgsim raises on purpose."""


# -- refusals: what a caller asked for cannot be done (imgsim.services) ---------------------------------------------


class InvalidRequest(ImgsimError):
    """The request is malformed or contradicts itself (an id that is no UUID, keep and remove the same image)."""

    code = "bad_parameter"


class UnsupportedImageType(InvalidRequest):
    """A content type the indexer does not decode (an upload announced as ``image/svg+xml``)."""

    code = "unsupported_media_type"


class NotFound(ImgsimError):
    """No indexed image has that id or key."""

    code = "not_found"


class Conflict(ImgsimError):
    """The image exists, but its state forbids the operation."""

    code = "conflict"


class NotDeletable(Conflict):
    """The image has no S3 object this deployment manages (indexed from a local file, or another bucket)."""

    code = "not_deletable"


class NotADuplicate(Conflict):
    """A resolve would delete an image that is not (or no longer) a duplicate of the one kept."""

    code = "not_a_duplicate"


class KeepInTrash(Conflict):
    """A resolve names as the image to keep one that was moved to the trash (by another resolve, say)."""

    code = "keep_in_trash"


class Busy(Conflict):
    """Another resolve or delete of the same images is under way; try again in a moment."""

    code = "busy"


class KeyTaken(Conflict):
    """A restore would overwrite another object stored at the image's key since it was deleted."""

    code = "key_taken"


class TooCostly(ImgsimError):
    """Carrying the request out would cost more (bytes, memory, time) than the configured budget."""

    code = "too_costly"


class Unavailable(ImgsimError):
    """A dependency cannot serve the request now. ``transient``: trying again later may work (``retry_after``:
    the delay the dependency asked for, in seconds, when it gave one); otherwise the deployment lacks something."""

    code = "unavailable"
    transient = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SecretNotFound(LookupError):
    """A secret's parameter does not exist (SSM ParameterNotFound, Secrets Manager ResourceNotFoundException, a
    missing ``file:``): for the API keys, no key there, not an outage. Not an ``ImgsimError``: never shown as such."""


class SecretUnavailable(Unavailable):
    """A secret (the API key's SSM parameter) could not be read."""

    code = "auth_unavailable"


class NotConfigured(Unavailable):
    """The deployment lacks a setting the operation needs (IMAGES_BUCKET, an API key): retrying will not help."""

    code = "not_configured"
    transient = False


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


class ImageTooLarge(TooCostly, ImageError):
    """More bytes than ``IMGSIM_MAX_IMAGE_BYTES`` (bad input, and a request too costly to carry out)."""

    code = "image_too_large"


class TooManyPixels(ImageError):
    """More pixels than ``IMGSIM_MAX_PIXELS``: a decompression bomb or an absurd photo."""

    code = "too_many_pixels"


class DecodeTooCostly(TooCostly, ImageError):
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


class StoreUnavailable(StoreError, Unavailable):
    """Qdrant could not be reached, was rate limited or answered 5xx after the bounded retries: transient.

    ``retry_after``: the delay the server asked for (429 Retry-After), when it gave one.
    """

    code = "store_unavailable"


class StoreLocked(StoreError):
    """The embedded store's folder is open in another process (the message names the path and holder)."""


class ObjectStorageError(ImgsimError):
    """S3 refused a request (the bucket is gone, access denied): the storage's failure, not the caller's."""

    code = "storage_error"


class ObjectStorageUnavailable(Unavailable, ObjectStorageError):
    """S3 could not be reached: transient."""

    code = "storage_unavailable"
