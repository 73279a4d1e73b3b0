"""GET /me: the caller's name, tenant and scopes, as the API sees its credential, and how many images it sees (the
page asks it first; the public /health shows no count)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from imgsim.access import SCOPES
from imgsim.http.auth import principal_of, protected
from imgsim.http.responses import json_response
from imgsim.services import Services

if TYPE_CHECKING:
    from imgsim.http import contract as c


def contract() -> dict[tuple[str, str], c.Operation]:
    from imgsim.http import contract as c
    from imgsim.http.outputs import Caller

    return {("/me", "get"): c.Operation(ok=Caller)}


def register(app: APIGatewayHttpResolver, services: Callable[[], Services]) -> None:
    @app.get("/me", **protected(services, None), tags=["meta"],
             summary="Who this credential is: its name, tenant, scopes, the upload size limit and how many images it sees")
    def me():
        principal = principal_of(app)
        return json_response(200, {
            "name": principal.name, "tenant": principal.tenant,
            "scopes": [scope for scope in SCOPES if principal.allows(scope)], "via": principal.via,
            "max_upload_bytes": services().settings.max_upload_bytes,
            "images": services().for_tenant(principal.tenant).search.visible_images(),
        })
