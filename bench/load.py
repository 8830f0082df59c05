"""Open-loop load for the routing benchmarks (bench/routing_mix.py, bench/chaos.py).

A seeded schedule of streamed completions, sent at their planned times whatever the server's
speed (open loop: a slow server meets the same arrivals as a fast one, as it would in
production), and per request what a client measures: status, TTFT, the gaps between chunks,
and the workers that served it (the stream's closing `: served-by` comment).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REQUEST_TIMEOUT_S = 300.0
# The routing benchmarks' cluster: 2 prefill + 2 decode nodes, 1 GiB of KV each, prompts to 4k
CLUSTER_CONFIG = "[engine]\nkv_cache_gib = 1\nmax_model_len = 4096\n"


def bench_model(out_dir: Path) -> Path:
    """The routing benchmarks' model: random weights, 4 layers of width 256, positions to 8k."""
    from models.test_checkpoints import CheckpointSpec, build_checkpoint

    return build_checkpoint(out_dir, CheckpointSpec(weights="random", hidden_size=256, num_layers=4,
                                                    intermediate_size=768, max_position_embeddings=8192))


@dataclass(frozen=True)
class Planned:
    at_s: float  # when to send it, from the start of the run
    kind: str  # the workload class, for per-class tables
    prompt: list[int]
    max_tokens: int


@dataclass
class Outcome:
    kind: str
    sent_s: float
    status: int | str = 0  # the HTTP status, or what the client saw instead
    ttft_s: float | None = None
    gaps_s: list[float] = field(default_factory=list)
    end_s: float | None = None
    tokens: int = 0
    served_by: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error


def mixed_schedule(rng: random.Random, *, seconds: float, rate: float, documents: int = 4,
                   doc_tokens: int = 2048, short_tokens: int = 32, reasoning_tokens: int = 256,
                   vocab: tuple[int, int] = (3, 250)) -> list[Planned]:
    """Poisson arrivals at `rate` per second for `seconds`, in three classes:
    - `short`: a fresh `short_tokens` prompt, 32 tokens out (a chat turn);
    - `document`: one of `documents` shared 2k-token documents plus a fresh question, 32 out
      (the prefix a prefix-aware router can keep on one prefill node);
    - `reasoning`: a fresh short prompt and `reasoning_tokens` out (a long chain of thought:
      decode load that request counts do not see)."""
    lo, hi = vocab
    docs = [[rng.randrange(lo, hi) for _ in range(doc_tokens)] for _ in range(documents)]
    out: list[Planned] = []
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= seconds:
            return out
        kind = rng.choices(("short", "document", "reasoning"), weights=(2, 1, 1))[0]
        fresh = [rng.randrange(lo, hi) for _ in range(short_tokens)]
        if kind == "document":
            out.append(Planned(t, kind, rng.choice(docs) + fresh, 32))
        elif kind == "reasoning":
            out.append(Planned(t, kind, fresh, reasoning_tokens))
        else:
            out.append(Planned(t, kind, fresh, 32))


async def _one(http: httpx.AsyncClient, url: str, p: Planned, start: float, temperature: float) -> Outcome:
    await asyncio.sleep(max(0.0, start + p.at_s - time.perf_counter()))
    t0 = time.perf_counter()
    out = Outcome(p.kind, t0 - start)
    body = {"model": "model", "prompt": p.prompt, "max_tokens": p.max_tokens, "stream": True,
            "ignore_eos": True, "temperature": temperature}
    last: float | None = None
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S), http.stream("POST", url + "/v1/completions", json=body) as r:
            out.status = r.status_code
            async for line in r.aiter_lines():
                now = time.perf_counter()
                if line.startswith(": served-by"):
                    out.served_by = line[len(": served-by"):].strip()
                elif line.startswith("data: {"):
                    chunk = json.loads(line[len("data: "):])
                    if "error" in chunk:
                        out.error = str(chunk["error"].get("message", chunk["error"]))[:200]
                        continue
                    if out.ttft_s is None:
                        out.ttft_s = now - t0
                    elif last is not None:
                        out.gaps_s.append(now - last)
                    last = now
                    out.tokens += 1
    except (httpx.HTTPError, TimeoutError) as exc:
        out.status = type(exc).__name__
    out.end_s = time.perf_counter() - start
    return out


async def _run(url: str, schedule: Sequence[Planned], temperature: float) -> list[Outcome]:
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as http:
        start = time.perf_counter()
        return await asyncio.gather(*(_one(http, url, p, start, temperature) for p in schedule))


def run(url: str, schedule: Sequence[Planned], temperature: float = 1.0) -> list[Outcome]:
    """Sends `schedule` to the gateway at `url`; every request's outcome, in schedule order.
    The default temperature is OpenAI's (1.0), as users call it."""
    return asyncio.run(_run(url, schedule, temperature))


def percentile(values: Sequence[float], q: float) -> float:
    """The `q` quantile (0-1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(outcomes: Sequence[Outcome]) -> dict[str, float]:
    """Success rate, TTFT and ITL percentiles (ms) and output tokens per second."""
    ok = [o for o in outcomes if o.ok]
    ttft = [o.ttft_s for o in ok if o.ttft_s is not None]
    gaps = list(itertools.chain.from_iterable(o.gaps_s for o in ok))
    ends = [o.end_s for o in outcomes if o.end_s is not None]
    span = max(ends) - min(o.sent_s for o in outcomes) if ends else float("nan")
    return {
        "requests": len(outcomes), "ok": len(ok), "success": len(ok) / len(outcomes) if outcomes else float("nan"),
        "ttft_p50_ms": 1000 * percentile(ttft, 0.5), "ttft_p90_ms": 1000 * percentile(ttft, 0.9),
        "ttft_p99_ms": 1000 * percentile(ttft, 0.99),
        "itl_p50_ms": 1000 * percentile(gaps, 0.5), "itl_p99_ms": 1000 * percentile(gaps, 0.99),
        "mean_ms": 1000 * statistics.mean(o.end_s - o.sent_s for o in ok if o.end_s is not None) if ok
        else float("nan"),
        "tokens_per_s": sum(o.tokens for o in ok) / span if span and span == span else float("nan"),
    }
