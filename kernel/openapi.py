"""The OpenAPI 3 document, built from the route tables so it cannot drift from the routes."""

from __future__ import annotations

import re
from typing import Any

from kernel.web import API_PREFIX, ApiRoutes

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}")


def build_openapi(tables: list[ApiRoutes], *, version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
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
                "responses": {
                    str(code): {"description": text}
                    for code, text in ({200: "success"} | info.responses).items()
                },
            }
            if info.streams:
                op["responses"]["200"]["content"] = {media: {} for media in info.streams}
            if not info.policy.public:
                op["security"] = [{"bearer": []}]
                op["responses"].setdefault("401", {"description": "missing or invalid token"})
                op["responses"].setdefault("403", {"description": "not allowed"})
            if info.body is not None:
                schema = info.body.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[info.body.__name__] = schema
                op["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{info.body.__name__}"}}},
                }
                op["responses"].setdefault("400", {"description": "invalid input"})
            paths.setdefault(path, {})[info.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Cairn API", "version": version},
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "responses": {"Error": {"description": "JSON error with a stable code and a message"}},
        },
    }
