"""The OpenAPI 3 document, built from the route tables so it cannot drift from the routes.

Every error answer carries `ErrorBody` (declared codes and `default`); a route's success answer
carries its `response=` model (a JSON object when it names none), so schema checks on answers mean something.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from kernel.api_prefix import API_PREFIX
from kernel.bounds import MAX_BULK_ITEMS, MAX_JSON_DEPTH
from kernel.responses import ErrorBody, JsonObject
from kernel.web import ApiRoutes, RouteInfo

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}")
_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}

DESCRIPTION = (
    f"Limits: integers are signed 64-bit; JSON bodies nest at most {MAX_JSON_DEPTH} levels; bulk reads "
    f"(/files/lookup, /replicas/resolve) take at most {MAX_BULK_ITEMS} LFNs per call (400 above). "
    "Every error is a JSON ErrorBody with a stable code."
)


def _schema_ref(model: type[BaseModel], schemas: dict[str, Any], mode: str) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)  # type: ignore[arg-type]
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _responses(info: RouteInfo, schemas: dict[str, Any]) -> dict[str, Any]:
    codes = {info.status: "success"} | info.responses
    if not info.policy.public:
        codes.setdefault(401, "missing or invalid token")
        codes.setdefault(403, "not allowed")
    if info.body is not None:
        codes.setdefault(400, "invalid input")
    out: dict[str, Any] = {}
    for code, text in codes.items():
        entry: dict[str, Any] = {"description": text}
        if code >= 400:
            entry["content"] = {"application/json": {"schema": _ERROR_REF}}
        elif code == info.status and info.streams:
            entry["content"] = {media: {} for media in info.streams}
        elif code == info.status:
            model = info.response or JsonObject
            entry["content"] = {"application/json": {"schema": _schema_ref(model, schemas, "serialization")}}
        out[str(code)] = entry
    out["default"] = {"description": "an error (see its code)", "content": {"application/json": {"schema": _ERROR_REF}}}
    return out


def build_openapi(tables: list[ApiRoutes], *, version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"ErrorBody": ErrorBody.model_json_schema()}
    for table in tables:
        for info in table.routes:
            path = API_PREFIX + _PARAM.sub(lambda m: "{" + m.group(1) + "}", info.path)
            params: list[dict[str, Any]] = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in _PARAM.findall(info.path)
            ]
            params += [
                {"name": name, "in": "query", "required": False, "description": text, "schema": {"type": "string"}}
                for name, text in info.query.items()
            ]
            op: dict[str, Any] = {
                "summary": info.summary,
                "tags": [info.tag],
                "operationId": f"{info.tag}_{info.handler.__name__}",
                "x-cairn-policy": info.policy.describe(),
                "parameters": params,
                "responses": _responses(info, schemas),
            }
            if not info.policy.public:
                op["security"] = [{"bearer": []}]
            if info.body is not None:
                op["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": _schema_ref(info.body, schemas, "validation")}},
                }
            paths.setdefault(path, {})[info.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Cairn API", "version": version, "description": DESCRIPTION},
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
