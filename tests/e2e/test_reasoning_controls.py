"""Reasoning controls through `splitmind up` (prefill, NIXL, MTP decode) on the bundled reasoner,
with the official `openai` client: budgets with a graceful end, every dialect, effort levels,
hidden reasoning, thinking off, multi-turn history, the answer reserve."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.tokenization import ModelFrontend
from models import BUNDLED_MODEL
from models.tiny_reasoner.data import Problem, sample_problem
from tests.e2e.cluster import RunningCluster
from tests.e2e.conftest import client
from tests.e2e.gateway import Gateway
from tests.e2e.test_sampling import readme_examples, run_example

MODEL = "tiny-reasoner"
ANSWER_LINE = re.compile(r"The answer is -?\d+\.")
FE = ModelFrontend(str(BUNDLED_MODEL))
FORCED_TOKENS = len(FE.forced_end_ids()[0])


def problems(n: int, seed: int) -> list[Problem]:
    rng = random.Random(seed)
    return [sample_problem(rng) for _ in range(n)]


def ask(cluster: RunningCluster, question: str, **body: Any) -> Any:
    extra = {k: body.pop(k) for k in list(body)
             if k not in ("temperature", "max_tokens", "seed", "stream", "n", "extra_headers", "stream_options")}
    return client(cluster).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}], max_tokens=body.pop("max_tokens", 1500),
        extra_body=extra, **body)


def reasoning_of(message: Any) -> str:
    return (message.model_extra or {}).get("reasoning_content") or ""


BUDGETS = (1, 8, 32, 64, 128)
BUDGET_TEMPERATURES = (0.0, 0.7)
BUDGET_PROBLEMS = 20


@pytest.fixture(scope="module")
def budget_replies(reasoner_cluster: RunningCluster) -> dict[tuple[int, float], list[Any]]:
    """Every (budget, temperature)'s 20 replies, asked 32 at a time: the engines batch them, as
    they batch clients' requests (one budget at a time, 8 at a time, took 2.5 minutes)."""
    jobs = [(budget, t, i, p) for budget in BUDGETS for t in BUDGET_TEMPERATURES
            for i, p in enumerate(problems(BUDGET_PROBLEMS, seed=budget))]

    def one(job: tuple[int, float, int, Problem]) -> Any:
        budget, t, i, p = job
        return ask(reasoner_cluster, p.question, temperature=t, seed=i, thinking_budget=budget)

    with ThreadPoolExecutor(32) as pool:
        replies = list(pool.map(one, jobs))
    out: dict[tuple[int, float], list[Any]] = {}
    for (budget, t, _, _), r in zip(jobs, replies, strict=True):
        out.setdefault((budget, t), []).append(r)
    return out


@pytest.mark.parametrize("temperature", BUDGET_TEMPERATURES)
@pytest.mark.parametrize("budget", BUDGETS)
def test_a_budget_bounds_the_thinking_and_the_answer_follows(budget_replies: dict[tuple[int, float], list[Any]],
                                                             budget: int, temperature: float) -> None:
    grace = FE.profile.grace_tokens(budget)
    replies = budget_replies[(budget, temperature)]
    assert len(replies) == BUDGET_PROBLEMS
    for r in replies:
        used = r.usage.completion_tokens_details.reasoning_tokens
        assert used <= budget + grace + FORCED_TOKENS, (used, reasoning_of(r.choices[0].message))
        assert ANSWER_LINE.search(r.choices[0].message.content or ""), r.choices[0].message
    cut = [r for r in replies if r.usage.completion_tokens_details.reasoning_tokens > budget]
    assert all("Time is up, so I answer with what I have." in reasoning_of(r.choices[0].message) for r in cut)


def test_readme_budget_example(reasoner_cluster: RunningCluster, tmp_path: Path) -> None:
    out = run_example(readme_examples()[2], reasoner_cluster, tmp_path)
    used, rest = out.strip().split(" reasoning tokens: ")
    assert int(used) <= 32 + 16 + FORCED_TOKENS
    assert ANSWER_LINE.fullmatch(rest.strip()), out


DIALECTS = [{"thinking_budget": 24}, {"thinking_token_budget": 24}, {"thinking": {"type": "enabled",
            "budget_tokens": 24}}, {"reasoning": {"max_tokens": 24}}]


def test_every_budget_dialect_gives_the_same_reply(reasoner_cluster: RunningCluster) -> None:
    replies = [ask(reasoner_cluster, "What is 4821+379?", temperature=0, **d) for d in DIALECTS]
    seen = {(reasoning_of(r.choices[0].message), r.choices[0].message.content) for r in replies}
    assert len(seen) == 1, seen
    assert replies[0].usage.completion_tokens_details.reasoning_tokens <= 24 + 16 + FORCED_TOKENS


def test_effort_levels_order_the_thinking(reasoner_cluster: RunningCluster) -> None:
    qs = problems(8, seed=11)
    efforts = ("low", "medium", "high")
    jobs = [(effort, p) for effort in efforts for p in qs]
    with ThreadPoolExecutor(len(jobs)) as pool:
        rs = list(pool.map(lambda job: ask(reasoner_cluster, job[1].question, temperature=0,
                                           reasoning_effort=job[0]), jobs))
    used = [r.usage.completion_tokens_details.reasoning_tokens for r in rs]
    low, medium, high = (sum(used[i * len(qs):(i + 1) * len(qs)]) / len(qs) for i in range(len(efforts)))
    assert low < medium < high, (low, medium, high)
    assert ask(reasoner_cluster, "What is 9*9?", temperature=0, reasoning={"effort": "minimal"}
               ).usage.completion_tokens_details.reasoning_tokens <= 16 + 16 + FORCED_TOKENS


@pytest.mark.parametrize("body", [{"chat_template_kwargs": {"enable_thinking": False}}, {"reasoning_effort": "none"},
                                  {"thinking": {"type": "disabled"}}, {"reasoning": {"enabled": False}}], ids=str)
def test_thinking_off_in_every_dialect(reasoner_cluster: RunningCluster, body: dict[str, Any]) -> None:
    r = ask(reasoner_cluster, "What is 3+4?", temperature=0, **body)
    assert r.usage.completion_tokens_details.reasoning_tokens == 0
    assert not reasoning_of(r.choices[0].message)
    assert ANSWER_LINE.fullmatch((r.choices[0].message.content or "").strip())


def raw_stream(cluster: RunningCluster, body: dict[str, Any]) -> Iterator[str]:
    with httpx.stream("POST", cluster.url + "/v1/chat/completions", timeout=120, json={
            "model": MODEL, "messages": [{"role": "user", "content": "What is 52718+46093?"}], "stream": True,
            "stream_options": {"include_usage": True}, **body}) as r:
        assert r.status_code == 200
        yield from r.iter_lines()


def test_hidden_reasoning_streamed_shows_none_counts_all_and_keeps_alive(reasoner_cluster: RunningCluster) -> None:
    visible = ask(reasoner_cluster, "What is 52718+46093?", temperature=0)
    lines = list(raw_stream(reasoner_cluster, {"temperature": 0, "include_reasoning": False}))
    body = "\n".join(lines)
    assert "units" not in body and "reasoning_content" not in body and '"reasoning"' not in body
    assert any(line.startswith(": thinking") for line in lines), "a comment while the hidden thinking runs"
    chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    progress = [c["usage"] for c in chunks if not c["choices"] and c.get("usage")]
    assert len(progress) >= 2, "usage reports progress, then the total"
    final = progress[-1]
    assert final["completion_tokens_details"]["reasoning_tokens"] == (
        visible.usage.completion_tokens_details.reasoning_tokens)
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert content.strip() == visible.choices[0].message.content.strip() == "The answer is 98811."


def test_hidden_reasoning_not_streamed(reasoner_cluster: RunningCluster) -> None:
    r = httpx.post(reasoner_cluster.url + "/v1/chat/completions", timeout=120, json={
        "model": MODEL, "messages": [{"role": "user", "content": "What is 27+15?"}], "temperature": 0,
        "reasoning": {"exclude": True}, "logprobs": True})
    assert r.status_code == 200
    assert "units" not in r.text
    body = r.json()
    message = body["choices"][0]["message"]
    assert message["reasoning_content"] is None and message["reasoning"] is None
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] > 20
    tokens = [e["token"] for e in body["choices"][0]["logprobs"]["content"]]
    assert "".join(tokens).strip().startswith("The answer is 42."), "logprobs of answer tokens only"


def test_earlier_reasoning_is_not_fed_back(reasoner_cluster: RunningCluster) -> None:
    history = [{"role": "user", "content": "What is 1+1?"},
               {"role": "assistant", "content": "<think>\nsecret-thought-1\n</think>\n\nThe answer is 2.",
                "reasoning_content": "secret-thought-2"},
               {"role": "user", "content": "What is 2+2?"}]
    r = client(reasoner_cluster).chat.completions.create(
        model=MODEL, messages=history, temperature=0, max_tokens=600,  # type: ignore[arg-type]
        extra_body={"return_token_ids": True})
    prompt = FE.hf.decode(r.choices[0].model_extra["prompt_token_ids"])
    assert "secret" not in prompt and "The answer is 2." in prompt


def test_reasoning_tokens_are_the_think_blocks_tokens(reasoner_cluster: RunningCluster) -> None:
    """Counted by the gateway from token ids: every generated token up to and including
    `</think>`, the forced ending too (the template opens `<think>` in the prompt)."""
    for extra in ({}, {"thinking_budget": 40}):
        r = ask(reasoner_cluster, "What is 90210-4567?", temperature=0, return_token_ids=True, **extra)
        ids = r.choices[0].model_extra["token_ids"]
        assert r.usage.completion_tokens_details.reasoning_tokens == ids.index(FE.think_end_id) + 1


def test_the_answer_reserve_keeps_room_for_the_answer(reasoner_cluster: RunningCluster) -> None:
    """No budget asked, but max_tokens is less than this problem's thinking (about 300 tokens):
    the thinking ends early enough that the answer fits."""
    for max_tokens in (150, 60):  # 60: room for the ending and the answer, not for a grace window
        r = ask(reasoner_cluster, "What is 52718+46093?", temperature=0, max_tokens=max_tokens)
        assert r.choices[0].finish_reason == "stop", max_tokens
        assert ANSWER_LINE.fullmatch((r.choices[0].message.content or "").strip()), max_tokens
        assert r.usage.completion_tokens <= max_tokens


def test_budgets_with_n_choices_and_logprobs(reasoner_cluster: RunningCluster) -> None:
    """Forced tokens were not sampled: logprob 0. Every choice ends its own thinking, and its answer
    follows. Sampled at the default temperature, unseeded, as users call it: the answer's digits are
    the model's own draw (a clean run once drew 'The answer is --7177.'), so only its opening is
    the budget's to keep."""
    r = ask(reasoner_cluster, "What is 5000-4999?", n=2, thinking_budget=8, logprobs=True, top_logprobs=1)
    forced = FE.forced_end_ids()
    assert len(r.choices) == 2
    for choice in r.choices:
        assert reasoning_of(choice.message).endswith("Time is up, so I answer with what I have.\n"), choice.message
        assert (choice.message.content or "").lstrip().startswith("The answer is"), choice.message
        zeros = [e for e in choice.logprobs.content if not e.top_logprobs]
        assert all(e.logprob == 0.0 for e in zeros)
        assert len(zeros) in (len(forced[0]), len(forced[1]))


def test_a_budget_on_completions_whose_prompt_opens_the_think_block(reasoner_cluster: RunningCluster) -> None:
    prompt = FE.render_chat([{"role": "user", "content": "What is 52718+46093?"}], {})
    r = client(reasoner_cluster).completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=600,
                                                    extra_body={"thinking_token_budget": 16})
    text = r.choices[0].text
    assert "Time is up, so I answer with what I have.\n</think>" in text and ANSWER_LINE.search(text)


@pytest.mark.parametrize("body, param", [
    ({"thinking_budget": -1}, "thinking_budget"),
    ({"thinking_budget": 2.5}, "thinking_budget"),
    ({"thinking_budget": 8, "reasoning_effort": "none"}, "reasoning_effort"),
    ({"reasoning": {"effort": "low", "max_tokens": 100}}, "reasoning.effort"),
    ({"thinking_budget": 8, "thinking_token_budget": 9}, "thinking_budget"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"thinking": {"type": "maybe"}}, "thinking.type"),
], ids=str)
def test_invalid_controls_get_a_400_naming_the_field(reasoner_cluster: RunningCluster, body: dict[str, Any],
                                                     param: str) -> None:
    r = httpx.post(reasoner_cluster.url + "/v1/chat/completions", timeout=30, json={
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


@pytest.fixture(scope="module")
def hidden_cluster(reasoner_cluster: RunningCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A second gateway in front of the bundled reasoner's nodes that hides reasoning from
    everyone (a whole cluster of its own cost a minute of the suite for one gateway setting)."""
    gateway = Gateway(reasoner_cluster, tmp_path_factory.mktemp("hidden") / "gateway.log", {}, model=BUNDLED_MODEL,
                      served_model_name=MODEL, reasoning="hidden")
    yield gateway
    gateway.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_a_hidden_server_never_shows_reasoning(hidden_cluster: Gateway, stream: bool) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "What is 4821+379?"}], "temperature": 0,
            "include_reasoning": True, "stream": stream}
    r = httpx.post(hidden_cluster.url + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200
    assert "units" not in r.text and "Time is up" not in r.text
    if stream:
        chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    else:
        content = r.json()["choices"][0]["message"]["content"]
    assert content.strip() == "The answer is 5200."
    completion = httpx.post(hidden_cluster.url + "/v1/completions", timeout=120, json={
        "model": MODEL, "prompt": FE.render_chat([{"role": "user", "content": "What is 4821+379?"}], {}),
        "temperature": 0, "max_tokens": 600})
    assert "units" not in completion.text and "The answer is 5200." in completion.text
    refused = httpx.post(hidden_cluster.url + "/v1/chat/completions", timeout=30, json={**body, "stream": False,
                                                                                     "return_token_ids": True})
    assert refused.status_code == 400
