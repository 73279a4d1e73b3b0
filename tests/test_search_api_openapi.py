"""GET /openapi.json describes exactly the routes the handler serves, and is a valid OpenAPI 3 document: every body,
parameter, answer, error code, content type and security requirement. (tests/test_search_api_fuzz.py checks the
API's real answers against it.)"""

from __future__ import annotations

import json
import sys

import imgsim.http.errors as http_errors
import pytest
from imgsim import errors
from imgsim.access import hash_key
from imgsim.errors import ImgsimError
from imgsim.http.errors import STATUS, status_of
from imgsim_tools.events import http_api_event
from openapi_spec_validator import validate
from roots import make_root
from support import SEARCH_APP_PATH as APP_PATH
from support import load_module_from_path

PUBLIC = {("/health", "get"), ("/", "get"), ("/openapi.json", "get")}
# The scope each protected route needs (None: any valid credential), as the issue that introduced scopes lists them.
SCOPE = {
    ("/search", "post"): "search", ("/compare", "post"): "search", ("/recommend", "post"): "search",
    ("/images/{id}", "get"): "search", ("/duplicates", "get"): "search", ("/trash", "get"): "search",
    ("/uploads", "post"): "upload",
    ("/images/{id}", "delete"): "delete", ("/duplicates/resolve", "post"): "delete",
    ("/trash/{id}/restore", "post"): "delete",
    ("/me", "get"): None,
}
ERROR_STATUSES = {"400", "401", "403", "404", "409", "413", "415", "429", "431", "500", "502", "503"}


@pytest.fixture(scope="module")
def search_app():
    # Importing the handler touches neither the model nor Qdrant nor AWS: everything is created on first use.
    module = load_module_from_path("imgsim_search_app_openapi", APP_PATH, register=True)
    yield module
    sys.modules.pop(module.__name__, None)


@pytest.fixture(scope="module")
def document(search_app):
    response = search_app.app.resolve(http_api_event("GET", "/openapi.json"), {})
    assert response["statusCode"] == 200
    assert response["headers"]["Content-Type"] == "application/json"
    return json.loads(response["body"])


def served_routes(app) -> set[tuple[str, str]]:
    routes = app._static_routes + app._dynamic_routes  # powertools keeps no public route list
    return {(route.openapi_path, route.method.lower()) for route in routes}


def test_document_is_valid_openapi_3(document):
    assert document["openapi"].startswith("3.")
    validate(document)


def test_document_lists_exactly_the_served_routes(search_app, document):
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == served_routes(search_app.app)
    assert documented >= {("/search", "post"), ("/compare", "post"), ("/uploads", "post"),
                          ("/images/{id}", "get"), ("/images/{id}", "delete")} | PUBLIC


def test_document_marks_which_routes_need_the_api_key(document):
    schemes = document["components"]["securitySchemes"]
    assert schemes["apiKey"] == {"type": "apiKey", "in": "header", "name": "x-api-key"}
    assert {name: value for name, value in schemes["token"].items() if name != "description"} == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert "TokenApiUrl" in schemes["token"]["description"]  # where a token is accepted: the token API only
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if (path, method) in PUBLIC:
                assert "security" not in operation, (path, method)
            else:
                scope = SCOPE[(path, method)]
                # Alternatives: a key with the scope, or a token with imgsim/<scope>.
                assert operation["security"] == [{"apiKey": [scope] if scope else []},
                                                 {"token": [f"imgsim/{scope}"] if scope else []}], (path, method)
                assert (f"`{scope}` scope (a token: `imgsim/{scope}`)" if scope else "any valid API key or token") \
                    in operation["description"]


def resolve(document, schema):
    """A schema with its top-level $ref followed."""
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def operations(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def declared_codes(document, operation, status: int) -> set[str]:
    """The error codes an operation declares for a status (empty: the status is not declared)."""
    response = operation["responses"].get(str(status))
    if response is None:
        return set()
    codes: set[str] = set()

    def walk(schema):
        if isinstance(schema, dict):
            code = schema.get("properties", {}).get("error", {}).get("properties", {}).get("code", {})
            codes.update(code.get("enum", ()))
            for value in schema.values():
                walk(value)
        elif isinstance(schema, list):
            for value in schema:
                walk(value)

    walk(response["content"]["application/json"]["schema"])
    return codes


def test_document_describes_bodies_and_parameters(document):
    search = document["paths"]["/search"]["post"]
    assert set(search["requestBody"]["content"]) == {"image/*", "application/octet-stream", "multipart/form-data",
                                                     "application/json"}
    assert search["requestBody"]["content"]["multipart/form-data"]["encoding"] == {"image": {"contentType": "image/*"}}
    params = {p["name"]: p for p in search["parameters"]}
    assert set(params) == {"limit", "min_score", "prefix", "offset", "min_width", "min_height", "content_type",
                           "indexed_after", "indexed_before", "collapse", "similar_threshold", "box"}
    assert all(p["in"] == "query" for p in params.values())
    assert params["limit"]["schema"]["minimum"] == 1 and params["limit"]["schema"]["maximum"] == 100
    # RFC 3339 time or date, as the handler takes them.
    for name in ("indexed_after", "indexed_before"):
        assert {"type": "string", "format": "date-time"} in params[name]["schema"]["anyOf"]
        assert {"type": "string", "format": "date"} in params[name]["schema"]["anyOf"]
    search_json = resolve(document, search["requestBody"]["content"]["application/json"]["schema"])
    assert [branch["required"] for branch in search_json["oneOf"]] == [["image"], ["id"], ["key"]]
    compare = document["paths"]["/compare"]["post"]["requestBody"]["content"]
    assert compare["multipart/form-data"]["schema"]["required"] == ["a", "b"]
    assert resolve(document, compare["application/json"]["schema"])["required"] == ["a", "b"]
    uploads = resolve(document, document["paths"]["/uploads"]["post"]["requestBody"]["content"]["application/json"][
        "schema"])
    assert uploads["required"] == ["filename", "content_type"]
    assert "image/jpeg" in uploads["properties"]["content_type"]["enum"]
    duplicates = {p["name"]: p for p in document["paths"]["/duplicates"]["get"]["parameters"]}
    assert set(duplicates) == {"threshold", "prefix", "limit", "cursor"}
    resolve_body = resolve(document, document["paths"]["/duplicates/resolve"]["post"]["requestBody"]["content"][
        "application/json"]["schema"])
    assert resolve_body["required"] == ["keep"] and set(resolve_body["properties"]) == {"keep", "remove",
                                                                                       "not_duplicates"}
    assert resolve_body["properties"]["keep"]["format"] == "uuid"
    assert resolve_body["properties"]["remove"]["items"]["format"] == "uuid"
    recommend = resolve(document, document["paths"]["/recommend"]["post"]["requestBody"]["content"][
        "application/json"]["schema"])
    assert set(recommend["properties"]) == {"positive", "negative", "limit", "prefix", "similar_threshold"}
    assert recommend["required"] == ["positive"]


def test_ids_are_uuids(document):
    """Every id in a path or a cursor of ids is a UUID, so a schema-valid value is never refused as malformed."""
    for path in ("/images/{id}", "/trash/{id}/restore"):
        for operation in document["paths"][path].values():
            (param,) = operation["parameters"]
            assert (param["name"], param["in"], param["required"]) == ("id", "path", True)
            assert param["schema"]["format"] == "uuid" and param["schema"]["pattern"].startswith("^[0-9a-fA-F]{8}-")
    cursor = {p["name"]: p for p in document["paths"]["/duplicates"]["get"]["parameters"]}["cursor"]
    assert {"type": "string", "format": "uuid"}.items() <= cursor["schema"]["anyOf"][0].items()


def test_every_route_declares_its_answers(document):
    for path, method, operation in operations(document):
        responses = operation["responses"]
        assert "422" not in responses, (path, method)  # powertools' default; this API answers 400
        ok = responses["200"]["content"]
        assert ok and all(media.get("schema") for media in ok.values()), (path, method)
        for status, response in responses.items():
            assert response["description"] and response.get("content"), (path, method, status)
        assert declared_codes(document, operation, 500) == {"internal_error"}, (path, method)
        assert {"429", "431"} <= set(responses), (path, method)  # API Gateway's throttling and header limit
        if operation.get("parameters"):
            assert "bad_parameter" in declared_codes(document, operation, 400), (path, method)
        if "requestBody" in operation:
            assert {"body_too_large"} <= declared_codes(document, operation, 413), (path, method)
            assert {"empty_body", "bad_body"} <= declared_codes(document, operation, 400), (path, method)
    assert set(document["paths"]["/"]["get"]["responses"]["200"]["content"]) == {"text/html"}
    assert set(document["paths"]["/openapi.json"]["get"]["responses"]["200"]["content"]) == {"application/json"}


def test_protected_routes_declare_the_key_and_its_errors(document):
    for path, method, operation in operations(document):
        if (path, method) in PUBLIC:
            assert "security" not in operation and "401" not in operation["responses"], (path, method)
            continue
        assert declared_codes(document, operation, 401) == {"missing_api_key", "invalid_api_key"}, (path, method)
        # ... or the token API's JWT authorizer's own {"message": "Unauthorized"}
        gateway = {"$ref": "#/components/schemas/GatewayMessage"}
        assert gateway in operation["responses"]["401"]["content"]["application/json"]["schema"]["anyOf"]
        # A token without the tenant claim (IMGSIM_TENANT_CLAIM) is refused on every protected route.
        expected_403 = {"missing_scope", "missing_tenant"} if SCOPE[(path, method)] else {"missing_tenant"}
        assert declared_codes(document, operation, 403) == expected_403, (path, method)
        assert {"not_configured", "auth_unavailable"} <= declared_codes(document, operation, 503), (path, method)
        assert "Retry-After" in operation["responses"]["503"]["headers"], (path, method)


# Classes that name a kind of error and are never raised themselves (their subclasses are).
CATEGORIES = {errors.Conflict, errors.Unavailable, errors.TooCostly, errors.ImageError, http_errors.Unauthenticated,
              http_errors.Forbidden}


def raised_errors() -> set[type[ImgsimError]]:
    """Every error class imgsim can raise that the table maps to a status (categories and faults aside)."""
    found: set[type[ImgsimError]] = set()
    pending: list[type[ImgsimError]] = [ImgsimError]
    while pending:
        for sub in pending.pop().__subclasses__():
            if sub.__module__.startswith("imgsim.") and sub not in found:
                found.add(sub)
                pending.append(sub)
    return {error for error in found if status_of(error) is not None} - CATEGORIES


def test_every_error_the_api_raises_is_documented_with_its_status(document):
    """Each code is declared by some route, with the status of imgsim.http.errors.STATUS (the document is derived
    from the table, so a new error class must be named by the routes that raise it, or this fails)."""
    declared: dict[str, set[str]] = {}
    for _, _, operation in operations(document):
        for status in operation["responses"]:
            if status != "200":
                for code in declared_codes(document, operation, int(status)):
                    declared.setdefault(code, set()).add(status)
    for error in raised_errors():
        assert declared.get(error.code) == {str(int(status_of(error)))}, (error.__name__, declared.get(error.code))
    assert not {code for code in declared} - {error.code for error in raised_errors()}, "a code nothing raises"
    statuses = {status for _, _, operation in operations(document) for status in operation["responses"]}
    assert statuses - {"200"} == ERROR_STATUSES


def test_document_carries_no_unknown_schema_keywords(document):
    """pydantic writes constraints it cannot place as "ge"/"le" (no JSON Schema meaning): none may be left."""
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            found.extend(f"{where}/{key}" for key in ("ge", "le", "gt", "lt") if key in node and "type" in node)
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}/{i}")

    walk(document, "")
    assert not found


@pytest.fixture
def answer(search_app, tmp_path):
    """Call a route on a root built from ``variables`` (no store or model is touched: auth refuses first)."""
    roots = []

    def call(variables, method, path, *, headers=None, body=None):
        root = make_root(tmp_path / str(len(roots)), variables)
        roots.append(root)
        search_app.use_root(root)
        event = http_api_event(method, path, headers=headers or {}, body=body)
        response = search_app.app.resolve(event, {})
        return response["statusCode"], json.loads(response["body"])

    yield call
    for root in roots:
        root.close()


def entry(name: str, key: str, scopes: list[str], tenant: str | None = None) -> dict:
    return {"name": name, "sha256": hash_key(key), "scopes": scopes, **({"tenant": tenant} if tenant else {})}


def ring_of(*entries: dict) -> dict[str, str]:
    return {"IMGSIM_API_KEYS": json.dumps({"keys": list(entries)})}


def test_routes_answer_only_declared_codes(document, answer):
    """The key's refusals and a malformed id, on every protected route: each answer is one the route declares."""
    sample_id = "not-a-uuid"
    for path, method, operation in operations(document):
        if (path, method) in PUBLIC:
            continue
        url = path.replace("{id}", "0b7e1a52-9c1f-5d0e-8d7a-3f2b6c4e9a10")
        for variables, headers, expected in (
            ({}, {"x-api-key": "k"}, (503, "not_configured")),
            ({"IMGSIM_API_KEY": "k"}, {}, (401, "missing_api_key")),
            ({"IMGSIM_API_KEY": "k"}, {"x-api-key": "wrong"}, (401, "invalid_api_key")),
            *((ring_of(entry("narrow", "k-narrow", [other])), {"x-api-key": "k-narrow"}, (403, "missing_scope"))
               for other in ("search", "upload", "delete") if SCOPE[(path, method)] not in (None, other)),
        ):
            status, body = answer(variables, method.upper(), url, headers=headers)
            assert (status, body["error"]["code"]) == expected, (path, method, body)
            assert body["error"]["code"] in declared_codes(document, operation, status), (path, method, status)
            if status == 403:
                assert f"'{SCOPE[(path, method)]}' scope" in body["error"]["message"], body
        if "{id}" in path:
            status, body = answer({"IMGSIM_API_KEY": "k"}, method.upper(), path.replace("{id}", sample_id),
                                  headers={"x-api-key": "k"})
            assert (status, body["error"]["code"]) == (400, "bad_parameter"), (path, method, body)
    status, body = answer({}, "PATCH", "/search")  # a method the path lacks: 404, as API Gateway answers
    assert (status, body["error"]["code"]) == (404, "not_found")


def test_every_error_class_the_table_maps_has_a_code():
    for error in STATUS:
        assert issubclass(error, ImgsimError) and isinstance(getattr(error, "code", None), str), error
