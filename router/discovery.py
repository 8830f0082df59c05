"""Workers found through DNS: every address a name resolves to is a worker (a Kubernetes
headless Service lists one address per ready pod).

Each name is looked up every `resolve_interval_s`, off the event loop and with a timeout: an
address that appears joins the registry, one that is gone leaves it (its open streams finish
first), one that comes back rejoins, all without a gateway restart.

Decisions:
- a name that does not exist (NXDOMAIN: a Service with no ready pod) means no workers; a lookup
  that fails (timeout, SERVFAIL, no resolver) changes nothing: a DNS hiccup must not empty a pool
  that is serving;
- a discovered worker's id is `<role>@<address>:<port>`: stable across lookups, unique per pod,
  and what the logs, `/admin/workers` and the metrics show.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Sequence
from typing import Protocol

from splitmind.config import WorkerAddress, WorkerDNS

logger = logging.getLogger(__name__)

Resolve = Callable[[str], list[str]]  # DNS name -> addresses
RESOLVE_TIMEOUT_S = 5.0
_NO_SUCH_NAME = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


class Pool(Protocol):
    """What discovery changes: `router/registry.py`'s WorkerRegistry."""

    def join(self, address: WorkerAddress) -> None: ...

    def leave(self, worker_id: str) -> None: ...


def resolve_dns(name: str) -> list[str]:
    """Every address of `name` (A and AAAA records), sorted; [] when the name does not exist."""
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in _NO_SUCH_NAME:
            return []
        raise
    return sorted({str(info[4][0]) for info in infos})


def worker_address(source: WorkerDNS, ip: str) -> WorkerAddress:
    host = f"[{ip}]" if ":" in ip else ip
    return WorkerAddress(f"{source.role.name.lower()}@{host}:{source.rpc_port}", source.role,
                         f"tcp://{host}:{source.rpc_port}", f"tcp://{host}:{source.stats_port}")


class Discovery:
    def __init__(self, sources: Sequence[WorkerDNS], registry: Pool, interval_s: float,
                 resolve: Resolve = resolve_dns) -> None:
        self.sources = list(sources)
        self.registry = registry
        self.interval_s = interval_s
        self.resolve = resolve
        self.found: dict[WorkerDNS, set[str]] = {s: set() for s in self.sources}
        self._failing: set[WorkerDNS] = set()

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval_s)

    async def refresh(self) -> None:
        for source in self.sources:
            try:
                async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                    ips = await asyncio.to_thread(self.resolve, source.name)
            except (OSError, TimeoutError) as exc:
                if source not in self._failing:  # once per outage, not every interval
                    logger.warning("looking up %s failed (%s); keeping its %d workers", source.name,
                                   exc or type(exc).__name__, len(self.found[source]))
                self._failing.add(source)
                continue
            if source in self._failing:
                logger.info("looking up %s works again", source.name)
                self._failing.discard(source)
            self._apply(source, [worker_address(source, ip) for ip in ips])

    def _apply(self, source: WorkerDNS, addresses: list[WorkerAddress]) -> None:
        now = {a.worker_id for a in addresses}
        for a in addresses:
            self.registry.join(a)  # a no-op for a worker already serving
        for gone in self.found[source] - now:
            self.registry.leave(gone)
        self.found[source] = now
