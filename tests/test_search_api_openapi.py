"""GET /openapi.json describes exactly the routes the handler serves, and is a valid OpenAPI 3 document."""

from __future__ import annotations

import json
import sys

import pytest
from imgsim_tools.events import http_api_event
from openapi_spec_validator import validate
from support import SEARCH_APP_PATH as APP_PATH
from support import load_module_from_path

PUBLIC = {("/health", "get"), ("/", "get"), ("/openapi.json", "get")}


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
    assert document["components"]["securitySchemes"]["apiKey"] == {"type": "apiKey", "in": "header",
                                                                   "name": "x-api-key"}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if (path, method) in PUBLIC:
                assert "security" not in operation, (path, method)
            else:
                assert operation["security"] == [{"apiKey": []}], (path, method)


def test_document_describes_bodies_and_parameters(document):
    search = document["paths"]["/search"]["post"]
    assert set(search["requestBody"]["content"]) == {"image/*", "multipart/form-data", "application/json"}
    params = {p["name"]: p for p in search["parameters"]}
    assert set(params) == {"limit", "min_score", "prefix", "offset", "min_width", "min_height", "content_type",
                           "indexed_after", "indexed_before", "collapse", "similar_threshold", "box"}
    assert all(p["in"] == "query" for p in params.values())
    assert params["limit"]["schema"]["minimum"] == 1 and params["limit"]["schema"]["maximum"] == 100
    compare = document["paths"]["/compare"]["post"]["requestBody"]["content"]
    assert compare["multipart/form-data"]["schema"]["required"] == ["a", "b"]
    uploads = document["paths"]["/uploads"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert uploads["required"] == ["filename", "content_type"]
    duplicates = {p["name"] for p in document["paths"]["/duplicates"]["get"]["parameters"]}
    assert duplicates == {"threshold", "prefix", "limit", "cursor"}
    resolve = document["paths"]["/duplicates/resolve"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert resolve["required"] == ["keep"] and set(resolve["properties"]) == {"keep", "remove", "not_duplicates"}
    recommend = document["paths"]["/recommend"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(recommend["properties"]) == {"positive", "negative", "limit", "prefix", "similar_threshold"}
    image_params = document["paths"]["/images/{id}"]["get"]["parameters"]
    assert [(p["name"], p["in"]) for p in image_params] == [("id", "path")]
