"""When `splitmind up` restarts a process that died, and when it gives up.

Bounded: at most `max_restarts` within `window_s` per process, each after a backoff that
doubles from `first_delay_s` up to `max_delay_s`. A process that keeps dying (a model that
fails at once, a port someone else took) stops the launcher instead of looping for ever; one
that dies once a day is restarted every time.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class RestartPolicy:
    max_restarts: int = 5
    window_s: float = 600.0
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    _deaths: dict[str, deque[float]] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)  # restarts per process since launch

    def on_death(self, name: str, now: float) -> float | None:
        """Seconds to wait before restarting `name`, which died at `now`; None: give up."""
        deaths = self._deaths.setdefault(name, deque())
        while deaths and now - deaths[0] > self.window_s:
            deaths.popleft()
        if len(deaths) >= self.max_restarts:
            return None
        deaths.append(now)
        self.total[name] = self.total.get(name, 0) + 1
        return float(min(self.max_delay_s, self.first_delay_s * 2 ** (len(deaths) - 1)))
