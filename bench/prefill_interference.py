"""Prefill latency on a prefill node: alone vs. right after a disaggregated request.

    .venv/bin/python bench/prefill_interference.py      # about 2 minutes on 2 cores

Talks to the nodes over the wire protocol (no gateway), so only the nodes are measured. It
starts one prefill node (core 0) and one decode node (core 1) on a bench checkpoint, then, in
one run:
- "prefill alone": 512-token prompts to the prefill node, one at a time (the baseline);
- "prefill after PD": the same, each followed by a 63-token decode on the decode node that
  pulls the prompt's KV over NIXL.
Prints the median and max of each. See docs/benchmarks.md for what the gap means.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import zmq.asyncio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.test_checkpoints import CheckpointSpec, build_checkpoint  # noqa: E402
from router.client import WorkerClient  # noqa: E402
from router.request_stream import RequestStream  # noqa: E402
from splitmind.config import EngineConfig, NodeSpec, WorkerAddress  # noqa: E402
from splitmind.launcher import free_port  # noqa: E402
from splitmind.protocol import GenerateRequest, Role, Sampling, TokenDelta  # noqa: E402


async def finish(stream: RequestStream) -> TokenDelta:
    while True:
        delta = await stream.next(120)
        if delta.finish_reason is not None:
            return delta


async def measure(specs: list[NodeSpec], n: int, length: int) -> dict[str, list[float]]:
    ctx = zmq.asyncio.Context()
    prefill, decode = (WorkerClient(WorkerAddress(s.worker_id, s.role, s.rpc_address, s.stats_address), ctx)
                       for s in specs)
    for c in (prefill, decode):
        c.start()
        while True:
            try:
                await c.health(2)
                break
            except TimeoutError:
                continue
    rng = random.Random(0)
    out: dict[str, list[float]] = {"prefill alone": [], "prefill after PD": []}
    sampling = Sampling(max_tokens=64, temperature=0.0, ignore_eos=True)
    for mode in ("prefill alone", "prefill after PD", "prefill alone", "prefill after PD"):
        for _ in range(n):
            rid = f"r{rng.getrandbits(48):x}"
            prompt = [rng.randrange(3, 250) for _ in range(length)]
            t0 = time.perf_counter()
            first = await finish(await prefill.open(GenerateRequest(rid, prompt, sampling)))
            out[mode].append(time.perf_counter() - t0)
            if mode == "prefill after PD":
                rest = msgspec.structs.replace(sampling, max_tokens=63)
                await finish(await decode.open(GenerateRequest(rid, prompt + first.token_ids, rest, first.kv_transfer)))
            await asyncio.sleep(0.2)
    for c in (prefill, decode):
        await c.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=8, help="per mode and round (two rounds)")
    ap.add_argument("--prompt-len", type=int, default=512)
    args = ap.parse_args()
    work = ROOT / "bench" / "out" / "prefill_interference"
    model = build_checkpoint(work / "model", CheckpointSpec(weights="random", hidden_size=256, num_layers=4,
                                                            intermediate_size=768))
    engine = EngineConfig(kv_cache_gib=1, max_model_len=args.prompt_len + 128, enable_prefix_caching=False)
    specs = [NodeSpec(f"{role.name.lower()}-0", role, str(model), engine, f"tcp://127.0.0.1:{free_port('127.0.0.1')}",
                      f"tcp://127.0.0.1:{free_port('127.0.0.1')}", "127.0.0.1", free_port("127.0.0.1"), cpu)
             for role, cpu in ((Role.PREFILL, "0"), (Role.DECODE, "1"))]
    work.mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen([sys.executable, "-m", "prefill_node" if s.role == Role.PREFILL else "decode_node",
                               "--spec", msgspec.json.encode(s).decode()], cwd=ROOT, start_new_session=True,
                              stdout=open(work / f"{s.worker_id}.log", "wb"), stderr=subprocess.STDOUT)
             for s in specs]
    try:
        results = asyncio.run(measure(specs, args.requests, args.prompt_len))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    print(f"\nprefill of {args.prompt_len} tokens on the prefill node, ms ({2 * args.requests} requests each)\n")
    print(f"{'mode':>18} | {'median':>8} | {'max':>8}")
    for mode, xs in results.items():
        print(f"{mode:>18} | {statistics.median(xs) * 1000:>8.1f} | {max(xs) * 1000:>8.1f}")


if __name__ == "__main__":
    main()
