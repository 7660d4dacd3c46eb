"""The served OpenAPI document matches the app: valid OpenAPI 3.0, the same routes, every
status code, closed schemas with their limits, bearer security; the docs page works offline."""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jsonschema_rs
import pytest
import schemathesis
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route

from orders.app import create_app
from orders.settings import Settings
from orders.web.openapi import DOCS_ASSETS_PATH, DOCS_PATH, OPENAPI_PATH

# What each route can answer (docs/api.md, "Errors").
EXPECTED_STATUSES = {
    ("/orders", "get"): {200, 401, 422, 503},
    ("/orders", "post"): {201, 400, 401, 409, 413, 415, 422, 503},
    ("/orders/{order_id}", "get"): {200, 304, 401, 404, 422, 503},
    ("/orders/{order_id}", "put"): {200, 400, 401, 404, 409, 412, 413, 415, 422, 503},
    ("/orders/{order_id}", "delete"): {204, 401, 404, 409, 412, 422, 503},
    ("/orders/{order_id}/pay", "post"): {200, 400, 401, 402, 404, 409, 412, 422, 502, 503, 504},
    ("/orders/{order_id}/cancel", "post"): {200, 400, 401, 404, 409, 412, 422, 502, 503, 504},
    ("/health/live", "get"): {200},
    ("/health/ready", "get"): {200, 503},
}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture
async def document(anonymous: httpx.AsyncClient) -> dict[str, Any]:
    response = await anonymous.get(OPENAPI_PATH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


def app_operations(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(path template, method) of every route the app really serves."""
    for route in routes:
        if isinstance(route, Route):
            for method in route.methods or ():
                if method != "HEAD":
                    yield prefix + route.path, method.lower()
        elif isinstance(route, Mount):
            yield from app_operations(route.routes, prefix + route.path)


def documented_operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        pointer = node["$ref"]
        assert pointer.startswith("#/"), pointer
        target: Any = document
        for part in pointer[2:].split("/"):
            assert part in target, f"dangling $ref {pointer}"
            target = target[part]
        node = target
    return node


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def test_the_document_is_valid_openapi_3_0(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.0.")
    schemathesis.openapi.from_dict(document).validate()


def test_the_validator_would_notice_a_broken_document(document: dict[str, Any]) -> None:
    broken = copy.deepcopy(document)
    broken["paths"]["/orders"]["get"]["responses"]["200"].pop("description")

    with pytest.raises(jsonschema_rs.ValidationError):
        schemathesis.openapi.from_dict(broken).validate()


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    references = [node["$ref"] for node in walk(document) if "$ref" in node]

    assert references
    for reference in references:
        resolve(document, {"$ref": reference})


def test_paths_and_methods_are_the_routes_the_app_serves(
    settings: Settings, document: dict[str, Any]
) -> None:
    app: Starlette = create_app(settings)
    served = set(app_operations(app.routes)) - {(OPENAPI_PATH, "get"), (DOCS_PATH, "get")}
    documented = {(path, method) for path, method, _ in documented_operations(document)}

    assert documented == served
    assert documented == set(EXPECTED_STATUSES)


def test_every_status_code_of_every_route_is_documented(document: dict[str, Any]) -> None:
    for path, method, operation in documented_operations(document):
        statuses = {int(code) for code in operation["responses"]}
        assert statuses == EXPECTED_STATUSES[path, method], (path, method)
        for code, response in operation["responses"].items():
            if int(code) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert set(resolve(document, schema)["required"]) == {"detail"}, (path, code)
            if code == "503":
                assert "Retry-After" in response["headers"], (path, method)
            if code == "401":
                assert "WWW-Authenticate" in response["headers"], (path, method)


def test_order_routes_need_a_bearer_token_and_health_is_open(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes == {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
    assert document["security"] == [{"bearerAuth": []}]
    for path, method, operation in documented_operations(document):
        security = operation.get("security", document["security"])
        if path.startswith("/health/"):
            assert security == [], path
        else:
            assert security == [{"bearerAuth": []}], (path, method)


def test_every_object_schema_is_closed(document: dict[str, Any]) -> None:
    objects = [node for node in walk(document["components"]["schemas"]) if "properties" in node]

    assert len(objects) >= 5
    for schema in objects:
        assert schema.get("additionalProperties") is False, schema.get("title")


def test_the_bodies_carry_their_enums_and_limits(document: dict[str, Any]) -> None:
    place = document["paths"]["/orders"]["post"]
    body = resolve(document, place["requestBody"]["content"]["application/json"]["schema"])
    items = body["properties"]["order"]
    assert (items["minItems"], items["maxItems"]) == (1, 100)
    item = resolve(document, items["items"])
    assert item["properties"]["product"]["minLength"] == 1
    assert resolve(document, item["properties"]["size"])["enum"] == ["small", "medium", "big"]
    quantity = item["properties"]["quantity"]
    assert (quantity["minimum"], quantity["maximum"], quantity["default"]) == (1, 1_000_000, 1)
    assert set(body["required"]) == {"order"}

    order = resolve(
        document,
        document["paths"]["/orders/{order_id}"]["get"]["responses"]["200"]["content"][
            "application/json"
        ]["schema"],
    )
    assert resolve(document, order["properties"]["status"])["enum"] == [
        "created",
        "paid",
        "progress",
        "cancelled",
        "dispatched",
        "delivered",
    ]
    assert order["properties"]["id"]["format"] == "uuid"
    assert order["properties"]["created"]["format"] == "date-time"
    assert set(order["required"]) == {"id", "created", "status", "order"}

    limit = next(
        p for p in document["paths"]["/orders"]["get"]["parameters"] if p["name"] == "limit"
    )
    assert limit["schema"]["minimum"] == 1


@pytest.fixture
async def small_orders_app(
    settings: Settings, collaborators: httpx.AsyncBaseTransport
) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(
        settings.model_copy(update={"max_items_per_order": 3}), transport=collaborators
    )
    async with (
        LifespanManager(application) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://orders.test"
        ) as client,
    ):
        yield client


async def test_the_item_limit_in_the_document_is_the_configured_one(
    small_orders_app: httpx.AsyncClient,
) -> None:
    document = (await small_orders_app.get(OPENAPI_PATH)).json()
    body = document["paths"]["/orders"]["post"]["requestBody"]["content"]["application/json"]
    assert resolve(document, body["schema"])["properties"]["order"]["maxItems"] == 3


async def test_the_docs_page_loads_everything_from_this_service(
    anonymous: httpx.AsyncClient,
) -> None:
    page = await anonymous.get(DOCS_PATH)

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "://" not in page.text
    assert not re.search(r"""(?:src|href)=["']//""", page.text)
    references = re.findall(r"""(?:src|href)=["']([^"']+)""", page.text)
    assert {ref.rsplit("/", 1)[0] for ref in references} == {DOCS_ASSETS_PATH}
    assert f'"{OPENAPI_PATH}"' in page.text
    for reference in references:
        asset = await anonymous.get(reference)
        assert asset.status_code == 200, reference
        assert len(asset.content) > 10_000, reference
    spec = await anonymous.get(OPENAPI_PATH)
    assert spec.status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PATCH", "/orders", {"GET", "HEAD", "POST"}),
        ("OPTIONS", "/orders/{id}", {"GET", "HEAD", "PUT", "DELETE"}),
        ("GET", "/orders/{id}/pay", {"POST"}),
        ("TRACE", "/health/live", {"GET", "HEAD"}),
        ("POST", "/health/ready", {"GET", "HEAD"}),
        ("DELETE", OPENAPI_PATH, {"GET", "HEAD"}),
    ],
)
async def test_an_undocumented_method_is_405_with_every_allowed_method(
    client: httpx.AsyncClient, method: str, path: str, allowed: set[str]
) -> None:
    response = await client.request(method, path.format(id=uuid.uuid4()))

    assert response.status_code == 405
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed
    assert response.json() == {"detail": "Method Not Allowed"}


async def test_an_unknown_path_is_a_json_404(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/nothing/here")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_a_placed_order_links_to_what_can_be_done_with_it(document: dict[str, Any]) -> None:
    created = document["paths"]["/orders"]["post"]["responses"]["201"]
    operation_ids = {
        operation["operationId"]
        for path, _, operation in documented_operations(document)
        if path.startswith("/orders/{order_id}")
    }

    links = created["links"]
    assert {link["operationId"] for link in links.values()} == operation_ids
    for link in links.values():
        assert link["parameters"] == {"order_id": "$response.body#/id"}
