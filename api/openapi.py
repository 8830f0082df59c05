"""The request bodies in the gateway's OpenAPI schema (`/openapi.json`).

The OpenAI routes read their bodies themselves (`api/openai_routes.py`: the JSON is parsed and
validated in a worker thread, with errors in OpenAI's shape), so FastAPI cannot see them. Their
pydantic schemas are added here, so that clients' code generators and the fuzzer in CI
(tests/e2e/test_fuzz.py, schemathesis) know every field, its type and its bounds.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

REF_TEMPLATE = "#/components/schemas/{model}"


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route whose JSON body is `model`."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": REF_TEMPLATE.format(model=model.__name__)}}}}}


def install_request_schemas(app: FastAPI, models: list[type[BaseModel]]) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                body = model.model_json_schema(ref_template=REF_TEMPLATE)
                components.update(body.pop("$defs", {}))
                components[model.__name__] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
