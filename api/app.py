"""The gateway's FastAPI app: OpenAI routes, ops endpoints, the chat page, error mapping, response
headers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from api.auth import Keys
from api.edge import Edge
from api.errors import handle_http_error, handle_splitmind_error, handle_validation_error
from api.openai_routes import router as openai_router
from api.openapi import install_request_schemas
from api.schemas import ChatCompletionRequest, CompletionRequest
from api.state import GatewayState
from api.ui import install_chat_page
from splitmind.config import GatewayConfig
from splitmind.errors import SplitmindError
from splitmind.protocol import Role

logger = logging.getLogger(__name__)


def create_app(config: GatewayConfig, keys: Keys | None = None) -> FastAPI:
    """The gateway app; `keys` None: every endpoint open (tests, a local `splitmind up`)."""
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = GatewayState.build(config)
        app.state.gateway = state
        state.registry.start()
        try:
            yield
        finally:
            await state.registry.close()
            state.prepare_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="splitmind", lifespan=lifespan)
    app.include_router(openai_router)
    install_request_schemas(app, [ChatCompletionRequest, CompletionRequest])
    app.add_exception_handler(SplitmindError, handle_splitmind_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_error)
    app.add_exception_handler(ValidationError, handle_validation_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        st: GatewayState = request.app.state.gateway
        decode = st.registry.healthy(Role.DECODE)
        prefill = st.registry.healthy(Role.PREFILL)
        ok = bool(decode) and st.registry.max_model_len() is not None
        body = {"status": "ok" if ok else "unavailable", "decode_workers": len(decode),
                "prefill_workers": len(prefill)}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics(request: Request) -> PlainTextResponse:
        st: GatewayState = request.app.state.gateway
        return PlainTextResponse(generate_latest(st.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/admin/workers")
    async def workers(request: Request) -> list[dict[str, Any]]:
        st: GatewayState = request.app.state.gateway
        out = []
        for w in st.registry.workers.values():
            healthy = w.is_healthy(st.registry.heartbeat_timeout_s)
            s = w.stats
            out.append({
                "id": w.worker_id, "role": w.role.name.lower(),
                "pid": s.pid if s else (w.info.pid if w.info else None),
                "address": w.address.rpc_address, "stats_address": w.address.stats_address,
                "state": ("leaving" if w.worker_id in st.registry.leaving else "ready" if healthy
                          else "starting" if w.info is None else "unhealthy"),
                "running_requests": s.num_running if s else 0,
                "waiting_requests": s.num_waiting if s else 0,
                "kv_usage": s.kv_usage if s else 0.0,
                "open_streams": len(w.streams),
                "mtp_tokens": w.info.mtp_tokens if w.info else None,
                "kv_transport": w.info.kv_transport if w.info else None,
                "kv_address": w.info.kv_address if w.info else None,  # a ZMQ decode node's KV socket
                "restarts": s.restarts if s else 0,
                "circuit": w.breaker.state,  # closed, open or half_open (router/breaker.py)
            })
        return out

    install_chat_page(app)
    app.add_middleware(Edge, keys=keys or Keys(), tuning=config.tuning)
    if config.tuning.cors_origins:  # outside the edge: a browser's preflight carries no key
        app.add_middleware(CORSMiddleware, allow_origins=list(config.tuning.cors_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type", "x-request-id"],
                           expose_headers=["x-request-id", "x-splitmind-prefill", "x-splitmind-decode", "retry-after"])
    return app


def config_from_json(text: str) -> GatewayConfig:
    import msgspec

    return msgspec.json.decode(text, type=GatewayConfig)


