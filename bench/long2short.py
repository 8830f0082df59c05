"""long2short on the bundled reasoner: accuracy against tokens for full thinking, budgets,
no_think and early exit over a grid of (probe every K reasoning tokens, m probes agree), and
m=2 and m=1 with DEER's confidence gate (an answer counts only if its every token was >= 0.9
likely; m=1 is DEER's own rule: one confident answer ends the thinking).

    .venv/bin/python bench/long2short.py            # bundled model, 300 problems, greedy and 0.7; ~70 min on 2 cores
    .venv/bin/python bench/long2short.py --card     # also into the model card (models/tiny-reasoner/)
    .venv/bin/python bench/long2short.py --card --resume bench/out/long2short.partial.json  # after a stop

Starts `splitmind up` (prefill node, NIXL, decode node with MTP, prefix caching on) unless
`--url` points at a running gateway, and asks the same fresh problems (seed 20261202, apart
from training's and the other studies') with the `openai` client, once per setting and
temperature. For each: exact-match accuracy, well-formed answers, mean reasoning tokens, mean
probe tokens (the probes' forced ending, answer prefix and generated answer,
`usage.completion_tokens_details.probe_tokens`) and their sum. Then wall-clock per request at
batch 1 and 8 for full thinking, the best early-exit setting and no_think, because probes cost
engine steps. Prints the tables, writes long2short.{json,md,png} to --out (bench/out), and with
--card long2short.md and long2short.png to the model directory.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from openai import OpenAI

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import BUNDLED_MODEL  # noqa: E402
from models.tiny_reasoner.data import Problem, sample_problem  # noqa: E402
from tests.e2e.cluster import RunningCluster  # noqa: E402
from tests.e2e.gateway import Gateway  # noqa: E402

SEED = 20261202
CONFIG = "[engine]\nkv_cache_gib = 2\nmax_model_len = 2048\nmax_num_seqs = 64\n"
ANSWER = re.compile(r"The answer is (-?\d+)\.")
GRID_EVERY, GRID_AGREE = (16, 32, 64), (2, 3)
GATE = 0.9  # probe_min_confidence of the gated rows (DEER's gate), for m=2 and m=1 (DEER's own rule) at K=16, 32
Probe = tuple[int, int, float]  # (probe_every K, probe_agree m, probe_min_confidence)


def grid() -> list[Probe]:
    return ([(k, m, 0.0) for m in GRID_AGREE for k in GRID_EVERY]
            + [(k, m, GATE) for m in (2, 1) for k in GRID_EVERY[:2]])


def settings() -> list[tuple[str, str, dict[str, Any]]]:
    """(method, name, request fields)."""
    out: list[tuple[str, str, dict[str, Any]]] = [("full thinking", "full thinking", {})]
    out += [("budget", f"budget {b}", {"thinking_budget": b}) for b in (16, 32, 64, 128, 256)]
    out += [("no_think", "no_think", {"long2short": "no_think"})]
    for k, m, c in grid():
        gate = f" p>={c:g}" if c else ""
        out.append((f"early_exit m={m}{gate}", f"early_exit K={k} m={m}{gate}",
                    {"long2short": "early_exit", "__probe": (k, m, c)}))
    return out


@dataclass
class Row:
    method: str
    setting: str
    temperature: float
    accuracy: float
    well_formed: float
    reasoning_tokens: float
    probe_tokens: float
    total_tokens: float  # reasoning + probe + answer: every token the engines generated or forced for it
    problems: int
    errors: int
    pareto: bool = False


def ask(client: OpenAI, model: str, p: Problem, temperature: float, body: dict[str, Any], seed: int) -> Any:
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": p.question}],
                                          temperature=temperature, max_tokens=1500, seed=seed, extra_body=body)


def run_setting(clients: dict[Probe | None, OpenAI], model: str, method: str, name: str,
                body: dict[str, Any], problems: list[Problem], temperature: float, concurrency: int) -> Row:
    body = dict(body)
    client = clients[body.pop("__probe", None)]
    errors: list[str] = []

    def one(ip: tuple[int, Problem]) -> tuple[bool, bool, int, int, int]:
        i, p = ip
        try:
            r = ask(client, model, p, temperature, body, seed=i)
        except Exception as exc:  # counted in the table, not hidden by a crash
            errors.append(f"{p.question}: {exc}")
            print(f"[long2short] {name}: {errors[-1]}", flush=True)
            return False, False, 0, 0, 0
        text = (r.choices[0].message.content or "").strip()
        m = ANSWER.search(text)
        details = r.usage.completion_tokens_details
        probe = int((details.model_extra or {}).get("probe_tokens", 0))
        return (bool(m and m.group(1) == str(p.answer)), bool(m) and "\n" not in text,
                details.reasoning_tokens or 0, probe, r.usage.completion_tokens + probe)

    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, enumerate(problems)))
    served = [r for r in results if r[4] > 0] or results
    return Row(method, name, temperature, statistics.mean(r[0] for r in results),
               statistics.mean(r[1] for r in results), statistics.mean(r[2] for r in served),
               statistics.mean(r[3] for r in served), statistics.mean(r[4] for r in served), len(problems),
               len(errors))


def mark_pareto(rows: list[Row]) -> None:
    """A row is on the front when no other row of its temperature is at least as accurate with
    fewer total tokens (or more accurate with as few)."""
    for r in rows:
        r.pareto = not any(o is not r and o.temperature == r.temperature and o.total_tokens <= r.total_tokens
                           and o.accuracy >= r.accuracy and (o.total_tokens, o.accuracy) != (r.total_tokens, r.accuracy)
                           for o in rows)


def table(rows: list[Row], n: int, seconds: float) -> str:
    lines = [f"{n} problems (seed {SEED}) per setting, through prefill -> NIXL -> MTP decode, prefix caching on; "
             f"{seconds:.0f} s. Tokens are means per request; total = reasoning + probes + answer. "
             "* = on the Pareto front (accuracy against total tokens) of its temperature.", "",
             "| temperature | setting | accuracy | well-formed | reasoning tokens | vs full | probe tokens "
             "| total tokens | failed |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        full = next(o for o in rows if o.temperature == r.temperature and o.setting == "full thinking")
        saved = f"{100 * (r.reasoning_tokens / full.reasoning_tokens - 1):+.0f}%" if full.reasoning_tokens else "-"
        lines.append(f"| {r.temperature:g} | {r.setting}{' *' if r.pareto else ''} | {100 * r.accuracy:.1f}% | "
                     f"{100 * r.well_formed:.1f}% | {r.reasoning_tokens:.1f} | {saved} | {r.probe_tokens:.1f} | "
                     f"{r.total_tokens:.1f} | {r.errors} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    temps = sorted({r.temperature for r in rows})
    fig, axes = plt.subplots(1, len(temps), figsize=(6.5 * len(temps), 4.6), squeeze=False)
    for ax, t in zip(axes[0], temps, strict=True):
        mine = [r for r in rows if r.temperature == t]
        methods = dict.fromkeys(r.method for r in mine)
        for method in methods:
            group = sorted((r for r in mine if r.method == method), key=lambda r: r.total_tokens)
            style = "o-" if len(group) > 1 else "s"
            ax.plot([r.total_tokens for r in group], [100 * r.accuracy for r in group], style, label=method)
            for r in group:
                label = re.sub(r" m=\d| p>=[\d.]+", "", r.setting.replace("budget ", "").replace("early_exit ", ""))
                ax.annotate(label, (r.total_tokens, 100 * r.accuracy), textcoords="offset points", xytext=(4, -10),
                            fontsize=7)
        front = sorted((r for r in mine if r.pareto), key=lambda r: r.total_tokens)
        ax.plot([r.total_tokens for r in front], [100 * r.accuracy for r in front], "k--", lw=1, alpha=0.6,
                label="Pareto front")
        ax.set_title(f"temperature {t:g}")
        ax.set_xlabel("mean tokens per request (reasoning + probes + answer)")
        ax.set_ylabel("exact-match accuracy (%)")
        ax.set_ylim(-4, 108)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("tiny-reasoner: long2short, accuracy against tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def wall_clock(clients: dict[Probe | None, OpenAI], model: str, problems: list[Problem],
               picks: list[tuple[str, dict[str, Any]]]) -> str:
    lines = ["| setting | batch | requests | mean s per request | requests/s |", "|---|---:|---:|---:|---:|"]
    for batch, n in ((1, 20), (8, 64)):
        for name, body in picks:
            body = dict(body)
            client = clients[body.pop("__probe", None)]
            t0 = time.monotonic()
            times: list[float] = []

            def one(ip: tuple[int, Problem], client: OpenAI = client, body: dict[str, Any] = body,
                    times: list[float] = times) -> None:
                s = time.monotonic()
                ask(client, model, ip[1], 0.0, body, seed=ip[0])
                times.append(time.monotonic() - s)

            asked = list(enumerate(problems[:n]))
            with ThreadPoolExecutor(batch) as pool:
                list(pool.map(one, asked))
            wall = time.monotonic() - t0
            mean = statistics.mean(times)
            lines.append(f"| {name} | {batch} | {len(asked)} | {mean:.2f} | {len(asked) / wall:.1f} |")
            print(f"[long2short] wall clock: {lines[-1]}", flush=True)
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=BUNDLED_MODEL)
    ap.add_argument("--problems", type=int, default=300)
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 0.7])
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    ap.add_argument("--card", action="store_true", help="also write long2short.md and long2short.png into --model")
    ap.add_argument("--resume", type=Path, help="rows already measured (a long2short.partial.json of an earlier "
                    "run with the same problems): only the missing settings run")
    args = ap.parse_args()
    done: dict[tuple[float, str], Row] = {}
    if args.resume is not None:
        for r in json.loads(args.resume.read_text()):
            row = Row(**r)
            if row.problems == args.problems and row.errors == 0:  # a setting that failed runs again
                done[(row.temperature, row.setting)] = row
        print(f"[long2short] {len(done)} rows from {args.resume}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    problems = [sample_problem(rng) for _ in range(args.problems)]
    # One gateway per probe setting: (K, m) is the model profile's, set by config like an operator would.
    print(f"[long2short] starting splitmind up --model {args.model}", flush=True)
    cluster = RunningCluster(args.model.resolve(), ROOT / ".splitmind" / "long2short", prefill=1, config=CONFIG)
    extra: list[Any] = []
    try:
        cluster.wait_ready()
        clients: dict[Probe | None, OpenAI] = {
            None: OpenAI(base_url=cluster.url + "/v1", api_key="unused", max_retries=0, timeout=300)}
        model = clients[None].models.list().data[0].id
        for k, m, c in grid():
            extra.append(Gateway(cluster, cluster.workdir / f"gateway-K{k}-m{m}-c{c:g}.log", {},
                                 model=args.model.resolve(), served_model_name=model,
                                 reasoning_profile={"probe_every": k, "probe_agree": m, "probe_min_confidence": c}))
            clients[(k, m, c)] = OpenAI(base_url=extra[-1].url + "/v1", api_key="unused", max_retries=0, timeout=300)
        t0 = time.monotonic()
        rows: list[Row] = []
        for t in args.temperatures:
            for method, name, body in settings():
                if (t, name) in done:
                    rows.append(done[(t, name)])
                    continue
                rows.append(run_setting(clients, model, method, name, body, problems, t, args.concurrency))
                r = rows[-1]
                print(f"[long2short] T={t:g} {name}: {100 * r.accuracy:.1f}% right, {r.reasoning_tokens:.1f} "
                      f"reasoning + {r.probe_tokens:.1f} probe tokens", flush=True)
                # rows so far, so that a study stopped (or failed) late keeps what it measured
                (args.out / "long2short.partial.json").write_text(json.dumps([asdict(r) for r in rows], indent=1))
        seconds = time.monotonic() - t0
        mark_pareto(rows)
        greedy = [r for r in rows if r.temperature == args.temperatures[0] and r.method.startswith("early_exit")]
        full = next(r for r in rows if r.temperature == args.temperatures[0] and r.setting == "full thinking")
        fair = [r for r in greedy if r.accuracy >= full.accuracy - 0.01]
        # the cheapest within a point of full thinking; with none, the most accurate
        best = min(fair, key=lambda r: r.total_tokens) if fair else max(greedy, key=lambda r: r.accuracy)
        best_body = dict(next(b for _, n, b in settings() if n == best.setting))
        clock = wall_clock(clients, model, problems, [("full thinking", {}), (best.setting, best_body),
                                                      ("no_think", {"long2short": "no_think"})])
    finally:
        for g in extra:
            g.stop()
        cluster.stop()
    resumed = (f"\n{len(done)} of these rows were measured by an earlier run of the same script and problems "
               f"(`--resume`); its time is not in the total above.\n" if done else "")
    report = (table(rows, args.problems, seconds) + resumed
              + f"\nWall clock, greedy (best early exit: {best.setting}):\n\n" + clock)
    print(report)
    (args.out / "long2short.md").write_text(report)
    (args.out / "long2short.json").write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    plot(rows, args.out / "long2short.png")
    if args.card:
        (args.model / "long2short.md").write_text(report)
        plot(rows, args.model / "long2short.png")
        from models.tiny_reasoner.card import write_card

        write_card(args.model)
        print(f"[long2short] wrote {args.model / 'long2short.md'}, long2short.png and the model card")


if __name__ == "__main__":
    main()
