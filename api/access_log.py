"""One access-log line per API request, written when the response has ended (streams included):

    access id=<x-request-id> req=<internal id> POST /v1/chat/completions status=200
      route=disaggregated prefill=prefill-0 decode=decode-0 prompt=31 completion=412 reasoning=380
      ttft=0.212s duration=3.071s fallbacks=-

on the `splitmind.access` logger (INFO). Workers are the ones that served (after retries and
migrations), not only the ones chosen. A request refused before it was routed (401, 413, 429, a
400 from validation) has `route=-` and no tokens. Ops endpoints (/health, /metrics, /admin, the
chat page's files) are not logged: a scraper would drown the rest.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("splitmind.access")


def logged(path: str) -> bool:
    return path.startswith("/v1/")


def access_line(method: str, path: str, status: int | None, state: dict[str, Any], duration_s: float) -> str:
    fields = [f"id={state.get('request_id', '-')}"]
    out = state.get("response")  # api/response.py's Response, once the request was routed
    if out is not None:
        fields.append(f"req={out.plan.request_id}")
    fields += [method, path, f"status={status if status is not None else '-'}"]
    if out is not None:
        served = out.plan.served_by()
        usage = out.usage()
        fields += [f"route={out.plan.route}", f"prefill={','.join(served['prefill']) or 'none'}",
                   f"decode={','.join(served['decode']) or 'none'}", f"prompt={usage['prompt_tokens']}",
                   f"completion={usage['completion_tokens']}",
                   f"reasoning={usage['completion_tokens_details']['reasoning_tokens']}",
                   f"ttft={out.ttft_s:.3f}s" if out.ttft_s is not None else "ttft=-"]
    else:
        fields.append("route=-")
    fields.append(f"duration={duration_s:.3f}s")
    if out is not None:
        fields.append(f"fallbacks={','.join(out.plan.fallbacks()) or '-'}")
    return "access " + " ".join(fields)
