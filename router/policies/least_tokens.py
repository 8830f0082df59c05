"""Scorer: fewer tokens in flight is better.

score = 1 - tokens / max(tokens over the candidates), tokens = prompt + generated tokens of the
requests open on the worker until their streams end. A decode node carrying two 8k-token
reasoning streams is busier than one carrying five short chats, which a request count misses.
"""

from __future__ import annotations

from collections.abc import Sequence

from router.policies.base import RouteRequest, WorkerView


class LeastTokensScorer:
    name = "least-tokens"

    def score(self, req: RouteRequest, workers: Sequence[WorkerView]) -> dict[str, float]:
        # a float top: the same quotient as int / int (token counts are far below 2**53), faster
        top = float(max([w.tokens_in_flight for w in workers], default=0) or 1)
        return {w.worker_id: 1.0 - w.tokens_in_flight / top for w in workers}
