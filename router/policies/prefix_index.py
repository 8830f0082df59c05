"""Which workers were sent which prompt prefixes: an approximate map of their prefix caches.

Keyed by the chained block hashes of `RouteRequest.block_hashes`; each entry holds the workers a
prompt with that prefix went to. Bounded: the least recently used blocks are forgotten past
`capacity` entries (a node's own cache evicts too, so an old entry is a guess either way).
Approximate by design: a worker that restarted has lost what the index remembers for it, and the
bounded-load rule in `prefix_affinity.py` keeps a wrong guess cheap.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from router.policies.base import RouteRequest


class PrefixIndex:
    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self.blocks: OrderedDict[int, set[str]] = OrderedDict()

    def record(self, req: RouteRequest, worker_id: str) -> None:
        blocks = self.blocks
        get, touch = blocks.get, blocks.move_to_end
        for h in req.block_hashes:
            holders = get(h)
            if holders is None:
                blocks[h] = {worker_id}
            else:
                holders.add(worker_id)
                touch(h)
        while len(blocks) > self.capacity:
            blocks.popitem(last=False)

    def matched_blocks(self, req: RouteRequest, worker_ids: Sequence[str]) -> dict[str, int]:
        """Per worker, how many of the prompt's leading blocks it was sent before."""
        matched = dict.fromkeys(worker_ids, 0)
        alive = set(worker_ids)
        for i, h in enumerate(req.block_hashes):
            holders = self.blocks.get(h)
            if not holders:
                break
            alive &= holders
            if not alive:
                break
            for wid in alive:
                matched[wid] = i + 1
        return matched

    def matched(self, req: RouteRequest) -> dict[str, int]:
        """`matched_blocks` of every worker sent at least the prompt's first block, none else: a
        pool of a thousand workers costs what the few that hold the prefix cost."""
        matched: dict[str, int] = {}
        alive: set[str] = set()  # the workers holding blocks 0..i-1
        for i, h in enumerate(req.block_hashes):
            holders = self.blocks.get(h)
            still = (alive & holders if i else set(holders)) if holders else set()
            for wid in alive - still:
                matched[wid] = i
            alive = still
            if not alive:
                return matched
        for wid in alive:
            matched[wid] = len(req.block_hashes)
        return matched

    def forget(self, worker_id: str) -> None:
        """A worker that left or restarted: its cache is gone."""
        for holders in self.blocks.values():
            holders.discard(worker_id)
