"""Tenants in S3: an object under ``tenants/<tenant>/`` is that tenant's image; any other object is no tenant's.

The folder is the one source of a point's tenant: the indexer reads it from the key (an object put by the API's
presigned upload, the console or ``aws s3 cp`` alike), stores it in the point's payload (``imgsim.store``'s
``TENANT_FIELD``, indexed with ``is_tenant``), and the API shows a caller only its own tenant's points
(``imgsim.store.scoped``). A key directly under ``tenants/``, or in a folder that is no valid tenant name
(``imgsim.access.TENANT_PATTERN``), belongs to nobody: the indexer skips it with a reason rather than guess.
"""

from __future__ import annotations

import re

from .access import TENANT_PATTERN

TENANTS_PREFIX = "tenants/"
NOT_IN_A_TENANT = "not_in_a_tenant"  # directly under tenants/, or an empty name after the tenant's folder
INVALID_TENANT = "invalid_tenant"  # the folder is no valid tenant name
_TENANT = re.compile(TENANT_PATTERN)


def tenant_problem(key: str) -> str | None:
    """Why an S3 key under ``tenants/`` is in no tenant (the indexer's skip reason); None when it is fine (in a
    valid tenant, or outside ``tenants/``)."""
    if not key.startswith(TENANTS_PREFIX):
        return None
    tenant, slash, rest = key[len(TENANTS_PREFIX):].partition("/")
    if not slash or not tenant or not rest:
        return NOT_IN_A_TENANT
    if not _TENANT.match(tenant):
        return INVALID_TENANT
    return None


def tenant_of(key: str) -> str | None:
    """The tenant of an S3 key: ``T`` for ``tenants/T/<rest>``; None outside ``tenants/`` (and for the keys
    ``tenant_problem`` refuses)."""
    if not key.startswith(TENANTS_PREFIX) or tenant_problem(key) is not None:
        return None
    return key[len(TENANTS_PREFIX):].split("/", 1)[0]


def tenant_key(tenant: str | None, rest: str) -> str:
    """Where a tenant's object goes: ``tenants/<tenant>/<rest>`` (None: ``rest`` itself, no tenant)."""
    return f"{TENANTS_PREFIX}{tenant}/{rest}" if tenant is not None else rest


__all__ = ["INVALID_TENANT", "NOT_IN_A_TENANT", "TENANTS_PREFIX", "tenant_key", "tenant_of", "tenant_problem"]
