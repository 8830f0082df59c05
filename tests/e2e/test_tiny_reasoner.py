"""The bundled tiny reasoner, served the way users get it: `splitmind up` (prefill, NIXL, MTP
decode) and the official `openai` client."""

from __future__ import annotations

import re

import pytest

from models.tiny_reasoner.data import Problem
from tests.e2e.cluster import RunningCluster, settled
from tests.e2e.conftest import client
from tests.e2e.test_mtp import settled_spec_counters, spec_counter

# Fixed problems across the task: carries, borrows (through zeros), a negative result, products, small and
# large, and differences whose top digits cancel (the leading zeros to drop), where earlier checkpoints went
# wrong. The checkpoint answered 1500 of 1500 fresh problems right (docs/benchmarks.md), so a wrong answer here
# means the serving path changed what it computes; its accuracy is measured by bench/reasoner_eval.py.
PROBLEMS = [Problem(4821, 379, "+"), Problem(12, 345, "-"), Problem(90210, 4567, "-"), Problem(312, 7, "*"),
            Problem(7, 5, "+"), Problem(99999, 1, "+"), Problem(608, 9, "*"), Problem(70000, 6, "-"),
            Problem(5000, 4999, "-"), Problem(137, 59, "-")]


def test_the_bundled_checkpoint_is_what_splitmind_up_serves(reasoner_cluster: RunningCluster) -> None:
    assert client(reasoner_cluster).models.list().data[0].id == "tiny-reasoner"


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.question)
def test_answers_fixed_problems_after_reasoning(reasoner_cluster: RunningCluster, problem: Problem) -> None:
    r = client(reasoner_cluster).chat.completions.create(
        model="tiny-reasoner", messages=[{"role": "user", "content": problem.question}], temperature=0,
        max_tokens=1024)
    message = r.choices[0].message
    reasoning = getattr(message, "reasoning_content", None) or ""
    assert "units:" in reasoning, "the model should think column by column"
    assert message.content is not None
    assert message.content.strip() == f"The answer is {problem.answer}.", (reasoning, message.content)
    assert r.usage is not None and r.usage.completion_tokens_details is not None
    assert r.usage.completion_tokens_details.reasoning_tokens > 20


def test_mtp_drafts_are_mostly_accepted_on_its_own_reasoning(reasoner_cluster: RunningCluster) -> None:
    # The counters at rest, not mid-update from the previous test's last steps (a full suite run
    # once counted 21 drafts here that this request did not make).
    drafted, accepted = settled(lambda: (spec_counter(reasoner_cluster, "draft"),
                                         spec_counter(reasoner_cluster, "accepted")), lambda _: True)
    client(reasoner_cluster).chat.completions.create(
        model="tiny-reasoner", messages=[{"role": "user", "content": "What is 52718+46093?"}], temperature=0,
        max_tokens=1024)
    drafted_now, accepted_now = settled_spec_counters(reasoner_cluster, drafted)
    new_drafted, new_accepted = drafted_now - drafted, accepted_now - accepted
    assert new_drafted > 100
    assert new_accepted / new_drafted > 0.9, (new_accepted, new_drafted)


def test_thinking_off_answers_without_reasoning(reasoner_cluster: RunningCluster) -> None:
    r = client(reasoner_cluster).chat.completions.create(
        model="tiny-reasoner", messages=[{"role": "user", "content": "What is 3+4?"}], temperature=0, max_tokens=32,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    message = r.choices[0].message
    assert not getattr(message, "reasoning_content", None)
    assert message.content is not None and re.fullmatch(r"The answer is -?\d+\.", message.content.strip())
    assert r.usage is not None and r.usage.completion_tokens < 12


def test_streams_reasoning_and_answer_in_separate_fields(reasoner_cluster: RunningCluster) -> None:
    stream = client(reasoner_cluster).chat.completions.create(
        model="tiny-reasoner", messages=[{"role": "user", "content": "What is 27+15?"}], temperature=0,
        max_tokens=1024, stream=True)
    reasoning, content = "", ""
    for chunk in stream:
        if chunk.choices:
            delta = chunk.choices[0].delta
            reasoning += getattr(delta, "reasoning_content", None) or ""
            content += delta.content or ""
    assert "units: 7+5=12, +0=12, carry 1" in reasoning
    assert content.strip() == "The answer is 42."
