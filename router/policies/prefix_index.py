"""Which workers were sent which prompt prefixes: an approximate map of their prefix caches.

Keyed by the chained block hashes of `RouteRequest.block_hashes`; each entry holds the workers a
prompt with that prefix went to. Bounded: the least recently used blocks are forgotten past
`capacity` entries (a node's own cache evicts too, so an old entry is a guess either way).
Approximate by design: a worker that restarted has lost what the index remembers for it, and the
bounded-load rule in `prefix_affinity.py` keeps a wrong guess cheap.

An entry's workers are a bitmask (an int: bit i is the worker in slot i), not a set. Python's
garbage collector tracks every set, none of the ints: with sets, the index's 200,000 entries
were most of what a full collection walked (55-75 ms of a gateway's time), and every new block
a prompt brought added one, so that collections of the young generation came every few
requests, at the decisions' p99 (`bench/routing.py`, docs/benchmarks.md).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence

from router.policies.base import RouteRequest


class PrefixIndex:
    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self.blocks: OrderedDict[int, int] = OrderedDict()  # block hash -> bitmask of the workers sent it
        self._slot: dict[str, int] = {}  # worker id -> its bit
        self._ids: list[str | None] = []  # bit -> worker id (None: free, after `forget`)
        # `matched` of the last request asked about: a decision asks twice (which workers to
        # sample, then the affinity scorer), and any change to the index drops it.
        self._last: tuple[RouteRequest, dict[str, int]] | None = None

    def _bit(self, worker_id: str) -> int:
        slot = self._slot.get(worker_id)
        if slot is None:
            free = [i for i, w in enumerate(self._ids) if w is None]
            slot = free[0] if free else len(self._ids)
            if slot == len(self._ids):
                self._ids.append(worker_id)
            else:
                self._ids[slot] = worker_id
            self._slot[worker_id] = slot
        return 1 << slot

    def _workers(self, mask: int) -> Iterator[str]:
        ids = self._ids
        while mask:
            low = mask & -mask
            worker_id = ids[low.bit_length() - 1]
            if worker_id is not None:
                yield worker_id
            mask ^= low

    def holders(self, block_hash: int) -> set[str]:
        """The workers a block went to (tests, debugging)."""
        return set(self._workers(self.blocks.get(block_hash, 0)))

    def record(self, req: RouteRequest, worker_id: str) -> None:
        self._last = None
        bit = self._bit(worker_id)
        blocks = self.blocks
        get, touch = blocks.get, blocks.move_to_end
        for h in req.block_hashes:
            mask = get(h)
            if mask is None:
                blocks[h] = bit
            else:
                if not mask & bit:
                    blocks[h] = mask | bit
                touch(h)
        while len(blocks) > self.capacity:
            blocks.popitem(last=False)

    def matched_blocks(self, req: RouteRequest, worker_ids: Sequence[str]) -> dict[str, int]:
        """Per worker, how many of the prompt's leading blocks it was sent before."""
        matched = dict.fromkeys(worker_ids, 0)
        slot = self._slot
        wanted = {wid: 1 << slot[wid] for wid in worker_ids if wid in slot}
        alive = 0
        for bit in wanted.values():
            alive |= bit
        for i, h in enumerate(req.block_hashes):
            alive &= self.blocks.get(h, 0)
            if not alive:
                break
            for wid, bit in wanted.items():
                if alive & bit:
                    matched[wid] = i + 1
        return matched

    def matched(self, req: RouteRequest) -> dict[str, int]:
        """`matched_blocks` of every worker sent at least the prompt's first block, none else: a
        pool of a thousand workers costs what the few that hold the prefix cost. The caller must
        not change the dict."""
        last = self._last
        if last is not None and last[0] is req:
            return last[1]
        matched = self._matched(req)
        self._last = (req, matched)
        return matched

    def _matched(self, req: RouteRequest) -> dict[str, int]:
        matched: dict[str, int] = {}
        blocks = self.blocks
        alive = -1  # the workers holding blocks 0..i-1: all, before block 0
        for i, h in enumerate(req.block_hashes):
            still = alive & blocks.get(h, 0)
            if i:
                for wid in self._workers(alive & ~still):
                    matched[wid] = i
            alive = still
            if not alive:
                return matched
        if req.block_hashes:
            for wid in self._workers(alive):
                matched[wid] = len(req.block_hashes)
        return matched

    def forget(self, worker_id: str) -> None:
        """A worker that left or restarted: its cache is gone, and its bit is free for another."""
        self._last = None
        slot = self._slot.pop(worker_id, None)
        if slot is None:
            return
        self._ids[slot] = None
        keep = ~(1 << slot)
        blocks = self.blocks
        empty = []
        for h, mask in blocks.items():
            if mask >> slot & 1:
                mask &= keep
                blocks[h] = mask  # a key already there: its place in the LRU order stays
                if not mask:
                    empty.append(h)
        for h in empty:
            del blocks[h]
