"""The OpenAPI 3.1 document, generated from the models that validate and answer requests.

The job body's schema is `tasks.spec.job_json_schema()` (the model `parse_job_spec` validates
with); response schemas come from the view dataclasses of master/api/ports.py through pydantic's
TypeAdapter; paths, methods and statuses come from the route table. Nothing is written by hand
but prose.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from pydantic import TypeAdapter

from master.api.auth import Access, required_access
from master.api.routes import ROUTES, Route
from tasks.spec import job_json_schema

OPENAPI_PATH = "/api/v1/openapi.json"
_REF = "#/components/schemas/{model}"
_PARAM = re.compile(r"{(\w+)}")

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "a stable code: invalid, not_found, ..."},
        "message": {"type": "string", "description": "what went wrong, for a human"},
        "details": {"type": "object", "description": "e.g. field and problems for invalid"},
    },
}


def _rehome_refs(node: Any) -> Any:
    """`#/$defs/X` (a standalone JSON schema) -> `#/components/schemas/X` (this document), in
    `$ref`s and in discriminator mappings alike."""
    if isinstance(node, dict):
        return {key: _rehome_refs(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_rehome_refs(item) for item in node]
    if isinstance(node, str) and node.startswith("#/$defs/"):
        return _REF.format(model=node.removeprefix("#/$defs/"))
    return node


def _add_schemas(schemas: dict[str, Any], new: dict[str, Any]) -> None:
    for name, schema in new.items():
        if name in schemas and schemas[name] != schema:
            raise ValueError(f"two different schemas are both named {name!r}")
        schemas[name] = schema


def _response_key(route: Route) -> str:
    return f"{route.method} {route.path}"


def _error_responses(route: Route) -> dict[str, Any]:
    ref = {"description": "error", "content": {"application/json": {
        "schema": {"$ref": _REF.format(model="Error")}}}}
    out: dict[str, Any] = {"500": ref}
    access = required_access(route.method, route.path)
    if access is not Access.OPEN:
        out["401"] = ref
        out["404"] = ref
    if access is Access.ADMIN:
        out["403"] = ref
        out["409"] = ref
        out["503"] = ref
    if route.job_body:
        out["400"] = ref
        out["413"] = ref
        out["415"] = ref
    if route.query:
        out["400"] = ref
    return out


def _operation(route: Route, response_refs: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": route.summary, "tags": [route.tag],
                          "operationId": route.handler.__name__}
    params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
              for name in _PARAM.findall(route.path)]
    params += [{"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
               for name in route.query]
    if params:
        op["parameters"] = params
    if route.job_body:
        schema = {"$ref": _REF.format(model="JobSpec")}
        op["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": schema}, "application/yaml": {"schema": schema}}}
    ok: dict[str, Any] = {"description": route.summary}
    if route.response is not None:
        ok["content"] = {"application/json": {"schema": response_refs[_response_key(route)]}}
    op["responses"] = {str(route.status): ok, **_error_responses(route)}
    if required_access(route.method, route.path) is Access.OPEN:
        op["security"] = []
    return op


@cache
def openapi_document() -> dict[str, Any]:
    typed = [r for r in ROUTES if r.response is not None]
    refs, defs = TypeAdapter.json_schemas(
        [(_response_key(r), "serialization", TypeAdapter(r.response)) for r in typed],
        ref_template=_REF,
    )
    response_refs = {key: schema for (key, _mode), schema in refs.items()}
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    job = job_json_schema()
    _add_schemas(schemas, _rehome_refs(job.pop("$defs", {})))
    _add_schemas(schemas, {"JobSpec": _rehome_refs(job)})
    schemas["Error"] = _ERROR_SCHEMA
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, response_refs)
    paths[OPENAPI_PATH] = {"get": {
        "summary": "This document", "tags": ["process"], "operationId": "openapi",
        "security": [], "responses": {"200": {"description": "OpenAPI 3.1 document",
                                             "content": {"application/json": {}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "exportd master API", "version": "1",
                 "description": "Jobs, tasks, servers and placement of an exportd cluster. "
                                "Every error answers {error, message, details?}."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "read tokens may GET; admin tokens may do everything"}},
        },
        "security": [{"bearer": []}],
    }

