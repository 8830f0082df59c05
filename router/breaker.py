"""A circuit breaker per worker: a worker that keeps failing requests is taken out for a while,
then probed back with one request.

closed --(`threshold` failures in a row)--> open --(cooldown over)--> half-open
half-open: one request (the probe) may go; it succeeding closes the breaker, it failing opens it
again for twice as long (up to `max_cooldown_s`).

A failure is what the router would retry elsewhere: a 5xx from the node, a timeout, a node gone
silent. A 4xx (the request's fault) and a client's abort are neither failure nor success. Without
it, one node whose KV transfers fail turns every request routed to it into a retry (or, with no
other node, an error) until its heartbeat stops, which it may never do.
"""

from __future__ import annotations

import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class Breaker:
    def __init__(self, threshold: int = 3, cooldown_s: float = 5.0, max_cooldown_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold  # 0: never opens
        self.base_cooldown_s = cooldown_s
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self.clock = clock
        self._state = CLOSED
        self.failures = 0  # in a row
        self.open_until = 0.0
        self.probe: str | None = None  # the request id of the probe in flight
        self.trips = 0  # times it opened
        self.on_open: Callable[[], None] | None = None  # told each time it opens (the registry's healthy list)

    @property
    def state(self) -> str:
        if self._state == OPEN and self.clock() >= self.open_until:
            self._state, self.probe = HALF_OPEN, None
        return self._state

    def allows(self) -> bool:
        """May a new request go to the worker?"""
        if self._state == CLOSED:  # the usual answer, without reading the clock
            return True
        state = self.state
        return state == CLOSED or (state == HALF_OPEN and self.probe is None)

    def started(self, request_id: str) -> None:
        if self.state == HALF_OPEN and self.probe is None:
            self.probe = request_id

    def ended(self, request_id: str) -> None:
        """The request went away without an outcome (aborted, released early): probe again."""
        if self.probe == request_id:
            self.probe = None

    def success(self) -> None:
        self._state, self.failures, self.cooldown_s, self.probe = CLOSED, 0, self.base_cooldown_s, None

    def failure(self) -> None:
        self.failures += 1
        state = self.state
        if state == HALF_OPEN:
            self.cooldown_s = min(self.cooldown_s * 2, self.max_cooldown_s)
            self._open()
        elif state == CLOSED and self.threshold and self.failures >= self.threshold:
            self._open()

    def _open(self) -> None:
        self._state, self.probe = OPEN, None
        self.open_until = self.clock() + self.cooldown_s
        self.trips += 1
        if self.on_open is not None:
            self.on_open()
