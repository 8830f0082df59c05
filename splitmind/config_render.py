"""Resolved configuration as TOML, for `splitmind check-config`: what it prints can be read back
as a config file and resolves to the same thing. TOML has no null, so an unset value (None) is
a comment, `# key = <unset>`, and reading the output back leaves it unset too."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import Any


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return toml_value(value.name.lower())
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are TOML basic-string escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items() if v is not None) + " }"
    raise TypeError(f"no TOML for {value!r}")


def _lines(values: Mapping[str, Any]) -> list[str]:
    out = []
    for key, value in values.items():
        if value is None:
            out.append(f"# {key} = <unset>")
            continue
        line = f"{key} = {toml_value(value)}"
        if isinstance(value, Mapping):
            line += "".join(f"  # {k} = <unset>" for k, v in value.items() if v is None)
        out.append(line)
    return out


def to_toml(sections: Mapping[str, Any]) -> str:
    """`sections`: table name -> a mapping (a table) or a list of mappings (an array of tables)."""
    out: list[str] = []
    for name, body in sections.items():
        if isinstance(body, Mapping):
            out += ["", f"[{name}]", *_lines(body)]
        elif not body:
            out += ["", f"# [[{name}]]: none"]
        else:
            for entry in body:
                out += ["", f"[[{name}]]", *_lines(entry)]
    return "\n".join(out).lstrip("\n") + "\n"
