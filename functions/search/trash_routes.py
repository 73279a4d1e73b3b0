"""GET /trash, POST /trash/{id}/restore: images deleted through imgsim, restorable for IMGSIM_TRASH_DAYS
(imgsim.services.trash does the work)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.metrics import MetricUnit
from imgsim.access import DELETE, SEARCH
from imgsim.http.auth import principal_of, protected
from imgsim.http.inputs import UUID_FORMAT, UUID_PATTERN
from imgsim.http.responses import json_response
from imgsim.services import Services

if TYPE_CHECKING:
    from imgsim.http import contract as c

metrics = Metrics()

TRASH_LIMIT = Annotated[int, Query(ge=1, le=100, description="Entries per page, 1-100")]
CURSOR = Annotated[str | None, Query(pattern=r"^[0-9]{1,16}$", description="next_cursor of the previous page")]
TRASH_ID = Annotated[str, Path(pattern=UUID_PATTERN, json_schema_extra=UUID_FORMAT,
                               description="The trash entry's id (GET /trash: items[].id)")]


def contract() -> dict[tuple[str, str], c.Operation]:
    # Imported here: only GET /openapi.json needs them (~20 ms of a cold start otherwise).
    from imgsim.http import contract as c
    from imgsim.http.outputs import Restored, TrashPage

    return {
        ("/trash", "get"): c.Operation(ok=TrashPage, errors=(*c.STORE, *c.S3)),
        ("/trash/{id}/restore", "post"): c.Operation(ok=Restored, errors=(*c.RESTORE, *c.STORE, *c.S3)),
    }


def register(app: APIGatewayHttpResolver, services: Callable[[], Services]) -> None:
    def callers() -> Services:
        """The services as the caller's tenant sees them (imgsim.services.Services.for_tenant)."""
        return services().for_tenant(principal_of(app).tenant)

    @app.get("/trash", **protected(services, SEARCH), tags=["trash"],
             summary="Images deleted through imgsim, newest first, with when they go for good; paged by cursor")
    def list_trash(limit: TRASH_LIMIT = 50, cursor: CURSOR = None):
        return json_response(200, callers().trash.list(limit=limit, cursor=cursor))

    @app.post("/trash/<id>/restore", **protected(services, DELETE), tags=["trash"],
              summary="Bring a trashed image back: its object, its point and its duplicate links")
    def restore_from_trash(id: TRASH_ID):
        result = callers().trash.restore(id)
        metrics.add_metric(name="ImagesRestored", unit=MetricUnit.Count, value=1)
        return json_response(200, result)
