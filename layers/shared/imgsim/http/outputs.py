"""What the API answers, as pydantic models: the JSON schemas of the OpenAPI document's responses.

The services build their answers as plain dicts (``imgsim.services``); these models describe them for the document
(``imgsim.http.contract``), against which tests/test_search_api_fuzz.py (schemathesis) checks every answer it gets.
Fields a service always writes are required; a value read from a point's payload may be null (a point indexed from
a local file has no bucket). Extra fields are allowed: an answer may grow a field without breaking a client
generated from an older document.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from .inputs import UUID_FORMAT

Id = Annotated[str, Field(json_schema_extra=UUID_FORMAT, description="An image's id (a UUID)")]
Score = Annotated[float, Field(ge=0, le=1, description="Similarity 0-1 (cosine mapped to 0-1)")]
Percent = Annotated[float, Field(ge=0, le=100)]
Instant = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
Url = Annotated[str, Field(json_schema_extra={"format": "uri"})]


class _Answer(BaseModel):
    # defer_build: nothing here is needed to answer a request (the document is built on its first GET).
    model_config = ConfigDict(defer_build=True, extra="allow")


class ImageFields(_Answer):
    """What a result or a trash entry shows of an image's stored details."""

    bucket: str | None
    key: str | None
    width: int | None
    height: int | None
    content_type: str | None
    size: int | None = Field(description="bytes")
    indexed_at: Instant | None


class Result(ImageFields):
    """One search or recommendation result, best first."""

    id: Id
    score: Score
    percent: Percent
    url: Url | None = Field(description="A presigned GET of the image (null for a point indexed from a local file)")
    similar: bool = Field(description="score at or above similar_threshold")
    duplicates: int | None = Field(None, ge=0, description="with collapse=true: how many duplicates were folded in")


class SearchResults(_Answer):
    results: list[Result]
    took_ms: float
    model: str
    offset: int = Field(ge=0)
    next_offset: int | None = Field(description="offset of the next page; null on the last page")


class Comparison(_Answer):
    score: Score
    percent: Percent
    model: str
    took_ms: float


class Recommendations(_Answer):
    results: list[Result]
    model: str
    took_ms: float


class Caller(_Answer):
    """GET /me: who the credential is and what it may do (the page shows it and hides what the scopes forbid)."""

    name: str = Field(description="The key's name (or the token's subject); never the key")
    tenant: str | None = Field(description="The tenant whose images the caller sees; null: only images outside "
                                           "tenants/")
    scopes: list[Literal["search", "upload", "delete"]]
    via: Literal["key", "token"]
    max_upload_bytes: int = Field(ge=1, description="The largest file POST /uploads lets S3 accept")
    images: int | None = Field(ge=0, description="How many indexed images this caller sees (its tenant's); null "
                                                 "when the store cannot be reached")


class Upload(_Answer):
    """A presigned POST: send ``fields`` then the file (the last part, named ``file``) as multipart/form-data to
    ``url``; S3 refuses a file larger than ``max_bytes``."""

    url: Url
    method: Literal["POST"]
    fields: dict[str, str] = Field(description="Form fields to send first, as given (key, Content-Type, policy, "
                                               "signature); the signed policy fixes the key, the type and the size")
    max_bytes: int = Field(ge=1, description="The largest file S3 accepts (IMGSIM_MAX_UPLOAD_MB): 400 "
                                             "EntityTooLarge past it")
    bucket: str
    key: str
    id: Id = Field(description="The id the image will have once indexed (GET /images/{id})")
    expires_in: int = Field(ge=1, description="seconds the URL stays valid")


class Image(_Answer):
    """An indexed image's stored details (its payload, without bookkeeping fields), its duplicate group and a URL."""

    id: Id
    url: Url | None
    key: str
    bucket: str | None = None
    width: int | None = None
    height: int | None = None
    size: int | None = None
    content_type: str | None = None
    format: str | None = None
    model: str | None = None
    indexed_at: Instant | None = None
    duplicates: int | None = Field(None, ge=1, description="The group's image to keep: how many others are in it")
    duplicate_of: Id | None = Field(None, description="In a group, not its image to keep: the image to keep")
    duplicate_key: str | None = None
    duplicate_score: Score | None = None


class Trashed(_Answer):
    id: Id
    bucket: str | None
    key: str | None
    status: Literal["trashed"]
    trash_id: Id = Field(description="The trash entry: POST /trash/{trash_id}/restore")
    expires_at: Instant | None = Field(description="When it goes for good")


class Restored(_Answer):
    id: Id
    bucket: str
    key: str
    status: Literal["restored"]


class TrashItem(ImageFields):
    id: Id = Field(description="The trash entry's id (POST /trash/{id}/restore)")
    image_id: Id | None
    trashed_at: Instant | None
    expires_at: Instant | None
    url: Url | None


class TrashPage(_Answer):
    items: list[TrashItem]
    next_cursor: str | None = Field(description="cursor of the next page; null on the last page")
    trash_days: int


class GroupMember(_Answer):
    id: Id
    score: Score = Field(description="Its score with the group's image to keep")
    key: str | None
    width: int | None
    height: int | None
    size: int | None
    indexed_at: Instant | None
    url: Url | None


class DuplicateGroup(_Answer):
    keep: Id = Field(description="The image suggested to keep")
    members: list[GroupMember]


class DuplicatesPage(_Answer):
    threshold: Score
    groups: list[DuplicateGroup]
    next_cursor: Id | None = Field(description="cursor of the next page; null on the last page")


class Resolved(_Answer):
    keep: Id
    removed: list[Trashed]
    not_duplicates: list[Id]


class Building(_Answer):
    collection: str
    model: str


class _HealthDetails(_Answer):
    collection: str | None = Field(None, description="The alias clients name")
    serving: str | None = Field(None, description="The collection behind the alias")
    model: str | None = None
    building: Building | None = Field(None, description="A model switch in progress: the collection being built")


class Health(_HealthDetails):
    status: Literal["ok"]
    collection: str
    model: str


class HealthUnavailable(_HealthDetails):
    """What /health could learn before the store failed, beside the error."""

    status: Literal["unavailable"]


class GatewayMessage(BaseModel):
    """API Gateway's own answers (throttling, a function that failed or timed out): not the API's envelope."""

    model_config = ConfigDict(defer_build=True)

    message: str = Field(examples=["Too Many Requests"])

