"""POST /uploads, GET and DELETE /images/{id}: one image."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.metrics import MetricUnit
from imgsim.access import DELETE, SEARCH, UPLOAD
from imgsim.http.auth import principal_of, protected
from imgsim.http.inputs import (
    UUID_FORMAT,
    UUID_PATTERN,
    UploadBody,
    json_body,
    request_body,
)
from imgsim.http.responses import json_response
from imgsim.services import Services, UploadRequest

if TYPE_CHECKING:
    from imgsim.http import contract as c

metrics = Metrics()

IMAGE_ID = Annotated[str, Path(pattern=UUID_PATTERN, json_schema_extra=UUID_FORMAT, description="The image's id")]


def contract() -> dict[tuple[str, str], c.Operation]:
    # Imported here: only GET /openapi.json needs them (~20 ms of a cold start otherwise).
    from imgsim.http import contract as c
    from imgsim.http.outputs import Image, Trashed, Upload

    return {
        ("/uploads", "post"): c.Operation(ok=Upload, body={"application/json": UploadBody},
                                          errors=(*c.JSON_BODY, *c.UPLOAD, *c.S3)),
        ("/images/{id}", "get"): c.Operation(ok=Image, errors=(*c.NOT_FOUND, *c.STORE, *c.S3)),
        ("/images/{id}", "delete"): c.Operation(ok=Trashed, errors=(*c.DELETE, *c.STORE, *c.S3), links={
            "restore": c.Link("/trash/{id}/restore", "post", {"id": "$response.body#/trash_id"})}),
    }


def register(app: APIGatewayHttpResolver, services: Callable[[], Services]) -> None:
    def callers() -> Services:
        """The services as the caller's tenant sees them (imgsim.services.Services.for_tenant)."""
        return services().for_tenant(principal_of(app).tenant)

    @app.post("/uploads", **protected(services, UPLOAD), tags=["images"],
              summary="A presigned POST (url, fields, max_bytes) and the key and id the image will have")
    def create_upload():
        _, body = request_body(app.current_event, services().settings.max_body_bytes)
        upload = json_body(UploadBody, body)
        return json_response(200, callers().images.create_upload(
            UploadRequest(filename=upload.filename, content_type=upload.content_type)))

    @app.get("/images/<id>", **protected(services, SEARCH), tags=["images"],
             summary="An indexed image's stored details and a presigned URL")
    def get_image(id: IMAGE_ID):
        return json_response(200, callers().images.get(id))

    @app.delete("/images/<id>", **protected(services, DELETE), tags=["images"],
                summary="Move the image to the trash (restorable for IMGSIM_TRASH_DAYS): gone from search at once")
    def delete_image(id: IMAGE_ID):
        result = callers().trash.delete(id)
        metrics.add_metric(name="ImagesTrashed", unit=MetricUnit.Count, value=1)
        return json_response(200, result)
