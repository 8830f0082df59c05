"""long2short at the API: the modes in both dialects, their conflicts with the other reasoning
controls, the model's default, and the probe the gateway builds from the reasoning profile."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from api.long2short import early_exit_for
from api.sampling import Deployment
from api.schemas import CompletionRequest
from api.service import prepare_chat, prepare_completion
from api.thinking import ThinkingChoice, resolve
from api.tokenization import ModelFrontend
from models import BUNDLED_MODEL
from models.test_checkpoints import CheckpointSpec, build_checkpoint
from router.thinking import NO_BUDGET
from splitmind.errors import InvalidRequestError
from tests.api.test_thinking import chat

DEP = Deployment(vocab_size=10_000, max_model_len=2048, speculative=True)


@pytest.mark.parametrize("body", [{"long2short": "early_exit"}, {"reasoning": {"long2short": "early_exit"}},
                                  {"long2short": "early_exit", "reasoning": {"long2short": "early_exit"}}], ids=str)
def test_early_exit_in_either_dialect(fe: ModelFrontend, body: dict[str, Any]) -> None:
    assert resolve(chat(**body), fe, server_hidden=False) == ThinkingChoice(early_exit=True)


@pytest.mark.parametrize("body", [{"long2short": "no_think"}, {"reasoning": {"long2short": "no_think"}},
                                  {"long2short": "no_think", "reasoning_effort": "none"}], ids=str)
def test_no_think_is_thinking_off(fe: ModelFrontend, body: dict[str, Any]) -> None:
    assert resolve(chat(**body), fe, server_hidden=False) == ThinkingChoice(off=True)


def test_off_is_the_default(fe: ModelFrontend) -> None:
    assert resolve(chat(long2short="off"), fe, server_hidden=False) == resolve(chat(), fe, server_hidden=False) \
        == ThinkingChoice()


def test_early_exit_goes_with_budgets_and_efforts(fe: ModelFrontend) -> None:
    assert resolve(chat(long2short="early_exit", thinking_budget=64), fe, server_hidden=False) == \
        ThinkingChoice(budget=64, early_exit=True)
    assert resolve(chat(long2short="early_exit", reasoning_effort="low", include_reasoning=False), fe,
                   server_hidden=False) == ThinkingChoice(budget=64, early_exit=True, hidden=True)


CONFLICTS: list[tuple[dict[str, Any], str]] = [
    ({"long2short": "no_think", "thinking_budget": 8}, "long2short"),
    ({"reasoning": {"long2short": "no_think", "effort": "low"}}, "reasoning.long2short"),
    ({"long2short": "early_exit", "reasoning_effort": "none"}, "reasoning_effort"),
    ({"long2short": "early_exit", "chat_template_kwargs": {"enable_thinking": False}},
     "chat_template_kwargs.enable_thinking"),
    ({"long2short": "early_exit", "reasoning": {"long2short": "no_think"}}, "long2short"),
]


@pytest.mark.parametrize("body, param", CONFLICTS, ids=lambda x: str(x))
def test_conflicts_are_refused_naming_the_field(fe: ModelFrontend, body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        resolve(chat(**body), fe, server_hidden=False)
    assert err.value.param == param


@pytest.mark.parametrize("value", ["fast", "", None, 1, True])
def test_unknown_modes_are_refused(value: Any) -> None:
    body = {"long2short": value} if value is not None else {"reasoning": {"long2short": "short"}}
    with pytest.raises(pydantic.ValidationError):
        chat(**body)


def test_no_think_is_for_chat_only(fe: ModelFrontend) -> None:
    with pytest.raises(InvalidRequestError):
        resolve(CompletionRequest(model="m", prompt="x", long2short="no_think"), fe, server_hidden=False)


def test_early_exit_needs_an_answer_pattern(fe: ModelFrontend) -> None:
    without = ModelFrontend(str(BUNDLED_MODEL), {"answer_pattern": None})
    with pytest.raises(InvalidRequestError) as err:
        resolve(chat(long2short="early_exit"), without, server_hidden=False)
    assert err.value.param == "long2short" and "answer_pattern" in str(err.value)
    with pytest.raises(ValueError, match="answer_pattern"):
        ModelFrontend(str(BUNDLED_MODEL), {"answer_pattern": None, "long2short": "early_exit"})


def test_a_model_without_think_tokens(tmp_path_factory: pytest.TempPathFactory) -> None:
    plain = build_checkpoint(tmp_path_factory.mktemp("m") / "plain",
                             CheckpointSpec(weights="scripted", template="plain", think_tokens=False))
    plain_fe = ModelFrontend(str(plain), {"long2short": "no_think"})
    with pytest.raises(InvalidRequestError):
        resolve(chat(long2short="no_think"), plain_fe, server_hidden=False)
    assert resolve(chat(), plain_fe, server_hidden=False) == ThinkingChoice(), "the server's default does not apply"


def test_the_servers_default_where_the_request_leaves_room(fe: ModelFrontend) -> None:
    ee = ModelFrontend(str(BUNDLED_MODEL), {"long2short": "early_exit"})
    assert resolve(chat(), ee, server_hidden=False) == ThinkingChoice(early_exit=True)
    assert resolve(chat(reasoning_effort="none"), ee, server_hidden=False) == ThinkingChoice(off=True)
    assert resolve(chat(long2short="off"), ee, server_hidden=False) == ThinkingChoice()
    nt = ModelFrontend(str(BUNDLED_MODEL), {"long2short": "no_think"})
    assert resolve(chat(), nt, server_hidden=False) == ThinkingChoice(off=True)
    assert resolve(chat(thinking_budget=32), nt, server_hidden=False) == ThinkingChoice(budget=32)
    assert resolve(CompletionRequest(model="m", prompt="x"), nt, server_hidden=False) == ThinkingChoice()


def test_the_probe_is_the_forced_ending_and_the_answer_prefix(fe: ModelFrontend) -> None:
    ee = early_exit_for(fe)
    profile = fe.profile
    assert fe.hf.decode(list(ee.suffix_after_line_ids)) == profile.forced_end.lstrip("\n") + profile.answer_prefix
    assert (ee.every, ee.agree, ee.max_tokens, ee.min_confidence, ee.grace) == (
        profile.probe_every, profile.probe_agree, profile.probe_max_tokens, profile.probe_min_confidence,
        profile.exit_grace_tokens)
    assert ee.answer_of(fe.encode("5200.")) == "5200"
    assert ee.answer_of(fe.encode(" 52")) is None, "an answer is read only once it is complete"
    whole = fe.encode(profile.forced_end.lstrip("\n") + profile.answer_prefix + "5200.")
    assert whole[:len(ee.suffix_after_line_ids)] == list(ee.suffix_after_line_ids), \
        "the answer prefix ends where the model's own answer line breaks into tokens"


def test_prepared_requests_carry_early_exit_with_a_limit(fe: ModelFrontend) -> None:
    p = prepare_chat(chat(long2short="early_exit"), fe, DEP)
    assert p.early_exit is not None and p.thinking is not None
    assert p.thinking.budget <= 2048, "the answer reserve still limits a long thinking"
    roomy = prepare_completion(CompletionRequest(model="m", prompt="What is 1+1?<think>\n", long2short="early_exit",
                                                 max_tokens=5), fe, DEP)
    assert roomy.early_exit is not None and roomy.thinking is not None and roomy.thinking.budget == NO_BUDGET
    assert prepare_chat(chat(), fe, DEP).early_exit is None
