"""Filter: drop workers that cannot take the request's n more streams.

kept when `requests + n <= max_requests`; `max_requests = 0` keeps everyone. When it leaves no
worker the gateway answers 429 (overloaded) instead of starting work it cannot finish.
"""

from __future__ import annotations

from collections.abc import Sequence

from router.policies.base import RouteRequest, WorkerView


class CapacityFilter:
    name = "full"

    def __init__(self, max_requests: int) -> None:
        self.max_requests = max_requests

    def filter(self, req: RouteRequest, workers: Sequence[WorkerView]) -> list[WorkerView]:
        if not self.max_requests:
            return list(workers)
        return [w for w in workers if w.requests + req.n <= self.max_requests]
