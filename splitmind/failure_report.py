"""What a process that failed says about why, from its log: the root cause first, then the
log's last lines, for the terminal of `splitmind up`."""

from __future__ import annotations

import re
from pathlib import Path

_ERROR_LINE = re.compile(r"\b([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$")
# Lines that only say the engine failed, and point back at the cause logged above them.
_WRAPPERS = ("EngineDeadError", "EngineCore encountered an issue", "Engine core initialization failed", "[splitmind]")


def root_cause(lines: list[str]) -> str | None:
    """The last exception line of a log that is not a wrapper: vLLM's engine core logs the real
    reason (e.g. "Unsupported CPU attention configuration: head_dim=24") and the frontend then
    reports only `EngineDeadError`."""
    for line in reversed(lines):
        m = _ERROR_LINE.search(line)
        if m and not any(w in line for w in _WRAPPERS):
            return f"{m.group(1)}: {m.group(2).strip()}"
    return None


def failure_report(log_path: Path, lines: int = 25) -> str:
    """": <root cause>" (when one is found), then the log's last `lines` lines."""
    try:
        text = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    cause = root_cause(text[-400:])
    head = f": {cause}" if cause else ""
    return f"{head}\nlast lines of {log_path}:\n" + "\n".join(text[-lines:])
