"""KV over ZMQ (pushed layer by layer) against NIXL (pulled after prefill), in one run.

    .venv/bin/python bench/kv_transfer.py                      # ~8 minutes on 2 cores
    .venv/bin/python bench/kv_transfer.py --lengths 512,2048,8192

A random checkpoint with a large KV per token (8 layers x 8 KV heads x 128 dims, float32: 64 KiB
a token), one `splitmind up` cluster per transport (prefill node on core 0, decode node on core
1, prefix caching off), fresh prompts of each length. Transports: NIXL as `splitmind up` runs it
(on one host UCX picks shared memory), ZMQ, and NIXL over TCP (`UCX_TLS=tcp`: how NIXL moves KV
between machines without RDMA, the case ZMQ is for). Per transport and length:
- time to the first decode token: the client's wait for the 2nd token of a streamed completion
  (the 1st is prefill's), through the gateway, disaggregated; the same cluster's colocated route
  (no transfer at all) is the floor;
- the decode request's wait for its KV, as the decode node's connector reports it
  (`splitmind_kv_transfer_seconds`): NIXL's pull after prefill ended; for ZMQ what was left of
  the push, which overlapped prefill, plus the copy into the blocks;
- bandwidth: NIXL's from its own telemetry (bytes / pull time); ZMQ's from its push path alone,
  without a model (`push_bandwidth`: splitmind's connector worker pushing the same blocks over
  TCP loopback from a process on core 0 to a decode receiver on core 1, until `Done` is held);
- the ceiling: the same bytes copied block by block in one process (`index_copy_`).

Prints a table and writes bench/out/kv_transfer.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.metrics import counter_sum  # noqa: E402
from models.test_checkpoints import CheckpointSpec, build_checkpoint  # noqa: E402
from splitmind.launcher import free_port  # noqa: E402
from tests.e2e.cluster import RunningCluster  # noqa: E402

OUT = ROOT / "bench" / "out"
SPEC = CheckpointSpec(weights="random", hidden_size=1024, num_layers=8, num_heads=8, num_kv_heads=8,
                      intermediate_size=512, max_position_embeddings=16384)
KV_BYTES_PER_TOKEN = SPEC.num_layers * SPEC.num_kv_heads * (SPEC.hidden_size // SPEC.num_heads) * 2 * 4
CLIENT = httpx.Client(timeout=600)


def first_decode_token_s(url: str, prompt: list[int], route: str) -> float:
    body = {"model": "model", "prompt": prompt, "max_tokens": 2, "temperature": 0, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    t0 = time.perf_counter()
    with CLIENT.stream("POST", url + "/v1/completions", json=body, headers={"x-splitmind-route": route}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {") and ((json.loads(line[6:]).get("usage") or {}).get("completion_tokens", 0)
                                               >= 2):
                return time.perf_counter() - t0
    raise RuntimeError("the stream ended before its 2nd token")


def kv_counters(url: str) -> tuple[float, float, float, float]:
    """Decode nodes: (transfers, bytes, seconds waited summed, failures)."""
    names = ("splitmind_kv_transfers_total", "splitmind_kv_transfer_bytes_total",
             "splitmind_kv_transfer_seconds_sum", "splitmind_kv_transfer_failures_total")
    transfers, nbytes, seconds, failures = (counter_sum(url, name) for name in names)
    return transfers, nbytes, seconds, failures


def copy_ceiling(nbytes: int, block_tokens: int = 128) -> float:
    """Bytes/s of copying `nbytes` of KV block by block into another cache, in one process."""
    tokens = max(nbytes // KV_BYTES_PER_TOKEN, 1)
    blocks = -(-tokens // block_tokens)
    src = [torch.rand(blocks, SPEC.num_kv_heads, block_tokens, 2 * 128) for _ in range(SPEC.num_layers)]
    dst = [torch.zeros(blocks * 2, SPEC.num_kv_heads, block_tokens, 2 * 128) for _ in range(SPEC.num_layers)]
    idx = torch.arange(blocks) * 2
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for s, d in zip(src, dst, strict=True):
            d.index_copy_(0, idx, s.index_select(0, torch.arange(blocks)))
        best = min(best, time.perf_counter() - t0)
    return sum(s.numel() * 4 for s in src) / best


def push_bandwidth(nbytes: int, block_tokens: int = 128) -> float:
    """Bytes/s of the ZMQ connector's push path with no model: a prefill worker in a process on
    core 0 pushes `nbytes` of blocks (every layer) over TCP loopback to a decode node's receiver
    here on core 1, from its first send to `Done` held in staging (the copy into the blocks is
    the ceiling column's). Best of 3."""
    import multiprocessing as mp
    import os

    from kv_transfer.zmq.plan import Send, ZmqMetadata
    from kv_transfer.zmq.staging import Pushed, Receiver, Staging
    from kv_transfer.zmq.worker import ZmqWorker

    blocks = max(-(-(nbytes // KV_BYTES_PER_TOKEN) // block_tokens), 1)
    shape = (blocks, SPEC.num_kv_heads, block_tokens, 2 * 128)
    layers = [f"model.layers.{i}.self_attn.attn" for i in range(SPEC.num_layers)]
    address = f"tcp://127.0.0.1:{free_port('127.0.0.1')}"

    def sender(go: Any, sent: Any, tid: str) -> None:
        os.sched_setaffinity(0, {0})
        torch.set_num_threads(1)
        kv = {name: torch.rand(shape) for name in layers}
        w = ZmqWorker(blocks, bind=None, lease_s=30, receive_timeout_s=30, max_staging_bytes=1 << 34)
        w.register(kv)
        meta = ZmqMetadata(sends=[Send(tid, address, list(range(blocks)), 0, blocks * block_tokens)])
        go.wait()
        sent.put(time.time())
        for name in layers:
            w.save_layer(meta, name, kv[name])
        w.wait_for_save(meta)
        time.sleep(30)  # killed by the parent once it has the KV (LINGER 0 would drop the rest)

    import zmq

    os.sched_setaffinity(0, {1 if (os.cpu_count() or 1) > 1 else 0})
    staging = Staging(1 << 34, 30)
    receiver = Receiver(zmq.Context(), address, staging)
    receiver.start()
    ctx = mp.get_context("fork")
    best = float("inf")
    try:
        for rep in range(3):
            go, sent = ctx.Event(), ctx.Queue()
            proc = ctx.Process(target=sender, args=(go, sent, f"bw{rep}"), daemon=True)
            proc.start()
            time.sleep(2.0)  # the sender's caches are built
            go.set()
            while not isinstance(staging.take(f"bw{rep}"), Pushed):
                time.sleep(0.0002)
            best = min(best, time.time() - sent.get(timeout=10))
            proc.kill()
    finally:
        receiver.stop()
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return blocks * block_tokens * KV_BYTES_PER_TOKEN / best


def measure(transport: str, model: Path, lengths: list[int], reps: int, work: Path) -> dict[int, dict[str, float]]:
    """`transport`: nixl, zmq, or nixl-tcp (NIXL with UCX_TLS=tcp: how NIXL moves KV between
    machines without RDMA; on one host UCX otherwise takes shared memory)."""
    import os

    max_len = max(lengths) + 64
    if transport == "nixl-tcp":
        os.environ["UCX_TLS"] = "tcp"  # the nodes inherit it
    engine = transport.removesuffix("-tcp")
    config = (f'[engine]\nkv_transport = "{engine}"\nkv_cache_gib = 4\nmax_model_len = {max_len}\n'
              "enable_prefix_caching = false\n[gateway]\nallow_route_override = true\n"
              "prefill_timeout_s = 300\nfirst_token_timeout_s = 300\n")
    print(f"[bench] splitmind up, KV over {transport}: prefill node (core 0) + decode node (core 1)", flush=True)
    cluster = RunningCluster(model, work / transport, prefill=1, config=config)
    rng = random.Random(len(transport))
    out: dict[int, dict[str, float]] = {}
    try:
        cluster.wait_ready()
        for route in ("disaggregated", "colocated"):  # warm both paths
            first_decode_token_s(cluster.url, [rng.randrange(3, 250) for _ in range(64)], route)
        time.sleep(1.2)  # the warm-up's transfer reaches the counters before the first length's "before"
        for n in lengths:
            before = kv_counters(cluster.url)
            pd = [first_decode_token_s(cluster.url, [rng.randrange(3, 250) for _ in range(n)], "disaggregated")
                  for _ in range(reps)]
            time.sleep(1.2)  # the decode node's stats heartbeat carries the last transfers
            after = kv_counters(cluster.url)
            coloc = [first_decode_token_s(cluster.url, [rng.randrange(3, 250) for _ in range(n)], "colocated")
                     for _ in range(reps)]
            moved, nbytes, secs, failed = (a - b for a, b in zip(after, before, strict=True))
            out[n] = {"pd_s": statistics.median(pd), "colocated_s": statistics.median(coloc),
                      "transfers": moved, "bytes_per_transfer": nbytes / moved if moved else 0.0,
                      "decode_wait_s": secs / moved if moved else 0.0, "failures": failed}
            print(f"[bench] {transport} {n} tokens: {out[n]}", flush=True)
    finally:
        cluster.stop()
        if transport == "nixl-tcp":
            os.environ.pop("UCX_TLS", None)
    return out


def nixl_mb_s(measured: dict[str, float]) -> float:
    """NIXL's pull: bytes over its own transfer time."""
    return measured["bytes_per_transfer"] / measured["decode_wait_s"] / 2**20 if measured["decode_wait_s"] else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="512,1024,2048,4096")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    work = OUT / "kv_transfer_run"
    model = build_checkpoint(work / "model", SPEC)
    results = {t: measure(t, model, lengths, args.reps, work) for t in ("nixl", "zmq", "nixl-tcp")}
    rows = []
    for n in lengths:
        nixl, zmq_, tcp = results["nixl"][n], results["zmq"][n], results["nixl-tcp"][n]
        nbytes = zmq_["bytes_per_transfer"] or nixl["bytes_per_transfer"] or n * KV_BYTES_PER_TOKEN
        rows.append({"prompt_len": n, "kv_mb": nbytes / 2**20,
                     "nixl_first_decode_ms": 1000 * nixl["pd_s"], "zmq_first_decode_ms": 1000 * zmq_["pd_s"],
                     "nixl_tcp_first_decode_ms": 1000 * tcp["pd_s"],
                     "colocated_first_decode_ms": 1000 * statistics.mean([nixl["colocated_s"], zmq_["colocated_s"]]),
                     "nixl_wait_ms": 1000 * nixl["decode_wait_s"], "zmq_wait_ms": 1000 * zmq_["decode_wait_s"],
                     "nixl_mb_s": nixl_mb_s(nixl), "nixl_tcp_mb_s": nixl_mb_s(tcp),
                     "zmq_push_mb_s": push_bandwidth(int(nbytes)) / 2**20,
                     "copy_mb_s": copy_ceiling(int(nbytes)) / 2**20,
                     "failures": nixl["failures"] + zmq_["failures"] + tcp["failures"]})
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "kv_transfer.json").write_text(json.dumps(rows, indent=2))
    head = ("prompt", "KV MB", "1st decode tok NIXL ms", "ZMQ ms", "NIXL/TCP ms", "coloc ms", "decode's wait NIXL ms",
            "ZMQ ms", "NIXL pull MB/s", "NIXL/TCP MB/s", "ZMQ push MB/s", "copy MB/s", "failures")
    print("| " + " | ".join(head) + " |\n|" + "---:|" * len(head))
    for r in rows:
        print("| " + " | ".join(f"{v:.0f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    plot(rows)


def plot(rows: list[dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["prompt_len"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("nixl_first_decode_ms", "NIXL (pull; shared memory)"),
                       ("nixl_tcp_first_decode_ms", "NIXL over TCP (UCX_TLS=tcp)"),
                       ("zmq_first_decode_ms", "ZMQ (push)"),
                       ("colocated_first_decode_ms", "colocated (no transfer)")):
        ax.plot(x, [r[key] for r in rows], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("prompt tokens")
    ax.set_ylabel("time to first decode token (ms)")
    ax.set_title("KV transport: 64 KiB of KV per token")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "kv_transfer.png", dpi=120)
    print(f"[bench] wrote {OUT / 'kv_transfer.json'} and {OUT / 'kv_transfer.png'}")


if __name__ == "__main__":
    main()
