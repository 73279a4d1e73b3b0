"""The search function's resolver: powertools' ``APIGatewayHttpResolver`` with the request's event kept per resolver.

Why: powertools keeps the event being resolved on the class (``BaseRouter.current_event = ...`` in ``resolve``),
shared by every resolver of the process. On Lambda that is harmless (one request at a time per process), but the
local stack runs several SearchFunction execution environments as threads of one process, each with its own resolver
(its own load of functions/search/app.py), as Lambda scales out. With the class attribute, a request read between
another thread's ``resolve`` and its own could take the other request's headers: its API key, so its tenant (a
review reproduced it: a tenant's key answered with another tenant's image 6 times in 200 concurrent requests). Here
``current_event`` and ``lambda_context`` are this resolver's own; powertools' code reads them through ``self``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from aws_lambda_powertools.utilities.typing import LambdaContext


class OwnEventResolver(APIGatewayHttpResolver):
    """One execution environment's resolver; its event and context are its own (see the module's docstring)."""

    @property  # type: ignore[override]  # a per-instance slot where powertools has a class attribute
    def current_event(self) -> APIGatewayProxyEventV2:
        return self.__dict__["_own_event"]  # type: ignore[no-any-return]

    @current_event.setter
    def current_event(self, value: APIGatewayProxyEventV2) -> None:
        self.__dict__["_own_event"] = value

    @property
    def lambda_context(self) -> LambdaContext:
        return self.__dict__["_own_context"]  # type: ignore[no-any-return]

    @lambda_context.setter
    def lambda_context(self, value: LambdaContext) -> None:
        self.__dict__["_own_context"] = value

    def resolve(self, event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
        # Before powertools sets the class-wide ones (which this resolver no longer reads).
        self.current_event = cast(APIGatewayProxyEventV2, self._to_proxy_event(cast("dict[str, Any]", event)))
        self.lambda_context = context
        return super().resolve(event, context)
