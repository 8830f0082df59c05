"""The one place where errors become HTTP responses, in OpenAI's error shape:
`{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from splitmind.errors import (
    ContextLengthError,
    InvalidRequestError,
    ModelNotFoundError,
    NoWorkerError,
    OverloadedError,
    PrepareTimeoutError,
    RequestTooLargeError,
    SplitmindError,
    UnsupportedParameterError,
    WorkerError,
    WorkerRejectedError,
    WorkerTimeoutError,
)

logger = logging.getLogger(__name__)


def error_body(message: str, type_: str, param: str | None = None, code: str | int | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def status_and_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    if isinstance(exc, ContextLengthError):
        return 400, error_body(str(exc), "invalid_request_error", exc.param, "context_length_exceeded")
    if isinstance(exc, RequestTooLargeError):
        return 413, error_body(str(exc), "invalid_request_error", None, "request_too_large")
    if isinstance(exc, UnsupportedParameterError):
        return 400, error_body(str(exc), "invalid_request_error", exc.param, "unsupported_parameter")
    if isinstance(exc, InvalidRequestError):
        return 400, error_body(str(exc), "invalid_request_error", exc.param, exc.code)
    if isinstance(exc, ModelNotFoundError):
        return 404, error_body(str(exc), "invalid_request_error", "model", "model_not_found")
    if isinstance(exc, WorkerRejectedError):
        return 400, error_body(str(exc), "invalid_request_error", None, None)
    if isinstance(exc, OverloadedError):
        return 429, error_body(str(exc), "rate_limit_error", None, "overloaded")
    if isinstance(exc, NoWorkerError):
        return 503, error_body(str(exc), "service_unavailable", None, "no_worker")
    if isinstance(exc, PrepareTimeoutError):
        return 503, error_body(str(exc), "service_unavailable", None, "prepare_timeout")
    if isinstance(exc, WorkerTimeoutError):
        return 504, error_body(str(exc), "timeout", None, "worker_timeout")
    if isinstance(exc, WorkerError):
        return 502, error_body(str(exc), "worker_error", None, "worker_error")
    if isinstance(exc, SplitmindError):
        return 500, error_body(str(exc), "internal_error", None, None)
    logger.exception("unhandled error", exc_info=exc)
    return 500, error_body("internal error", "internal_error", None, None)


def validation_message(exc: ValidationError | RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        return "request body is not valid JSON", None
    if first.get("type") == "extra_forbidden":
        return f"unrecognized request argument: {param}", param
    msg = first.get("msg", "invalid value")
    return (f"{param}: {msg}" if param else msg), param


async def handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError | RequestValidationError)
    # A model_validator's own error types (UnsupportedParameterError) arrive wrapped in pydantic's.
    for err in exc.errors():
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, SplitmindError):
            return await handle_splitmind_error(request, inner)
    message, param = validation_message(exc)
    return JSONResponse(error_body(message, "invalid_request_error", param, None), status_code=400)


async def handle_splitmind_error(request: Request, exc: Exception) -> JSONResponse:
    status, body = status_and_body(exc)
    headers = {"retry-after": str(exc.retry_after_s)} if isinstance(exc, OverloadedError) else None
    return JSONResponse(body, status_code=status, headers=headers)


HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def handle_http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own refusals (an unknown path, a method the path does not take) in OpenAI's
    shape instead of `{"detail": ...}`, keeping their headers (`Allow` on a 405)."""
    assert isinstance(exc, StarletteHTTPException)
    body = error_body(str(exc.detail), "invalid_request_error", None, HTTP_CODES.get(exc.status_code))
    return JSONResponse(body, status_code=exc.status_code, headers=dict(exc.headers or {}))


async def handle_json_error(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(error_body("request body is not valid JSON", "invalid_request_error"), status_code=400)


def sse_error_data(exc: BaseException) -> str:
    """An error after the stream started: one `data:` event with the error body."""
    _, body = status_and_body(exc)
    return json.dumps(body)
