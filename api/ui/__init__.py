"""The chat page: `GET /` and its assets under `/ui/`, files in this package's `static/`.

The page is a plain client of the public API (`/v1/models`, `/v1/chat/completions` streamed), as
Open WebUI is: it reads `reasoning_content`, the `: thinking: N` progress comments of hidden
deployments, usage, and the `x-splitmind-*` headers. The browser libraries it uses (marked,
DOMPurify) are copied from the npm registry into `static/vendor/` at setup
(`scripts/vendor_ui.sh`); without them the page still works and shows answers as plain text.

A model's output is untrusted HTML: the page sanitizes rendered Markdown with DOMPurify, and the
Content-Security-Policy below lets no script, style, frame or connection come from anywhere but
the gateway itself, so an injected tag that slipped through could still run nothing.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).parent / "static"
PREFIX = "/ui"

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
    "connect-src 'self'", "font-src 'self'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
])
PAGE_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",  # a new gateway version's page is picked up at once
}


class _AssetHeaders:
    """nosniff and revalidation on every asset (StaticFiles sets neither)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-content-type-options", b"nosniff"),
                                      (b"cache-control", b"no-cache")]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def vendored() -> bool:
    return (STATIC / "vendor" / "marked.esm.js").is_file() and (STATIC / "vendor" / "purify.es.mjs").is_file()


def install_chat_page(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def chat_page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    app.mount(PREFIX, _AssetHeaders(StaticFiles(directory=STATIC)), name="ui")
