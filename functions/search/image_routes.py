"""POST /uploads, GET and DELETE /images/{id}: one image."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.metrics import MetricUnit
from imgsim.http.auth import protected
from imgsim.http.inputs import UploadBody, json_body, openapi_schema, request_body
from imgsim.http.responses import json_response
from imgsim.services import Services, UploadRequest

metrics = Metrics()


def request_bodies() -> dict[tuple[str, str], dict[str, Any]]:
    return {("/uploads", "post"): {"required": True, "content": {"application/json": {
        "schema": openapi_schema(UploadBody)}}}}


def register(app: APIGatewayHttpResolver, services: Callable[[], Services]) -> None:
    @app.post("/uploads", **protected(services), tags=["images"],
              summary="A presigned upload (url, method, headers) and the key and id the image will have")
    def create_upload():
        _, body = request_body(app.current_event, services().settings.max_body_bytes)
        upload = json_body(UploadBody, body)
        return json_response(200, services().images.create_upload(
            UploadRequest(filename=upload.filename, content_type=upload.content_type)))

    @app.get("/images/<id>", **protected(services), tags=["images"],
             summary="An indexed image's stored details and a presigned URL")
    def get_image(id: str):
        return json_response(200, services().images.get(id))

    @app.delete("/images/<id>", **protected(services), tags=["images"],
                summary="Move the image to the trash (restorable for IMGSIM_TRASH_DAYS): gone from search at once")
    def delete_image(id: str):
        result = services().trash.delete(id)
        metrics.add_metric(name="ImagesTrashed", unit=MetricUnit.Count, value=1)
        return json_response(200, result)
