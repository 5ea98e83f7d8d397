"""The OpenAPI document is well-formed and describes every route the app serves."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from bridge.api.openapi import API_PROBLEM_TYPES

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/")
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_document_is_openapi_31_shaped(client: FlaskClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document = response.get_json()

    assert document["openapi"].startswith("3.1.")
    assert document["info"]["title"] and document["info"]["version"]
    assert document["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
    }
    for ref in refs(document):
        resolve(document, ref)
    for path, item in document["paths"].items():
        assert path.startswith("/")
        for method, operation in item.items():
            assert method in HTTP_METHODS
            assert operation["responses"], f"{method} {path} lists no responses"
            for code in operation["responses"]:
                assert re.fullmatch(r"[1-5]\d\d", code)


def test_every_served_route_and_method_is_documented(app: Flask, client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    served = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in {"HEAD", "OPTIONS"}
    }
    documented = {(path, m) for path, item in document["paths"].items() for m in item}

    assert served == documented


def test_send_operation_documents_statuses_headers_and_limits(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    post = document["paths"]["/messages"]["post"]

    assert {"202", "400", "401", "403", "409", "413", "415", "422", "503"} <= set(post["responses"])
    assert "Location" in post["responses"]["202"]["headers"]
    assert post["parameters"][0]["name"] == "Idempotency-Key"
    request = document["components"]["schemas"]["SendMessageRequest"]
    assert request["additionalProperties"] is False
    assert request["properties"]["text"]["maxLength"] == 1000
    assert set(request["properties"]) == {
        "to", "conversation", "text", "html", "markdown", "subject", "importance", "validity",
        "send_at", "from",
    }  # fmt: skip
    problem_type = document["components"]["schemas"]["Problem"]["properties"]["type"]
    assert "enum" not in problem_type  # open: clients must accept types added later
    problem_types = problem_type["examples"]
    assert problem_types == [t.uri for t in API_PROBLEM_TYPES]
    assert len(set(problem_types)) == len(problem_types)


def test_the_document_passes_openapi_spec_validator(client: FlaskClient) -> None:
    from openapi_spec_validator import validate

    validate(client.get("/openapi.json").get_json())


def test_every_operation_has_a_unique_operation_id_and_a_tag(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    operations = [
        op
        for item in [*document["paths"].values(), *document["webhooks"].values()]
        for method, op in item.items()
        if method in HTTP_METHODS
    ]
    ids = [op.get("operationId") for op in operations]
    assert all(ids) and len(set(ids)) == len(ids), ids
    assert all(op.get("tags") for op in operations)


def test_the_webhooks_section_publishes_every_event_with_its_body(client: FlaskClient) -> None:
    from bridge.webhooks.events import EventType

    document = client.get("/openapi.json").get_json()
    assert set(document["webhooks"]) == {t.value for t in EventType}
    for event_type, item in document["webhooks"].items():
        schema = item["post"]["requestBody"]["content"]["application/json"]["schema"]
        body = resolve(document, schema["$ref"])
        assert body["properties"]["type"]["const"] == event_type
        assert resolve(document, body["properties"]["data"]["$ref"])["properties"]


def test_the_document_is_the_same_for_every_deployment(
    make_settings: Any, redis_client: Any, monkeypatch: Any
) -> None:
    from bridge.api import create_app

    plain = create_app(make_settings(), redis_client).test_client().get("/openapi.json")
    monkeypatch.setenv(
        "BRIDGE_WEBHOOKS",
        '[{"id": "ops-team", "url": "https://hooks.example.com/in", "secrets": ["whsec_'
        + "A" * 32
        + '"]}]',
    )
    with_endpoints = create_app(make_settings(), redis_client).test_client().get("/openapi.json")
    # No deployment's endpoint ids (or anything else) in it: generated clients stay portable.
    assert with_endpoints.get_json() == plain.get_json()
    assert "ops-team" not in with_endpoints.get_data(as_text=True)
