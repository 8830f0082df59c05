"""Reasoning controls in every dialect, reconciled into one decision; conflicts refused."""

from __future__ import annotations

from typing import Any

import pytest

from api.sampling import Deployment
from api.schemas import ChatCompletionRequest, CompletionRequest
from api.service import prepare_chat
from api.thinking import ThinkingChoice, resolve, thinking_limit
from api.tokenization import ModelFrontend
from models.test_checkpoints import CheckpointSpec, build_checkpoint
from splitmind.errors import InvalidRequestError


def chat(**kw: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "What is 1+1?"}], **kw})


EQUIVALENT_BUDGETS = [{"thinking_budget": 32}, {"thinking_token_budget": 32},
                      {"thinking": {"type": "enabled", "budget_tokens": 32}}, {"reasoning": {"max_tokens": 32}},
                      {"thinking_budget": 32, "thinking_token_budget": 32}]
EQUIVALENT_OFF = [{"chat_template_kwargs": {"enable_thinking": False}}, {"reasoning_effort": "none"},
                  {"thinking": {"type": "disabled"}}, {"reasoning": {"enabled": False}},
                  {"reasoning": {"effort": "none"}}]


@pytest.mark.parametrize("body", EQUIVALENT_BUDGETS, ids=str)
def test_every_budget_dialect_means_the_same(fe: ModelFrontend, body: dict[str, Any]) -> None:
    assert resolve(chat(**body), fe, server_hidden=False) == ThinkingChoice(budget=32)


@pytest.mark.parametrize("body", EQUIVALENT_OFF, ids=str)
def test_every_off_dialect_means_the_same(fe: ModelFrontend, body: dict[str, Any]) -> None:
    assert resolve(chat(**body), fe, server_hidden=False) == ThinkingChoice(off=True)


def test_effort_maps_to_the_profiles_budgets(fe: ModelFrontend) -> None:
    budgets = [resolve(chat(reasoning_effort=e), fe, server_hidden=False).budget for e in ("minimal", "low", "medium")]
    assert budgets == [16, 64, 192]
    assert resolve(chat(reasoning={"effort": "high"}), fe, server_hidden=False).budget is None


@pytest.mark.parametrize("body", [{"include_reasoning": False}, {"reasoning": {"exclude": True}}], ids=str)
def test_hidden_on_request(fe: ModelFrontend, body: dict[str, Any]) -> None:
    assert resolve(chat(**body), fe, server_hidden=False).hidden


def test_server_hidden_wins(fe: ModelFrontend) -> None:
    assert resolve(chat(include_reasoning=True), fe, server_hidden=True).hidden


CONFLICTS: list[tuple[dict[str, Any], str]] = [
    ({"thinking_budget": 32, "thinking_token_budget": 64}, "thinking_budget"),
    ({"thinking_budget": 32, "reasoning_effort": "low"}, "thinking_budget"),
    ({"reasoning": {"effort": "low", "max_tokens": 8}}, "reasoning.effort"),
    ({"reasoning_effort": "low", "reasoning": {"effort": "high"}}, "reasoning_effort"),
    ({"reasoning_effort": "none", "thinking_budget": 8}, "reasoning_effort"),
    ({"chat_template_kwargs": {"enable_thinking": False}, "thinking_budget": 8},
     "chat_template_kwargs.enable_thinking"),
    ({"thinking": {"type": "disabled", "budget_tokens": 8}}, "thinking.budget_tokens"),
    ({"include_reasoning": True, "reasoning": {"exclude": True}}, "include_reasoning"),
    ({"include_reasoning": False, "return_token_ids": True}, "return_token_ids"),
]


@pytest.mark.parametrize("body, param", CONFLICTS, ids=lambda x: str(x))
def test_conflicts_are_refused_naming_the_field(fe: ModelFrontend, body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        resolve(chat(**body), fe, server_hidden=False)
    assert err.value.param == param


def test_a_budget_on_a_model_without_think_tokens(tmp_path_factory: pytest.TempPathFactory) -> None:
    plain = build_checkpoint(tmp_path_factory.mktemp("m") / "plain",
                             CheckpointSpec(weights="scripted", template="plain", think_tokens=False))
    with pytest.raises(InvalidRequestError) as err:
        resolve(chat(thinking_budget=8), ModelFrontend(str(plain)), server_hidden=False)
    assert err.value.param == "thinking_budget"


def test_thinking_off_is_for_chat_only(fe: ModelFrontend) -> None:
    with pytest.raises(InvalidRequestError):
        resolve(CompletionRequest(model="m", prompt="x", reasoning_effort="none"), fe, server_hidden=False)


def test_the_answer_reserve_lowers_the_budget_only_when_needed(fe: ModelFrontend) -> None:
    forced = len(fe.forced_end_ids()[0])
    generous = thinking_limit(ThinkingChoice(budget=32), fe, max_tokens=2000, starts_in_reasoning=True)
    assert generous is not None and (generous.budget, generous.reason) == (32, "budget")
    tight = thinking_limit(ThinkingChoice(budget=500), fe, max_tokens=200, starts_in_reasoning=True)
    assert tight is not None and tight.reason == "answer_reserve"
    assert tight.budget + tight.grace + forced + fe.profile.answer_reserve <= 200
    assert thinking_limit(ThinkingChoice(), fe, max_tokens=3, starts_in_reasoning=True) is None, "no room: no limit"


@pytest.mark.parametrize("spare", [0, 5, 15])
def test_room_for_less_than_a_grace_window_ends_the_thinking_at_once(fe: ModelFrontend, spare: int) -> None:
    """max_tokens just above the answer reserve and the forced ending: thinking would eat the
    answer's room, so it ends at once instead of not being limited at all."""
    max_tokens = fe.profile.answer_reserve + len(fe.forced_end_ids()[0]) + spare
    limit = thinking_limit(ThinkingChoice(), fe, max_tokens=max_tokens, starts_in_reasoning=True)
    assert limit is not None and (limit.budget, limit.grace, limit.reason) == (0, spare, "answer_reserve")


def test_thinking_off_closes_the_think_block_and_history_loses_its_reasoning(fe: ModelFrontend) -> None:
    dep = Deployment(vocab_size=fe.vocab_size, max_model_len=2048, speculative=True)
    req = chat(reasoning_effort="none", messages=[
        {"role": "user", "content": "What is 1+1?"},
        {"role": "assistant", "content": "<think>\nunits: secret\n</think>\n\nThe answer is 2.",
         "reasoning_content": "units: secret"},
        {"role": "user", "content": "And 2+2?"}])
    prepared = prepare_chat(req, fe, dep)
    text = fe.hf.decode(prepared.prompt_token_ids)
    assert "secret" not in text and "The answer is 2." in text
    assert text.endswith("<think>\n\n</think>\n\n") and not prepared.starts_in_reasoning
    assert prepared.thinking is None
