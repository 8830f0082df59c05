"""The gateway alone: streamed tokens per second and the delay it adds, against a fake node.

    .venv/bin/python bench/gateway_throughput.py          # about 3 minutes on 2 cores

A real gateway (`python -m api`, the bundled model's tokenizer, pinned to core 0) in front of a
real node server (`splitmind.node.runtime.NodeServer`, its sockets and wire protocol) whose engine
is fake: it emits one token per stream every `interval`, on a fixed schedule, without a model. The
load (many concurrent streams through `/v1/completions`, read with a minimal SSE reader so that
the client costs little) and the fake node share core 1.

Per offered rate it reports what came out (tokens/s), the gateway's CPU time per token (the
number that says how many tokens one gateway core can carry: 1 / that), chunks per token (below 1
when deltas merged), and the delay the path added to each token. The baseline, measured in the same run, is the
fake node alone (its CPU per token) and the schedule itself (the offered rate). The added delay
is each chunk's lateness against the schedule, anchored at the stream's least-late chunk (so it
is jitter and queueing, not the request's set-up). Rows with
staggered starts spread each interval's tokens evenly, as independent clients' would be; in
the steady rows every stream's i-th token falls due in the same instant. A last row has
slow readers, which read in bursts: the gateway should merge their deltas into fewer chunks
rather than queue them. Issue #16's goals: 20,000 tokens/s on one gateway core across 256
streams, p99 added delay under 1 ms.

Two more views of the delay. "Settled" leaves out each row's first quarter, in which hundreds of
requests start at once. "Waiting in the gateway" is the gateway's own histogram
(`splitmind_output_wait_seconds`): output read off the node's socket until its stream took it,
the event loop's queue. And a baseline before the gateway starts: a probe that wants the
gateway's core all the time (another on the other core) measures how much of it the host itself
takes away, and so the delay no gateway could avoid here.

The fake engine takes its pace from the request: `seed` is the interval in microseconds (a bench
convention; nothing else sends this node a request).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import msgspec
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.metrics import histograms_in, quantile  # noqa: E402
from splitmind.config import EngineConfig, GatewayConfig, NodeSpec, WorkerAddress  # noqa: E402
from splitmind.launcher import free_port  # noqa: E402
from splitmind.protocol import GenerateRequest, Role  # noqa: E402

MODEL = ROOT / "models" / "tiny-reasoner"
PYTHON = sys.executable
GATEWAY_CORE, LOAD_CORE = 0, 1
SETTLE = 0.25  # of a row's length: the "settled" columns leave out its start


# ---- the fake node (run as `gateway_throughput.py --fake-node SPEC`) ----------------------------

class PacedEngine:
    """The parts of AsyncLLM a node uses: `generate` emits max_tokens tokens, one every
    `seed` microseconds, each one of `token_ids` (single characters, so the client can count)."""

    def __init__(self, token_ids: list[int], emit_log: str | None = None) -> None:
        self.token_ids = token_ids
        self.emit_log = emit_log
        self.vllm_config = SimpleNamespace(model_config=SimpleNamespace(max_model_len=8192), speculative_config=None)
        self.errored = False

    async def generate(self, prompt: Any, params: Any, request_id: str) -> Any:
        loop = asyncio.get_running_loop()
        interval = (params.seed or 10_000) / 1e6
        n = params.max_tokens
        t0 = loop.time()
        emitted: list[float] = []
        try:
            for i in range(n):
                delay = t0 + (i + 1) * interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                last = i == n - 1
                emitted.append(time.monotonic())
                yield SimpleNamespace(
                    outputs=[SimpleNamespace(token_ids=[self.token_ids[i % len(self.token_ids)]],
                                             finish_reason="length" if last else None, logprobs=None)],
                    finished=last, kv_transfer_params=None, num_cached_tokens=0)
        finally:  # also when the gateway has what it asked for and aborts the rest
            if self.emit_log:
                log_emitted(self.emit_log, prompt["prompt_token_ids"][-1], emitted)


def log_emitted(path: str, key: int, emitted: list[float]) -> None:
    """One line per stream, keyed by its prompt's last token (see run_row). A blocking append of
    a few kB to a temporary file, once per stream, at its end."""
    with open(path, "a") as f:
        f.write(json.dumps([key, emitted]) + "\n")


class Handler:
    role = Role.DECODE

    def sampling_params(self, req: GenerateRequest) -> Any:
        return req.sampling


def fake_node(spec_json: str, token_ids: list[int], emit_log: str | None) -> None:
    # The node imports vllm.inputs at its first request (a real node has vLLM loaded by then): seconds
    # on a cold host with the event loop, and so the heartbeats, stopped, and the gateway would call
    # the fake node dead during the warm-up
    import vllm.inputs  # noqa: F401

    from splitmind.node.counters import EngineCounters
    from splitmind.node.runtime import NodeServer

    spec = msgspec.json.decode(spec_json, type=NodeSpec)
    server = NodeServer(spec, PacedEngine(token_ids, emit_log), Handler(), EngineCounters())  # type: ignore[arg-type]
    asyncio.run(server.serve())


# ---- the load ---------------------------------------------------------------------------------

async def one_stream(port: int, body: bytes, slow_s: float) -> tuple[list[float], list[int]]:
    """One streamed completion over a raw connection: arrival time and characters of each chunk."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body)
        await writer.drain()
        stamps: list[float] = []
        chars: list[int] = []
        buf = b""
        done = False
        while not done:
            if slow_s:
                await asyncio.sleep(slow_s)
            data = await asyncio.wait_for(reader.read(1 << 16), 60)
            if not data:
                break
            now = time.monotonic()
            buf += data
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                start = event.find(b"data: ")
                if start < 0:
                    continue
                payload = event[start + 6:]
                if payload == b"[DONE]":
                    done = True
                    break
                if payload.startswith(b"{"):
                    chunk = json.loads(payload)
                    if "error" in chunk:
                        raise RuntimeError(f"the gateway answered an error: {chunk}")
                    text = chunk["choices"][0]["text"] if chunk.get("choices") else ""
                    if text:
                        stamps.append(now)
                        chars.append(len(text))
        return stamps, chars
    finally:
        writer.close()


def added_delays(stamps: list[float], chars: list[int], interval_s: float) -> list[float]:
    """Each chunk's lateness against the fake node's schedule. The schedule's start is not seen
    from here, so it is anchored at the stream's earliest chunk relative to it: the chunk whose
    last token was due at start + k * interval arrived at t; t - k * interval is that chunk's
    estimate of the start, the smallest estimate is the start, and every other chunk's excess
    over it is the delay the path added to it."""
    starts = []
    tokens = 0
    for t, n in zip(stamps, chars, strict=True):
        tokens += n
        starts.append(t - tokens * interval_s)
    if not starts:
        return []
    start = min(starts)
    return [s - start for s in starts]


def cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def path_delays(stamps: list[float], chars: list[int], emitted: list[float]) -> list[float]:
    """Each chunk's arrival less the moment the fake engine handed over the chunk's last token:
    the node server's send, the gateway and the client's read, without the fake engine's own
    lateness against its schedule (which `added_delays` includes)."""
    out, tokens = [], 0
    for t, n in zip(stamps, chars, strict=True):
        tokens += n
        out.append(t - emitted[min(tokens, len(emitted)) - 1])
    return out


async def run_row(port: int, streams: int, tokens: int, interval_s: float, slow_s: float,
                  gateway: int, node: int, emit_log: Path, stagger: bool = False) -> dict[str, float]:
    """`stagger`: stream k starts k / streams of an interval after the first, so the streams'
    tokens are spread over each interval as independent clients' would be, instead of all
    streams' i-th tokens falling due in the same instant (a burst of `streams` tokens)."""
    def body(k: int) -> bytes:  # the prompt's last token keys the stream in the fake node's emit log
        return json.dumps({"model": "m", "prompt": [1, 2, 3, 4 + k], "max_tokens": tokens, "stream": True,
                           "temperature": 0, "seed": int(interval_s * 1e6), "ignore_eos": True}).encode()

    async def started(k: int) -> tuple[list[float], list[int]]:
        if stagger:
            await asyncio.sleep(k * interval_s / streams)
        return await one_stream(port, body(k), slow_s)

    emit_log.write_text("")  # noqa: ASYNC240 -- before the streams start, not in what is measured
    g0, n0, t0 = cpu_s(gateway), cpu_s(node), time.monotonic()
    settled_at = t0 + SETTLE * tokens * interval_s
    waits_settled = asyncio.create_task(output_waits(port, settled_at))
    results = await asyncio.gather(*(started(k) for k in range(streams)))
    wall = time.monotonic() - t0
    g1, n1 = cpu_s(gateway), cpu_s(node)
    got = sum(sum(c) for _, c in results)
    chunks = sum(len(c) for _, c in results)
    delays = sorted(d for s, c in results for d in added_delays(s, c, interval_s))
    for _ in range(100):  # a stream's line is written when the node's request ends, just after the client's
        lines = emit_log.read_text().splitlines()  # noqa: ASYNC240 -- after the streams ended
        if len(lines) >= streams:
            break
        await asyncio.sleep(0.05)
    emitted = {key - 4: times for key, times in map(json.loads, lines)}
    if len(emitted) != streams:
        raise RuntimeError(f"the fake node logged {len(emitted)} of {streams} streams")
    path = sorted(d for k, (s, c) in enumerate(results) for d in path_delays(s, c, emitted[k]))
    # Settled: the chunks that arrived once every stream had started and the gateway had worked
    # off the start (hundreds of requests in one interval), and the gateway's own waits meanwhile
    before = dict(await waits_settled)
    waits = [(le, n - before.get(le, 0.0)) for le, n in await output_waits(port, 0.0)]
    settled = sorted(d for k, (s, c) in enumerate(results)
                     for t, d in zip(s, added_delays(s, c, interval_s), strict=True) if t >= settled_at)
    settled_path = sorted(d for k, (s, c) in enumerate(results)
                          for t, d in zip(s, path_delays(s, c, emitted[k]), strict=True) if t >= settled_at)

    def pct(values: list[float], q: float) -> float:
        return 1e3 * values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    return {"streams": streams, "interval_ms": interval_s * 1e3, "offered": streams / interval_s,
            "delivered": got / wall, "complete": got / (streams * tokens), "gw_cpu": (g1 - g0) / wall,
            "gw_us_per_token": 1e6 * (g1 - g0) / max(got, 1), "node_us_per_token": 1e6 * (n1 - n0) / max(got, 1),
            "chunks_per_token": chunks / max(got, 1), "p50_ms": pct(delays, 0.5), "p99_ms": pct(delays, 0.99),
            "path_p50_ms": pct(path, 0.5), "path_p99_ms": pct(path, 0.99),
            "settled_p99_ms": pct(settled, 0.99), "settled_path_p99_ms": pct(settled_path, 0.99),
            "wait_p50_ms": 1e3 * quantile(waits, 0.5), "wait_p99_ms": 1e3 * quantile(waits, 0.99)}


async def output_waits(port: int, at: float) -> list[tuple[float, float]]:
    """The gateway's `splitmind_output_wait_seconds` at monotonic time `at`, cumulative buckets:
    how long output waited inside the gateway between its worker's socket and its stream's reader."""
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    name = "splitmind_output_wait_seconds"
    async with httpx.AsyncClient(timeout=30) as client:
        found = histograms_in((await client.get(f"http://127.0.0.1:{port}/metrics")).text, (name,))
    return found[name][0] if name in found else []


# ---- the host's own floor -----------------------------------------------------------------------

def host_probe(seconds: float) -> None:
    """Run as `--host-probe SECONDS`: want the CPU the whole time and print, as JSON, every gap
    over 0.2 ms in which this process did not get it (the VM or kernel ran something else)."""
    gaps: list[float] = []
    now = last = time.perf_counter()
    end = now + seconds
    while now < end:
        now = time.perf_counter()
        if now - last > 2e-4:
            gaps.append(now - last)
        last = now
    print(json.dumps(gaps))


def residual_quantile(gaps: list[float], seconds: float, q: float) -> float:
    """The q-quantile of how long something arriving at a random instant waits for a process that
    is never idle: it lands in a gap of length g with probability g / seconds and then waits out
    the rest of it, so P(wait > x) = sum(max(0, g - x)) / seconds."""
    lo, hi = 0.0, max(gaps, default=0.0)
    for _ in range(40):
        mid = (lo + hi) / 2
        if sum(g - mid for g in gaps if g > mid) / seconds > 1 - q:
            lo = mid
        else:
            hi = mid
    return hi


def host_floor(seconds: float) -> dict[str, float]:
    """A spinning probe on each core at once, as the load keeps both busy: the share of time the
    gateway's core was taken away, and the delay that alone adds to a token (p50, p99) - what a
    gateway that costs nothing would show here."""
    probes = [subprocess.Popen([PYTHON, __file__, "--host-probe", str(seconds)], stdout=subprocess.PIPE,
                               preexec_fn=pinned(core)) for core in (GATEWAY_CORE, LOAD_CORE)]
    gaps = json.loads(probes[0].communicate(timeout=seconds + 60)[0])
    probes[1].communicate(timeout=60)
    return {"lost": sum(gaps) / seconds, "max_ms": 1e3 * max(gaps, default=0.0),
            "p50_ms": 1e3 * residual_quantile(gaps, seconds, 0.5),
            "p99_ms": 1e3 * residual_quantile(gaps, seconds, 0.99)}


def single_char_tokens() -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MODEL)
    ids = [tok.convert_tokens_to_ids(c) for c in "abcdefghijklmnopqrstuvwxyz"]
    ids = [i for i in ids if isinstance(i, int) and i != tok.unk_token_id and len(tok.decode([i])) == 1]
    assert len(ids) >= 10, "the tokenizer has no single-letter tokens"
    return ids


def pinned(core: int) -> Any:
    return lambda: os.sched_setaffinity(0, {core})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=200, help="per stream")
    ap.add_argument("--intervals-ms", default="100,40,20,12.8,8", help="per stream: the offered rates")
    ap.add_argument("--staggered-ms", default="100,40", help="the same, the streams' starts spread over one")
    ap.add_argument("--slow-streams", type=int, default=32)
    ap.add_argument("--host-seconds", type=float, default=10, help="the host's floor: probe for this long")
    ap.add_argument("--host-probe", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--fake-node", help=argparse.SUPPRESS)
    ap.add_argument("--token-ids", help=argparse.SUPPRESS)
    ap.add_argument("--emit-log", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.fake_node:
        fake_node(args.fake_node, json.loads(args.token_ids), args.emit_log)
        return
    if args.host_probe:
        host_probe(args.host_probe)
        return
    floor = host_floor(args.host_seconds)
    print(f"[gateway_throughput] this host, both cores spinning for {args.host_seconds:g} s: core {GATEWAY_CORE} "
          f"lost {floor['lost']:.1%} of its time (longest gap {floor['max_ms']:.1f} ms), which alone delays a "
          f"token arriving at a random moment by p50 {floor['p50_ms']:.2f} / p99 {floor['p99_ms']:.2f} ms", flush=True)
    ids = single_char_tokens()
    rpc, stats, port = free_port("127.0.0.1"), free_port("127.0.0.1"), free_port("127.0.0.1")
    spec = NodeSpec("decode-0", Role.DECODE, str(MODEL), EngineConfig(), f"tcp://127.0.0.1:{rpc}",
                    f"tcp://127.0.0.1:{stats}", "127.0.0.1", free_port("127.0.0.1"))
    gw = GatewayConfig(model=str(MODEL), served_model_name="m", host="127.0.0.1", port=port,
                       workers=(WorkerAddress("decode-0", Role.DECODE, spec.rpc_address, spec.stats_address),))
    os.sched_setaffinity(0, {LOAD_CORE})
    with tempfile.TemporaryDirectory(prefix="gw-bench-") as tmp:
        logs = [open(Path(tmp) / name, "wb") for name in ("node.log", "gateway.log")]
        emit_log = Path(tmp) / "emitted.jsonl"
        node = subprocess.Popen([PYTHON, __file__, "--fake-node", msgspec.json.encode(spec).decode(),
                                 "--token-ids", json.dumps(ids), "--emit-log", str(emit_log)],
                                stdout=logs[0], stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=pinned(LOAD_CORE))
        gateway = subprocess.Popen([PYTHON, "-m", "api", "--config", msgspec.json.encode(gw).decode()],
                                   stdout=logs[1], stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=pinned(GATEWAY_CORE))
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or gateway.poll() is not None or node.poll() is not None:
                    raise RuntimeError("gateway or fake node did not come up:\n"
                                       + (Path(tmp) / "gateway.log").read_text()[-3000:]
                                       + (Path(tmp) / "node.log").read_text()[-3000:])
                time.sleep(0.5)
            print(f"[gateway_throughput] gateway on core {GATEWAY_CORE}; fake node and load on core {LOAD_CORE}",
                  flush=True)
            warm = asyncio.run(run_row(port, 8, 20, 0.01, 0.0, gateway.pid, node.pid, emit_log))
            if warm["complete"] < 1:
                raise RuntimeError(f"the warm-up streams came back incomplete: {warm}")
            rows = []
            for ms in (float(x) for x in args.intervals_ms.split(",")):
                row = asyncio.run(run_row(port, args.streams, args.tokens, ms / 1e3, 0.0, gateway.pid, node.pid,
                                          emit_log))
                rows.append(("steady", row))
                print(f"[gateway_throughput] {args.streams} streams every {ms:g} ms: "
                      f"{row['delivered']:.0f} tokens/s", flush=True)
            for ms in (float(x) for x in args.staggered_ms.split(",") if x):
                row = asyncio.run(run_row(port, args.streams, args.tokens, ms / 1e3, 0.0, gateway.pid, node.pid,
                                          emit_log, stagger=True))
                rows.append(("staggered starts", row))
                print(f"[gateway_throughput] {args.streams} staggered streams every {ms:g} ms: "
                      f"{row['delivered']:.0f} tokens/s, p99 added delay {row['p99_ms']:.2f} ms "
                      f"({row['path_p99_ms']:.2f} from the node's send; settled {row['settled_p99_ms']:.2f}, "
                      f"{row['wait_p99_ms']:.2f} of it waiting in the gateway)", flush=True)
            if args.slow_streams:
                slow = asyncio.run(run_row(port, args.slow_streams, args.tokens, 0.002, 0.05, gateway.pid, node.pid,
                                           emit_log))
                rows.append(("slow readers (read every 50 ms)", slow))
        finally:
            for p in (gateway, node):
                p.terminate()
            for p in (gateway, node):
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
    print()
    print("| load | streams | interval ms | offered tok/s | delivered tok/s | complete | gateway CPU (cores) "
          "| gateway µs CPU/token | fake node µs CPU/token | chunks/token | added delay p50 ms | p99 ms "
          "| from the node's send p50 ms | p99 ms | settled: added p99 ms | from the node's send p99 ms "
          "| waiting in the gateway p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['streams']:.0f} | {r['interval_ms']:g} | {r['offered']:.0f} | {r['delivered']:.0f} "
              f"| {r['complete']:.0%} | {r['gw_cpu']:.2f} | {r['gw_us_per_token']:.1f} | {r['node_us_per_token']:.1f} "
              f"| {r['chunks_per_token']:.2f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
              f"| {r['path_p50_ms']:.2f} | {r['path_p99_ms']:.2f} | {r['settled_p99_ms']:.2f} "
              f"| {r['settled_path_p99_ms']:.2f} | {r['wait_p50_ms']:.2f} | {r['wait_p99_ms']:.2f} |")
    print(f"\nsettled: chunks that arrived after the first {SETTLE:.0%} of a row (every stream started, the start "
          "worked off); waiting in the gateway: its splitmind_output_wait_seconds over the same span")
    unmerged = [r["gw_us_per_token"] for _, r in rows if r["chunks_per_token"] >= 0.97]
    print(f"the host's own floor (a probe that wants core {GATEWAY_CORE} all the time, before the gateway ran): "
          f"p50 {floor['p50_ms']:.2f} / p99 {floor['p99_ms']:.2f} ms added to a token, {floor['lost']:.1%} of the "
          "core's time lost to the VM")
    most = max((r for _, r in rows), key=lambda r: r["delivered"])
    if unmerged:
        print(f"\none chunk per token: {min(unmerged):.1f} us of gateway CPU each, so one core carries "
              f"{1e6 / min(unmerged):,.0f} tokens/s unmerged")
    print(f"most delivered: {most['delivered']:,.0f} tokens/s of {most['offered']:,.0f} offered "
          f"({most['chunks_per_token']:.2f} chunks per token; issue #16's goal: 20,000 across 256 streams)")


if __name__ == "__main__":
    main()
