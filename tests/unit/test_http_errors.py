"""The one table from imgsim's errors to HTTP statuses (imgsim.http.errors): every error is decided."""

from __future__ import annotations

import imgsim.http.errors as http_errors
import pytest
from imgsim import errors
from imgsim.errors import ImgsimError
from imgsim.http.errors import RETRY_AFTER_SECONDS, STATUS, problem, status_of

# Faults of the deployment or bugs, not refusals of a request: the handler answers them 500 internal_error (logged).
FAULTS = {errors.ConfigError, errors.ModelNotFound, errors.ChecksumMismatch, errors.StoreError,
          errors.CollectionMismatch, errors.StoreLocked}

# The statuses and codes clients (tests/test_search_api.py, the web page) depend on.
EXPECTED = {
    errors.InvalidRequest: (400, "bad_parameter"),
    errors.UnsupportedImageType: (415, "unsupported_media_type"),
    errors.NotFound: (404, "not_found"),
    errors.Conflict: (409, "conflict"),
    errors.NotDeletable: (409, "not_deletable"),
    errors.NotADuplicate: (409, "not_a_duplicate"),
    errors.KeepInTrash: (409, "keep_in_trash"),
    errors.Busy: (409, "busy"),
    errors.KeyTaken: (409, "key_taken"),
    errors.TooCostly: (413, "too_costly"),
    errors.Unavailable: (503, "unavailable"),
    errors.SecretUnavailable: (503, "auth_unavailable"),
    errors.NotConfigured: (503, "not_configured"),
    errors.ImageError: (400, "invalid_image"),
    errors.EmptyImage: (400, "empty_image"),
    errors.ImageTooLarge: (413, "image_too_large"),
    errors.TooManyPixels: (400, "too_many_pixels"),
    errors.DecodeTooCostly: (413, "decode_too_costly"),
    errors.NotAnImage: (400, "not_an_image"),
    errors.CorruptImage: (400, "corrupt_image"),
    errors.StoreUnavailable: (503, "store_unavailable"),
    errors.ObjectStorageError: (502, "storage_error"),
    errors.ObjectStorageUnavailable: (503, "storage_unavailable"),
    http_errors.MalformedBody: (400, "bad_body"),
    http_errors.MalformedJson: (400, "bad_json"),
    http_errors.EmptyBody: (400, "empty_body"),
    http_errors.UnsupportedMediaType: (415, "unsupported_media_type"),
    http_errors.BodyTooLarge: (413, "body_too_large"),
    http_errors.Unauthenticated: (401, "unauthenticated"),
    http_errors.MissingApiKey: (401, "missing_api_key"),
    http_errors.InvalidApiKey: (401, "invalid_api_key"),
    http_errors.Forbidden: (403, "forbidden"),
    http_errors.MissingScope: (403, "missing_scope"),
    http_errors.MissingTenant: (403, "missing_tenant"),
    http_errors.InternalError: (500, "internal_error"),
}


def all_errors() -> set[type[ImgsimError]]:
    found: set[type[ImgsimError]] = set()
    pending = [ImgsimError]
    while pending:
        for sub in pending.pop().__subclasses__():
            if sub.__module__.startswith("imgsim.") and sub not in found:
                found.add(sub)
                pending.append(sub)
    return found


def test_every_error_is_either_in_the_table_or_a_fault():
    undecided = {e.__name__ for e in all_errors() - FAULTS - set(EXPECTED)}
    assert not undecided, f"map these in imgsim.http.errors.STATUS (and EXPECTED here), or list them as FAULTS: {undecided}"
    assert set(STATUS) <= set(EXPECTED)


@pytest.mark.parametrize("error", sorted(EXPECTED, key=lambda e: e.__name__), ids=lambda e: e.__name__)
def test_each_refusal_has_its_status_and_code(error):
    status, code = EXPECTED[error]
    answer = problem(error("what went wrong"))
    assert answer is not None and (answer.status, answer.code) == (status, code)
    assert answer.body() == {"error": {"code": code, "message": "what went wrong"}}


@pytest.mark.parametrize("fault", sorted(FAULTS, key=lambda e: e.__name__), ids=lambda e: e.__name__)
def test_faults_are_not_mapped(fault):
    assert status_of(fault) is None and problem(fault("boom")) is None
    assert problem(RuntimeError("boom")) is None


def test_retry_after_only_when_trying_again_can_help():
    assert problem(errors.StoreUnavailable("down")).headers == {"Retry-After": str(RETRY_AFTER_SECONDS)}
    # A rate-limited server's own Retry-After is passed on when it asks for longer, rounded up.
    assert problem(errors.StoreUnavailable("slow down", retry_after=29.2)).headers == {"Retry-After": "30"}
    assert problem(errors.StoreUnavailable("slow down", retry_after=1)).headers == {"Retry-After": "5"}
    assert problem(errors.SecretUnavailable("ssm")).headers == {"Retry-After": "5"}
    assert problem(errors.ObjectStorageUnavailable("s3")).headers == {"Retry-After": "5"}
    assert problem(errors.NotConfigured("no bucket")).headers == {}
    assert problem(errors.NotFound("nope")).headers == {}
