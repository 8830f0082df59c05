"""Per-key limits: a request rate (token bucket) and requests in flight, streams included.

A caller is its API key (a digest prefix) or, without keys, its address. Both limits are off
by default (`[gateway] key_requests_per_s`, `key_max_concurrent`). A refusal is a 429 with
`Retry-After` and creates no state: the bucket is charged and the slot taken only when the
request passes.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

MAX_CALLERS = 100_000  # buckets kept; the least recently seen are forgotten (a full bucket again)


class LimitExceeded(Exception):
    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def retry_after(self) -> str:
        return str(max(1, math.ceil(self.retry_after_s)))


@dataclass
class _Bucket:
    tokens: float
    updated_s: float
    in_flight: int = 0


class KeyLimits:
    def __init__(self, requests_per_s: float, burst: int, max_concurrent: int) -> None:
        self.requests_per_s = requests_per_s
        self.burst = burst
        self.max_concurrent = max_concurrent
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.requests_per_s > 0 or self.max_concurrent > 0

    def acquire(self, caller: str, now_s: float | None = None) -> None:
        """Admit one request of `caller` or raise LimitExceeded; pair with `release`."""
        now = time.monotonic() if now_s is None else now_s
        b = self._bucket(caller, now)
        if self.max_concurrent and b.in_flight >= self.max_concurrent:
            raise LimitExceeded(f"too many requests in flight for this key (at most {self.max_concurrent})", 1.0)
        if self.requests_per_s:
            b.tokens = min(float(self.burst), b.tokens + (now - b.updated_s) * self.requests_per_s)
            b.updated_s = now
            if b.tokens < 1.0:
                wait = (1.0 - b.tokens) / self.requests_per_s
                raise LimitExceeded(f"rate limit reached for this key ({self.requests_per_s:g} requests/s)", wait)
            b.tokens -= 1.0
        b.in_flight += 1

    def release(self, caller: str) -> None:
        b = self._buckets.get(caller)
        if b is not None and b.in_flight > 0:
            b.in_flight -= 1

    def _bucket(self, caller: str, now: float) -> _Bucket:
        b = self._buckets.get(caller)
        if b is None:
            b = _Bucket(tokens=float(self.burst), updated_s=now)
            self._buckets[caller] = b
            while len(self._buckets) > MAX_CALLERS:
                oldest, ob = next(iter(self._buckets.items()))
                if ob.in_flight:  # never forget a caller with work in flight
                    self._buckets.move_to_end(oldest)
                    break
                del self._buckets[oldest]
        self._buckets.move_to_end(caller)
        return b
