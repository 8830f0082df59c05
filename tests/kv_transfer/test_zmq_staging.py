"""Decode's KV socket takes only well-formed frames, holds a bounded number of bytes, and forgets
what nobody claims."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import zmq

from kv_transfer.zmq.staging import Receiver, Staging
from kv_transfer.zmq.wire import Done, LayerBlocks, encoder


def frames(*parts: bytes) -> list[zmq.Frame]:
    return [zmq.Frame(p) for p in parts]


def layer(tid: str, data: torch.Tensor, **over: object) -> bytes:
    fields = {"transfer_id": tid, "layer": "l0", "first": 0, "dtype": "float32", "shape": list(data.shape)}
    fields.update(over)
    return encoder.encode(LayerBlocks(**fields))  # type: ignore[arg-type]


def receiver(tmp: Path, staging: Staging) -> Receiver:
    return Receiver(zmq.Context.instance(), f"ipc://{tmp}/r.sock", staging)


def test_frames_that_do_not_match_their_header_are_dropped(tmp_path: Path) -> None:
    staging = Staging(1 << 20, 30)
    r = receiver(tmp_path, staging)
    data = torch.ones(2, 3)
    raw = data.numpy().tobytes()
    r.handle(frames(layer("t", data, shape=[2, 4]), raw))  # 24 bytes for 32
    r.handle(frames(layer("t", data, dtype="object"), raw))  # not a dtype the wire carries
    r.handle(frames(layer("t" * 300, data), raw))  # id too long
    r.handle(frames(layer("t", data, shape=[-2, -3]), raw))
    r.handle(frames(layer("t", data)))  # no data frame
    r.handle(frames(b"\x93garbage", raw))
    r.handle(frames(encoder.encode(Done("t", 0, ["l0"]))))
    assert staging.nbytes == 0 and staging.take("t") is None
    r.handle(frames(layer("t", data), raw))
    r.handle(frames(encoder.encode(Done("t", 5, ["l0"]))))
    got = staging.take("t")
    assert not isinstance(got, (str, type(None))) and torch.equal(got.layers["l0"][0][1], data)
    r.sock.close(linger=0)


def test_staging_refuses_a_transfer_past_its_bound() -> None:
    staging = Staging(max_bytes=100, lease_s=30)
    header = LayerBlocks("big", "l0", 0, "float32", [30])
    staging.add(header, torch.zeros(30))  # 120 bytes
    assert staging.take("big") == "refused: staging full (100 bytes)" and staging.nbytes == 0
    staging.add(LayerBlocks("big", "l1", 0, "float32", [1]), torch.zeros(1))
    assert staging.nbytes == 0, "the rest of a refused transfer is ignored"


def test_a_transfer_nobody_claims_expires_with_its_lease() -> None:
    staging = Staging(max_bytes=1 << 20, lease_s=0.05)
    staging.add(LayerBlocks("t", "l0", 0, "float32", [4]), torch.zeros(4))
    staging.finish(Done("t", 4, ["l0"]))
    time.sleep(0.1)
    staging.expire(time.monotonic())
    assert staging.expired == 1 and staging.nbytes == 0
    assert str(staging.take("t")).startswith("expired")
