"""One config value, typed by its dataclass field: checked when it comes from TOML, parsed when it
comes from an environment variable.

Types and their text in the environment:

    str             as written
    int, float      a number ("8", "0.5")
    bool            true/false, 1/0, yes/no, on/off (any case)
    tuple[str, ...] comma-separated ("https://a.example,https://b.example"); "" is empty
    X | None        "" is None (the default: "unset"); anything else as X
    Role            prefill or decode

TOML's own types must match: `port = "8000"` is an error, not a port, and so is `true` where a
count goes (Python's bool is an int, TOML's is not).
"""

from __future__ import annotations

import types
import typing
from typing import Any

from splitmind.protocol import Role

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def _split_optional(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return hint, False


def describe(hint: Any) -> str:
    base, optional = _split_optional(hint)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             Role: "prefill or decode"}
    text = names.get(base, "a list of strings" if typing.get_origin(base) is tuple else str(base))
    return text + (" (or unset)" if optional else "")


def _role(value: str) -> Role | None:
    return Role.__members__.get(value.strip().upper())


def check(name: str, value: Any, hint: Any) -> Any:
    """A TOML value for the field `name` (e.g. "engine.kv_cache_gib"), typed; lists become tuples."""
    base, optional = _split_optional(hint)
    if value is None and optional:
        return None
    ok: bool
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif base is str:
        ok = isinstance(value, str)
    elif base is Role:
        role = value if isinstance(value, Role) else _role(value) if isinstance(value, str) else None
        ok, value = role is not None, role or value
    elif typing.get_origin(base) is tuple:
        ok = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    else:
        return value  # free-form (the reasoning profile checks its own)
    if not ok:
        raise ValueError(f"{name} must be {describe(hint)}, not {value!r}")
    return value


def parse(variable: str, name: str, text: str, hint: Any) -> Any:
    """The text of environment variable `variable`, for the field `name`, typed."""
    base, optional = _split_optional(hint)
    value: Any = text
    if optional and text.strip() == "":
        return None
    try:
        if base is bool:
            if text.strip().lower() not in (*_TRUE, *_FALSE):
                raise ValueError
            value = text.strip().lower() in _TRUE
        elif base is int:
            value = int(text)
        elif base is float:
            value = float(text)
        elif base is Role:
            value = _role(text)
            if value is None:
                raise ValueError
        elif typing.get_origin(base) is tuple:
            value = tuple(part.strip() for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{variable}: {name} must be {describe(hint)}, not {text!r}") from None
    return value
