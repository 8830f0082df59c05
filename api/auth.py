"""API keys: who may call what.

- `/v1/*` takes an API key or the admin key, as `Authorization: Bearer <key>`.
- `/admin/*` takes the admin key only; with API keys set and no admin key, nobody.
- `/metrics` as `[gateway] metrics_access` says: open (the default), an API key, or the admin key.
- `/health` and the OpenAPI schema stay open: probes and clients' tooling read them, and so do
  the chat page (`/`) and its assets (`/ui/`), static files that ask for the key themselves.

With no key configured at all, everything is open, as a local `splitmind up` is.

Keys are kept as SHA-256 digests and compared with `hmac.compare_digest` against every digest,
so neither the time taken nor a log line tells anything about a key. Keys reach the gateway
through its environment (`SPLITMIND_API_KEY`, `SPLITMIND_API_KEY_FILE`, `SPLITMIND_ADMIN_KEY`,
`SPLITMIND_ADMIN_KEY_FILE`), never its command line, which any local user can read in `ps`.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


class Access(enum.Enum):
    OPEN = "open"
    API = "api_key"
    ADMIN = "admin_key"


class AuthError(Exception):
    """Missing or wrong credentials (401), or the right kind missing for this path (403)."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def _any_equal(digest: bytes, digests: Iterable[bytes]) -> bool:
    found = False
    for d in digests:  # no early exit: the time taken does not depend on which key matched
        found |= hmac.compare_digest(digest, d)
    return found


@dataclass(frozen=True)
class Keys:
    api: frozenset[bytes] = frozenset()  # digests
    admin: frozenset[bytes] = frozenset()

    @classmethod
    def of(cls, api_keys: Iterable[str] = (), admin_keys: Iterable[str] = ()) -> Keys:
        return cls(frozenset(_digest(k) for k in api_keys), frozenset(_digest(k) for k in admin_keys))

    @property
    def enabled(self) -> bool:
        return bool(self.api or self.admin)

    def check(self, access: Access, authorization: str | None) -> str | None:
        """The caller's identity for per-key limits (a digest prefix, never the key), or None
        when no key is configured; raises AuthError when the caller may not pass."""
        if access is Access.OPEN or not self.enabled:
            return None
        key = _bearer(authorization)
        if key is None:
            raise AuthError(401, "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
                            "missing_api_key")
        digest = _digest(key)
        is_admin = _any_equal(digest, self.admin)
        is_api = _any_equal(digest, self.api)
        if not (is_admin or is_api):
            raise AuthError(401, "Incorrect API key provided.", "invalid_api_key")
        if access is Access.ADMIN and not is_admin:
            raise AuthError(403, "This endpoint needs the admin key.", "admin_key_required")
        return digest.hex()[:16]


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


def access_for(path: str, metrics_access: str) -> Access:
    if path in OPEN_PATHS or path == "/" or path.startswith("/ui/"):
        return Access.OPEN
    if path.startswith("/admin"):
        return Access.ADMIN
    if path == "/metrics":
        return Access(metrics_access)
    return Access.API


def split_keys(values: Iterable[str]) -> list[str]:
    """Keys given as several values, each possibly a comma- or whitespace-separated list."""
    return [k for v in values for k in v.replace(",", " ").split()]


def keys_from_environment(env: Mapping[str, str] = os.environ) -> Keys:
    """The gateway's keys from its environment; a key file holds one key a line (# comments)."""
    def gather(name: str) -> list[str]:
        found = split_keys([env.get(name, "")])
        path = env.get(f"{name}_FILE")
        if path:
            lines = Path(path).read_text().splitlines()
            found += split_keys(line for line in lines if not line.lstrip().startswith("#"))
        return found

    return Keys.of(gather("SPLITMIND_API_KEY"), gather("SPLITMIND_ADMIN_KEY"))
