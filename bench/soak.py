"""Soak: a bounded run of mixed valid, invalid and cancelled requests; memory and descriptors
must stay flat and nothing may get a 5xx.

    .venv/bin/python -m bench.soak                    # 30 minutes on its own `splitmind up`
    .venv/bin/python -m bench.soak --minutes 10       # shorter
    .venv/bin/python -m bench.soak --url http://127.0.0.1:8000   # a running cluster

Without --url it starts `splitmind up` (the bundled model, default settings) with its logs in
a temporary folder, and stops it at the end. `--clients` threads (4) send, until the time is
up, a seeded mix of: chat completions streamed and not, at the default temperature (1.0) and
at 0; completions; invalid requests (bad JSON, an unknown field, huge integers, a wrong model,
a `chat_template` in `chat_template_kwargs`, a body past `max_body_bytes`); and cancelled
ones (a stream closed after a few chunks, a request whose client gives up after 0.2 s).

Every `--sample-s` (10 s) it samples the resident memory (RSS) and open file descriptors of the
gateway and of each node with its children (vLLM's engine processes), and the workers' load
from /admin/workers. The baseline is the median of the first three samples after the warm-up
(a minute, or the first 10% of a shorter run: allocators, caches and compiled graphs settle),
the end the median of the last three. PASS: every process group's RSS grew less than 5%, its
descriptors end within `FD_SLACK` of the start, no response was a 5xx, no valid request timed
out, and the workers are idle afterwards. Prints a table and writes bench/out/soak.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import BUNDLED_MODEL  # noqa: E402
from tests.e2e.cluster import RunningCluster  # noqa: E402

OUT = ROOT / "bench" / "out"
RSS_GROWTH_LIMIT = 0.05
FD_SLACK = 8  # connections in flight when a sample is taken
OVERSIZED = b'{"model": "m", "prompt": "' + b"x" * (8 * 1024 * 1024 + 16) + b'"}'  # past max_body_bytes
HUGE_NUMBER = b'{"model": "%s", "prompt": "x", "max_tokens": ' + b"9" * 5000 + b"}"  # past Python's int limit
REQUEST_TIMEOUT_S = 120.0
# kind -> weight: mostly real work, a fifth invalid, a sixth cancelled
MIX = {"chat": 10, "chat_t0": 6, "chat_stream": 10, "chat_stream_t0": 6, "completion": 6, "completion_stream": 4,
       "bad_json": 2, "unknown_field": 2, "huge_int": 2, "wrong_model": 2, "chat_template": 2, "oversized": 1,
       "stream_cancelled": 5, "client_timeout": 4}
EXPECTED_CLIENT_GIVE_UP = {"stream_cancelled", "client_timeout"}


def question(rng: random.Random) -> str:
    return f"What is {rng.randrange(10, 99999)}+{rng.randrange(10, 99999)}?"


def send(http: httpx.Client, kind: str, model: str, rng: random.Random) -> str:
    """Send one request of `kind`; its status code, or what the client saw instead."""
    chat: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": question(rng)}],
                               "max_tokens": rng.randrange(16, 160)}
    if kind.endswith("_t0"):
        chat["temperature"] = 0
    completion: dict[str, object] = {"model": model, "prompt": question(rng), "max_tokens": rng.randrange(16, 64)}
    huge: list[dict[str, object] | bytes] = [{**chat, "max_tokens": 10**30}, {**chat, "seed": 2**70},
                                             HUGE_NUMBER % model.encode()]
    bodies: dict[str, dict[str, object] | bytes] = {
        "chat": chat, "chat_t0": chat, "chat_stream": {**chat, "stream": True},
        "chat_stream_t0": {**chat, "stream": True}, "completion": completion,
        "completion_stream": {**completion, "stream": True},
        "bad_json": b'{"model": "' + model.encode() + b'", "messages": [',
        "unknown_field": {**chat, "temprature": 0.5},
        "huge_int": rng.choice(huge),
        "wrong_model": {**chat, "model": "gpt-9"},
        "chat_template": {**chat, "chat_template_kwargs": {"chat_template": "{{ 7 * 7 }}"}},
        "oversized": OVERSIZED,
        "stream_cancelled": {**chat, "stream": True, "max_tokens": 512},
        "client_timeout": {**chat, "max_tokens": 512},
    }
    body = bodies[kind]
    path = "/v1/completions" if kind.startswith("completion") or kind == "oversized" else "/v1/chat/completions"
    kwargs: dict[str, object] = {"content": body} if isinstance(body, bytes) else {"json": body}
    headers = {"content-type": "application/json"}
    try:
        if kind == "client_timeout":
            return str(http.post(path, headers=headers, timeout=0.2, **kwargs).status_code)  # type: ignore[arg-type]
        if isinstance(body, dict) and body.get("stream"):
            with http.stream("POST", path, headers=headers, **kwargs) as r:  # type: ignore[arg-type]
                for i, _ in enumerate(r.iter_lines()):
                    if kind == "stream_cancelled" and i >= 3:
                        break  # leaving the block closes the connection mid-stream
            return str(r.status_code)
        return str(http.post(path, headers=headers, **kwargs).status_code)  # type: ignore[arg-type]
    except httpx.TimeoutException:
        return "client_timeout"
    except httpx.TransportError as exc:
        return f"transport_error:{type(exc).__name__}"


class Load:
    def __init__(self, url: str, model: str, clients: int, seed: int) -> None:
        self.url, self.model, self.clients, self.seed = url, model, clients, seed
        self.results: dict[str, Counter[str]] = defaultdict(Counter)
        self.latency_s: dict[str, list[float]] = defaultdict(list)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        kinds, weights = list(MIX), list(MIX.values())
        with httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT_S) as http:
            while not self.stop.is_set():
                kind = rng.choices(kinds, weights)[0]
                t0 = time.perf_counter()
                status = send(http, kind, self.model, rng)
                with self.lock:
                    self.results[kind][status] += 1
                    self.latency_s[kind].append(time.perf_counter() - t0)

    def count(self, *, only_5xx: bool = False) -> int:
        with self.lock:
            return sum(n for c in self.results.values() for s, n in c.items() if not only_5xx or is_5xx(s))


def is_5xx(status: str) -> bool:
    return status.isdigit() and int(status) >= 500


def process_groups(url: str, launcher_pid: int | None) -> dict[str, psutil.Process]:
    """{"gateway": p, "<worker id>": p}: the gateway and each node process."""
    workers = httpx.get(url + "/admin/workers", timeout=10).json()
    groups = {w["id"]: psutil.Process(w["pid"]) for w in workers if w["pid"]}
    if launcher_pid is not None:
        gateway = [c for c in psutil.Process(launcher_pid).children()
                   if "api" in c.cmdline() and c.pid not in {p.pid for p in groups.values()}]
    else:  # whoever listens on the URL's port
        port = urlsplit(url).port
        gateway = [psutil.Process(c.pid) for c in psutil.net_connections("tcp")
                   if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid]
    if not gateway:
        sys.exit("cannot find the gateway's process")
    return {"gateway": gateway[0], **groups}


def measure(proc: psutil.Process) -> tuple[float, int, dict[str, float]]:
    """(RSS in MiB, open fds) of a process and its children, and each one's RSS in MiB (which
    of them grows). Pages shared between them count once per process, as RSS does."""
    rss, fds, each = 0, 0, {}
    for p in [proc, *proc.children(recursive=True)]:
        try:
            with p.oneshot():
                rss += p.memory_info().rss
                fds += p.num_fds()
                each[f"{p.pid} {p.name()}"] = p.memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            pass
    return rss / 2**20, fds, each


def load_of(url: str) -> tuple[int, int, int]:
    workers = httpx.get(url + "/admin/workers", timeout=10).json()
    return (sum(w["running_requests"] for w in workers), sum(w["waiting_requests"] for w in workers),
            sum(w["open_streams"] for w in workers))


def soak(url: str, launcher_pid: int | None, args: argparse.Namespace) -> dict[str, object]:
    model = httpx.get(url + "/v1/models", timeout=10).json()["data"][0]["id"]
    groups = process_groups(url, launcher_pid)
    duration_s = args.minutes * 60
    warmup_s = min(60.0, duration_s * 0.1)
    load = Load(url, model, args.clients, args.seed)
    print(f"[soak] {args.minutes:g} min, {args.clients} clients, warm-up {warmup_s:.0f}s, model {model}, "
          f"processes {', '.join(f'{k}={p.pid}' for k, p in groups.items())}", flush=True)
    t0 = time.monotonic()
    for t in load.threads:
        t.start()
    samples: list[dict[str, object]] = []
    while (elapsed := time.monotonic() - t0) < duration_s:
        time.sleep(min(args.sample_s, max(0.0, duration_s - elapsed)))
        running, waiting, streams = load_now = load_of(url)
        sample: dict[str, object] = {"t_s": round(time.monotonic() - t0, 1),
                                     **{k: measure(p) for k, p in groups.items()}, "load": load_now,
                                     "requests": load.count(), "5xx": load.count(only_5xx=True)}
        samples.append(sample)
        mem = "  ".join(f"{k} {sample[k][0]:.0f} MiB {sample[k][1]} fds" for k in groups)  # type: ignore[index]
        print(f"[soak] {sample['t_s']:>6.0f}s  requests {sample['requests']:>6}  5xx {sample['5xx']}  {mem}  "
              f"running {running} waiting {waiting} streams {streams}", flush=True)
    load.stop.set()
    for t in load.threads:
        t.join(REQUEST_TIMEOUT_S + 10)
    idle_deadline = time.monotonic() + 15
    while (idle := load_of(url)) != (0, 0, 0) and time.monotonic() < idle_deadline:
        time.sleep(0.5)
    return summarize(load, groups, samples, warmup_s, idle, args)


def summarize(load: Load, groups: dict[str, psutil.Process], samples: list[dict[str, object]], warmup_s: float,
              idle: tuple[int, int, int], args: argparse.Namespace) -> dict[str, object]:
    after = [s for s in samples if s["t_s"] >= warmup_s] or samples  # type: ignore[operator]
    first, last = after[:3], after[-3:]
    print(f"\n{'kind':<18} {'requests':>8} {'median s':>9}  statuses")
    for kind in MIX:
        statuses = "  ".join(f"{s}:{n}" for s, n in sorted(load.results[kind].items()))
        median_s = statistics.median(load.latency_s[kind]) if load.latency_s[kind] else 0.0
        print(f"{kind:<18} {sum(load.results[kind].values()):>8} {median_s:>9.2f}  {statuses}")
    n_5xx = load.count(only_5xx=True)
    timeouts = sum(n for k, c in load.results.items() if k not in EXPECTED_CLIENT_GIVE_UP
                   for s, n in c.items() if not s.isdigit())
    print(f"\ntotal {load.count()} requests in {samples[-1]['t_s']}s, 5xx: {n_5xx}, "
          f"valid requests timed out or broken: {timeouts}")
    print(f"\n{'process':<26} {'RSS start MiB':>13} {'RSS end MiB':>12} {'growth':>8} {'fds start':>10} {'fds end':>8}")
    verdicts = {"zero 5xx": n_5xx == 0, "no valid request timed out": timeouts == 0,
                f"idle afterwards (running, waiting, open streams: {idle})": idle == (0, 0, 0)}
    table = {}
    for name in groups:
        rss0 = statistics.median(s[name][0] for s in first)  # type: ignore[index]
        rss1 = statistics.median(s[name][0] for s in last)  # type: ignore[index]
        fd0 = int(statistics.median(s[name][1] for s in first))  # type: ignore[index]
        fd1 = int(statistics.median(s[name][1] for s in last))  # type: ignore[index]
        growth = (rss1 - rss0) / rss0
        table[name] = {"rss_start_mib": rss0, "rss_end_mib": rss1, "growth": growth, "fds_start": fd0, "fds_end": fd1}
        verdicts[f"{name} RSS growth < 5%"] = growth < RSS_GROWTH_LIMIT
        verdicts[f"{name} fds stable"] = fd1 <= fd0 + FD_SLACK
        print(f"{name:<26} {rss0:>13.1f} {rss1:>12.1f} {growth:>+8.2%} {fd0:>10} {fd1:>8}")
        for proc in first[0][name][2]:  # type: ignore[index]
            each0 = statistics.median(s[name][2].get(proc, 0.0) for s in first)  # type: ignore[index]
            each1 = statistics.median(s[name][2].get(proc, 0.0) for s in last)  # type: ignore[index]
            if len(first[0][name][2]) > 1:  # type: ignore[index]
                print(f"  {proc[:24]:<24} {each0:>13.1f} {each1:>12.1f} {(each1 - each0) / each0:>+8.2%}")
    print()
    for what, ok in verdicts.items():
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
    passed = all(verdicts.values())
    print("\nPASS" if passed else "\nFAIL")
    return {"args": vars(args), "results": {k: dict(v) for k, v in load.results.items()}, "processes": table,
            "verdicts": verdicts, "pass": passed, "idle_after": idle, "samples": samples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--url", help="soak a running cluster instead of starting one")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--sample-s", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.url:
        report = soak(args.url.rstrip("/"), None, args)
    else:
        work = Path(tempfile.mkdtemp(prefix="splitmind-soak-"))
        print(f"[soak] splitmind up (bundled model, default settings), logs in {work}", flush=True)
        cluster = RunningCluster(BUNDLED_MODEL, work, prefill=1)
        try:
            cluster.wait_ready()
            report = soak(cluster.url, cluster.proc.pid, args)
        finally:
            cluster.stop()
    (OUT / "soak.json").write_text(json.dumps(report, indent=1))
    sys.exit(0 if report["pass"] else 1)


if __name__ == "__main__":
    main()
