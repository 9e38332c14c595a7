"""The OpenAPI document is generated from the route table and the models."""

from __future__ import annotations

from master.api.openapi import openapi_document
from master.api.routes import ROUTES
from tasks.spec import job_json_schema
from tests.unit.api.conftest import Api


async def test_served_document_lists_every_route(api: Api) -> None:
    async with api.http.get(api.at("/api/v1/openapi.json")) as r:
        assert r.status == 200
        doc = await r.json()
    assert doc["openapi"].startswith("3.1")
    for route in ROUTES:
        operation = doc["paths"][route.path][route.method.lower()]
        assert str(route.status) in operation["responses"]


def test_job_body_is_the_validating_model() -> None:
    doc = openapi_document()
    schemas = doc["components"]["schemas"]
    body = doc["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]
    assert body["application/yaml"]["schema"] == {"$ref": "#/components/schemas/JobSpec"}
    assert set(schemas["JobSpec"]["properties"]) == set(job_json_schema()["properties"])
    assert "additionalProperties" in schemas["Source"]  # extra="forbid" shows


def test_every_ref_resolves() -> None:
    doc = openapi_document()
    schemas = doc["components"]["schemas"]
    refs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref" or (key == "mapping" and isinstance(value, dict)):
                    refs.extend([value] if isinstance(value, str) else value.values())
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(doc)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    assert schemas["TaskView"]["properties"]["history"]["items"] == {
        "$ref": "#/components/schemas/TaskEvent"}
