"""What an early-exit probe answers at each line end of a full trace: why early exit saves little
on the bundled reasoner.

    .venv/bin/python bench/long2short_probes.py        # 20 problems, about 2 minutes on 2 cores

Starts `splitmind up` on the bundled model unless `--url` points at a running gateway. For each
problem: the full greedy reply (token ids), then at every line end of its thinking the probe
early exit would send (prompt, thinking up to there, the forced ending and answer prefix;
greedy, as `router/early_exit.py` builds it), through `/v1/completions` with the sampled token's
logprob. Prints one row per problem: R (right) or x (wrong) per line end with the answer's
confidence (the lowest probability of its tokens), then how often two or three consecutive
probes agreed on a wrong answer, and how confident right and wrong answers were.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.long2short import early_exit_for  # noqa: E402
from api.tokenization import ModelFrontend  # noqa: E402
from models import BUNDLED_MODEL  # noqa: E402
from models.tiny_reasoner.data import sample_problem  # noqa: E402
from tests.e2e.cluster import RunningCluster  # noqa: E402

SEED = 7


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running gateway serving the bundled model (default: start one)")
    ap.add_argument("--problems", type=int, default=20)
    args = ap.parse_args()
    fe = ModelFrontend(str(BUNDLED_MODEL))
    ee = early_exit_for(fe)
    cluster = None
    url = args.url
    if url is None:
        cluster = RunningCluster(BUNDLED_MODEL, ROOT / ".splitmind" / "long2short-probes", prefill=1,
                                 config="[engine]\nkv_cache_gib = 1\nmax_model_len = 2048\n")
        cluster.wait_ready()
        url = cluster.url
    rng = random.Random(SEED)
    conf: dict[bool, list[float]] = {True: [], False: []}
    wrong_agree = {2: 0, 3: 0}
    right_agree = {2: 0, 3: 0}
    try:
        with httpx.Client(base_url=url + "/v1", timeout=120) as http:
            def probe(ids: list[int]) -> tuple[str | None, float]:
                body = {"model": "tiny-reasoner", "prompt": ids, "temperature": 0, "max_tokens": ee.max_tokens,
                        "return_token_ids": True, "logprobs": 0}
                choice = http.post("/completions", json=body).json()["choices"][0]
                lps, toks = choice["logprobs"]["token_logprobs"], choice["logprobs"]["tokens"]
                end = next((i for i, t in enumerate(toks) if "." in t), len(toks) - 1)
                return ee.answer_of(choice["token_ids"]), math.exp(min(lps[:end + 1]))

            for _ in range(args.problems):
                p = sample_problem(rng)
                messages = [{"role": "user", "content": p.question}]
                prompt = fe.encode(fe.render_chat(messages, {}))
                out = http.post("/chat/completions", json={"model": "tiny-reasoner", "messages": messages,
                                                           "temperature": 0, "max_tokens": 1500,
                                                           "return_token_ids": True}).json()["choices"][0]["token_ids"]
                ends = [i for i, t in enumerate(out) if i > 0 and t in fe.line_start_ids()]
                probes = [prompt + out[:i] + list(ee.suffix_ids) for i in ends]
                with ThreadPoolExecutor(8) as pool:
                    answers = list(pool.map(probe, probes))
                right = [a == str(p.answer) for a, _ in answers]
                for (a, c), ok in zip(answers, right, strict=True):
                    if a is not None:
                        conf[ok].append(c)
                for m in (2, 3):
                    for j in range(len(answers) - m + 1):
                        run = [a for a, _ in answers[j:j + m]]
                        if run[0] is not None and all(a == run[0] for a in run):
                            (right_agree if run[0] == str(p.answer) else wrong_agree)[m] += 1
                marks = " ".join(f"{'R' if ok else 'x'}{c:.2f}" for (_, c), ok in zip(answers, right, strict=True))
                print(f"{p.question:22s} {p.answer:>7}  {len(ends):2d} line ends: {marks}", flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
    for m in (2, 3):
        print(f"{m} consecutive probes agreeing: {right_agree[m]} times on the right answer, "
              f"{wrong_agree[m]} times on a wrong one")
    for ok in (True, False):
        if conf[ok]:
            print(f"{'right' if ok else 'wrong'} probe answers: {len(conf[ok])}, confidence median "
                  f"{statistics.median(conf[ok]):.2f}, max {max(conf[ok]):.2f}, min {min(conf[ok]):.2f}")


if __name__ == "__main__":
    main()
