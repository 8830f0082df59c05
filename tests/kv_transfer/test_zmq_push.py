"""Prefill's blocks reach decode's blocks over a real ZMQ socket, layer by layer and across a
chunked prefill, under the seeded-decode contract; what is not needed is dropped, what does not
come is recomputed, and an aborted load is still reported (vLLM frees its blocks only then)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from kv_transfer.zmq.plan import ZmqMetadata
from kv_transfer.zmq.worker import ZmqWorker
from tests.kv_transfer.zmq_parts import (
    LAYERS,
    address,
    blocks,
    caches,
    finished_within,
    new_step,
    next_step,
    planner,
    request,
    run_step,
    worker,
)

PREFILL_WORKERS: list[ZmqWorker] = []


@pytest.fixture(autouse=True)
def close_prefill_workers() -> Iterator[None]:
    """Closed after the test: a worker closed at once drops what its socket has not sent yet
    (LINGER 0, as an engine shutting down should)."""
    yield
    while PREFILL_WORKERS:
        PREFILL_WORKERS.pop().close()


Decode = tuple[dict[str, torch.Tensor], ZmqWorker]


@pytest.fixture
def decode(tmp_path: Path) -> Iterator[Decode]:
    """A decode engine's caches (zeros) and worker, receiving on the test's socket."""
    dkv = caches(seed=None)
    d = worker(dkv, address(tmp_path))
    yield dkv, d
    d.close()


def push_params(tmp: Path, tid: str = "t1") -> dict[str, object]:
    return {"do_remote_decode": True, "transport": "zmq", "transfer_id": tid, "push_to": address(tmp)}


def prefill_in_two_chunks(tmp: Path, tid: str = "t1") -> tuple[dict[str, torch.Tensor], dict[str, object] | None]:
    """A 10-token prompt in blocks [3, 7, 9], computed 6 then 4 tokens; returns prefill's caches and
    the params its reply carries."""
    kv = caches(seed=1)
    p, w = planner(), worker(kv)
    req = request("p1", 10, push_params(tmp, tid))
    p.on_new_request(req)
    run_step(w, p.build(new_step("p1", [3, 7], computed=0, scheduled=6)), kv)
    run_step(w, p.build(next_step("p1", [9], computed=6, scheduled=4)), kv)
    held, reply = p.finished(req)
    assert held, "vLLM keeps the blocks: frames go out of them"
    run_step(w, p.build(next_step("other", [], 0, 0)), kv)  # the step that hears of it
    deadline = time.monotonic() + 5
    while "p1" not in w.take_sent():  # once ZMQ has sent every frame, vLLM may free them
        assert time.monotonic() < deadline, "blocks never handed back"
        time.sleep(0.005)
    PREFILL_WORKERS.append(w)
    return kv, reply


def decode_request(reply: dict[str, object], prompt: int = 11) -> object:
    return request("d1", prompt, {**reply, "do_remote_prefill": True, "do_remote_decode": False})


def test_a_chunked_prefill_lands_in_decodes_blocks(tmp_path: Path, decode: Decode) -> None:
    dkv, d = decode
    pkv, reply = prefill_in_two_chunks(tmp_path)
    assert reply is not None and reply["transfer_id"] == "t1" and reply["remote_num_tokens"] == 10
    dp = planner()
    req = decode_request(reply)  # prompt + prefill's token: 11
    assert dp.claim(req, 0) == (10, True), "seeded decode: prefill's 10 tokens are remote, the 11th is not"
    dp.allocated(req, blocks([5, 2, 11]), 10)
    d.start_load(dp.build(new_step("x", [], 0, 0)))
    finished_within(d, "d1")
    assert d.take_load_errors() == set()
    for name in LAYERS:
        assert torch.equal(dkv[name][[5, 2, 11]], pkv[name][[3, 7, 9]]), name
    assert d.staging.nbytes == 0, "taken out of staging once copied"
    assert dp.claim(req, 0) == (0, False), "loaded once, never claimed again"


def test_decodes_own_cache_hit_is_not_overwritten(tmp_path: Path, decode: Decode) -> None:
    dkv, d = decode
    pkv, reply = prefill_in_two_chunks(tmp_path)
    assert reply is not None
    dp = planner()
    req = decode_request(reply)
    assert dp.claim(req, 4) == (6, True), "one block (4 tokens) cached on decode"
    dp.allocated(req, blocks([5, 2, 11]), 6)
    d.start_load(dp.build(new_step("x", [], 0, 0)))
    finished_within(d, "d1")
    for name in LAYERS:
        assert not dkv[name][5].any(), "the locally cached block is left alone"
        assert torch.equal(dkv[name][[2, 11]], pkv[name][[7, 9]])


def test_a_full_local_hit_drops_the_push(tmp_path: Path, decode: Decode) -> None:
    _, d = decode
    _, reply = prefill_in_two_chunks(tmp_path)
    assert reply is not None
    finished_within_staged(d, "t1")
    dp = planner()
    assert dp.claim(decode_request(reply), 12) == (0, False)
    d.start_load(dp.build(new_step("x", [], 0, 0)))
    assert d.staging.take("t1") == "dropped" and d.staging.nbytes == 0


def finished_within_staged(d: ZmqWorker, tid: str) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        entry = d.staging._entries.get(tid)
        if entry is not None and entry.done is not None:
            return
        time.sleep(0.005)
    raise AssertionError(f"transfer {tid} not staged")


def test_kv_that_never_comes_is_recomputed_not_waited_for(tmp_path: Path) -> None:
    d = worker(caches(seed=None), address(tmp_path), timeout_s=0.2)
    try:
        dp = planner()
        req = decode_request({"transport": "zmq", "transfer_id": "lost", "remote_num_tokens": 10})
        assert dp.claim(req, 0) == (10, True)
        dp.allocated(req, blocks([5, 2, 11]), 10)
        d.start_load(dp.build(new_step("x", [], 0, 0)))
        took = finished_within(d, "d1", timeout_s=3)
        assert 0.15 < took < 2
        assert d.take_load_errors() == {5, 2, 11}, "vLLM recomputes the blocks it is told failed"
        assert d.stats.data["num_failed_transfers"] == [1]
    finally:
        d.close()


def test_an_aborted_prefill_tells_decode_to_drop_what_came(tmp_path: Path, decode: Decode) -> None:
    _, d = decode
    kv = caches(seed=1)
    p, w = planner(), worker(kv)
    req = request("p1", 10, push_params(tmp_path, "t2"))
    p.on_new_request(req)
    run_step(w, p.build(new_step("p1", [3, 7], computed=0, scheduled=6)), kv)
    assert p.finished(req) == (True, None), "aborted half way: no KV to hand on, blocks kept till sent"
    run_step(w, p.build(new_step("other", [], 0, 0)), kv)  # the next step sends the Drop
    PREFILL_WORKERS.append(w)
    deadline = 5.0
    t0 = time.monotonic()
    while d.staging.take("t2") != "dropped":
        assert time.monotonic() - t0 < deadline, "the Drop never arrived"
        time.sleep(0.005)
    assert d.staging.nbytes == 0


def test_a_load_aborted_while_waiting_is_still_reported(tmp_path: Path) -> None:
    """vLLM keeps an aborted request's blocks until the worker reports its load over."""
    d = worker(caches(seed=None), address(tmp_path))
    try:
        dp = planner()
        req = decode_request({"transport": "zmq", "transfer_id": "slow", "remote_num_tokens": 10})
        dp.claim(req, 0)
        dp.allocated(req, blocks([5, 2, 11]), 10)
        d.start_load(dp.build(new_step("x", [], 0, 0)))
        assert "d1" not in d.take_finished()
        dp.finished(req)  # the abort
        meta = dp.build(new_step("x", [], 0, 0))
        assert meta.cancels == ["d1"]
        d.start_load(meta)
        assert d.take_finished() == {"d1"} and d.take_load_errors() == set()
        assert d.staging.take("slow") == "dropped", "late frames of it are ignored"
    finally:
        d.close()


def test_a_released_transfer_is_dropped(tmp_path: Path) -> None:
    """The gateway's ReleaseKV reaches the connector as a pre-aborted request (vLLM's
    notify_kv_transfer_request_rejected): its transfer is dropped, nothing is loaded."""
    dp = planner()
    req = decode_request({"transport": "zmq", "transfer_id": "t9", "remote_num_tokens": 10})
    assert dp.finished(req) == (False, None)
    assert dp.build(new_step("x", [], 0, 0)) == ZmqMetadata(drops=["t9"])


def test_with_keys_only_nodes_push(tmp_path: Path) -> None:
    """CURVE on the KV socket: a node's pair gets through, a gateway's pair and plain TCP do not."""
    from splitmind.curve import create_keys

    keys = tmp_path / "keys"
    create_keys(keys)
    other = tmp_path / "other"
    create_keys(other)  # another deployment's keys: not this one's nodes
    d = worker(caches(seed=None), address(tmp_path), keys_dir=str(keys))
    try:
        for name, keys_dir in (("plain", ""), ("stranger", str(other)), ("node", str(keys))):
            kv = caches(seed=1)
            p = planner()
            w = worker(kv, keys_dir=keys_dir)
            PREFILL_WORKERS.append(w)
            req = request("p1", 6, push_params(tmp_path, name))
            p.on_new_request(req)
            run_step(w, p.build(new_step("p1", [3, 7], computed=0, scheduled=6)), kv)
        finished_within_staged(d, "node")
        time.sleep(0.3)  # the others had as long, and more
        assert set(d.staging._entries) == {"node"}, "only the node's push got in"
    finally:
        d.close()


def test_runs_of_consecutive_blocks_go_out_as_views_of_the_cache() -> None:
    from kv_transfer.zmq.worker import runs

    cache = caches(seed=1)[LAYERS[0]]
    out = runs(cache, [2, 3, 4, 9, 11, 12])
    assert [(offset, len(data)) for offset, data in out] == [(0, 3), (3, 1), (4, 2)]
    assert out[0][1].data_ptr() == cache[2].data_ptr(), "no copy: a view of the KV cache"
    assert torch.equal(out[2][1], cache[[11, 12]])
