"""The route table and the OpenAPI 3.1 document generated from it.

Every endpoint is one :class:`Route`: its method and path, the pydantic models of its query,
body and answer, and the lowest user level allowed. The dispatcher (``api/server.py``) and
the document read the same table, so the served ``/api/openapi.json`` cannot drift from what
the handlers accept.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from onvif_nvr.auth.policy import UserLevel

#: "public": no credentials; otherwise the lowest level the route needs.
Access = UserLevel | None

_PARAM = re.compile(r"\{([a-z_]+)\}")


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    code: str
    message: str
    fields: list[FieldError] = []


class ErrorResponse(BaseModel):
    """Every failure: ``{"error": {"code", "message", "fields"}}``."""

    error: ErrorBody


@dataclasses.dataclass(frozen=True)
class Route:
    method: str
    path: str
    operation_id: str
    summary: str
    handler: Callable[..., Awaitable[Any]]
    access: Access = UserLevel.USER
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    #: None: the answer is not JSON (``media`` says what it is) or there is no body (204).
    response: type[BaseModel] | None = None
    status: int = 200
    media: str = "application/json"
    #: Answers beyond the ones every route of its kind has (see ``_errors``): status -> when.
    errors: tuple[tuple[int, str], ...] = ()

    @property
    def path_params(self) -> list[str]:
        return _PARAM.findall(self.path)


def _errors(route: Route) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/ErrorResponse"}
    content = {"application/json": {"schema": ref}}
    codes: dict[str, str] = {}
    if route.access is not None:
        codes["401"] = "no or wrong credentials"
        codes["403"] = "the user's level does not allow it, or the CSRF token is missing"
        codes["429"] = "too many failed logins from this address"
    if route.query or route.body or route.path_params:
        codes["422"] = "invalid input (see error.fields)"
    if route.path_params or route.query:
        codes["404"] = "no such object (in the path or named by the query)"
    if route.method in ("POST", "PATCH", "PUT", "DELETE") and route.access is not None:
        codes["409"] = (
            "conflicts with the box's state (a name in use, a limit, the last administrator)"
        )
    codes.update((str(status), text) for status, text in route.errors)
    return {code: {"description": text, "content": content} for code, text in codes.items()}


def openapi_document(routes: Sequence[Route], version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` (deterministic: sorted keys, no timestamps)."""
    models: set[type[BaseModel]] = {ErrorResponse}
    for route in routes:
        for model in (route.body, route.response):
            if model is not None:
                models.add(model)
    ordered = sorted(models, key=lambda m: m.__name__)
    refs, top = models_json_schema(
        [(m, "validation") for m in ordered], ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "operationId": route.operation_id,
            "summary": route.summary,
            "tags": [route.path.split("/")[3] if route.path.startswith("/api/v1/") else "meta"],
        }
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in route.path_params
        ]
        if route.query is not None:
            schema = route.query.model_json_schema()
            required = set(schema.get("required", ()))
            for name, prop in schema.get("properties", {}).items():
                prop = dict(prop)
                description = prop.pop("description", None)
                prop.pop("title", None)
                parameter: dict[str, Any] = {
                    "name": name,
                    "in": "query",
                    "required": name in required,
                    "schema": prop,
                }
                if description:
                    parameter["description"] = description
                parameters.append(parameter)
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(route.body, "validation")]}},
            }
        ok: dict[str, Any] = {"description": "OK"}
        if route.response is not None:
            ok["content"] = {"application/json": {"schema": refs[(route.response, "validation")]}}
        elif route.status != 204:
            ok["content"] = {route.media: {"schema": {"type": "string"}}}
        operation["responses"] = {str(route.status): ok, **_errors(route)}
        if route.access is None:
            operation["security"] = []
        else:
            operation["x-min-user-level"] = route.access.value
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "onvif-nvr REST API",
            "version": version,
            "description": "JSON API of the box next to its ONVIF services; see docs/design/api.md.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "nvr_session"},
                "bearer": {"type": "http", "scheme": "bearer"},
                "digest": {"type": "http", "scheme": "digest"},
                "basic": {"type": "http", "scheme": "basic"},
            },
        },
        "security": [{"session": []}, {"bearer": []}, {"digest": []}, {"basic": []}],
    }
