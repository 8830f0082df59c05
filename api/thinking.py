"""Reasoning controls: every common dialect reconciled into one decision, and the limit the
router enforces.

- thinking off: `chat_template_kwargs: {"enable_thinking": false}` (Qwen3), `reasoning_effort:
  "none"`, `thinking: {"type": "disabled"}` (Anthropic, DeepSeek), `reasoning: {"enabled":
  false}` or `reasoning: {"effort": "none"}` (OpenRouter);
- a budget in reasoning tokens: `thinking_budget` (Qwen), `thinking_token_budget` (vLLM),
  `thinking: {"type": "enabled", "budget_tokens": N}`, `reasoning: {"max_tokens": N}`;
- an effort: `reasoning_effort` or `reasoning: {"effort": ...}`, one of minimal, low, medium,
  high, mapped to budgets by the model's reasoning profile;
- visibility: `include_reasoning: false`, `reasoning: {"exclude": true}`; the server's
  `[gateway] reasoning = "hidden"` wins over any request;
- long2short: `long2short` or `reasoning: {"long2short": ...}`, one of off, early_exit (ask for
  thinking, ended once probes agree on the answer, `api/long2short.py`) and no_think (thinking
  off); the model profile's `long2short` when the request names none and does not disagree.

Dialects that agree may be combined; any disagreement, a budget together with an effort, a
budget or effort with thinking off, or a budget on a model without think tokens is a 400 naming
the fields. Nothing is silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from api.schemas import ChatCompletionRequest, CompletionRequest
from api.tokenization import ModelFrontend
from router.thinking import NO_BUDGET, ThinkingLimit
from splitmind.errors import InvalidRequestError

Request = ChatCompletionRequest | CompletionRequest


@dataclass(frozen=True)
class ThinkingChoice:
    off: bool = False
    budget: int | None = None  # reasoning tokens; None: no budget
    hidden: bool = False  # no reasoning text in any field
    early_exit: bool = False  # long2short: end the thinking once the answer has settled


def _conflict(message: str, *fields: str) -> InvalidRequestError:
    return InvalidRequestError(f"{message}: {', '.join(fields)}", param=fields[0])


def resolve(req: Request, fe: ModelFrontend, *, server_hidden: bool) -> ThinkingChoice:
    off: list[str] = []  # fields that turn thinking off
    on: list[str] = []  # fields that ask for thinking
    budgets: dict[str, int] = {}
    efforts: dict[str, str] = {}
    kwargs = req.chat_template_kwargs if isinstance(req, ChatCompletionRequest) else None
    if kwargs and "enable_thinking" in kwargs:
        (on if kwargs["enable_thinking"] else off).append("chat_template_kwargs.enable_thinking")
    if req.reasoning_effort == "none":
        off.append("reasoning_effort")
    elif req.reasoning_effort is not None:
        efforts["reasoning_effort"] = req.reasoning_effort
    for name in ("thinking_budget", "thinking_token_budget"):
        if getattr(req, name) is not None:
            budgets[name] = getattr(req, name)
    if req.thinking is not None:
        (on if req.thinking.type == "enabled" else off).append("thinking.type")
        if req.thinking.budget_tokens is not None:
            if req.thinking.type == "disabled":
                raise _conflict("a budget for disabled thinking", "thinking.budget_tokens", "thinking.type")
            budgets["thinking.budget_tokens"] = req.thinking.budget_tokens
    r = req.reasoning
    if r is not None:
        if r.enabled is not None:
            (on if r.enabled else off).append("reasoning.enabled")
        if r.effort == "none":
            off.append("reasoning.effort")
        elif r.effort is not None:
            efforts["reasoning.effort"] = r.effort
        if r.max_tokens is not None:
            budgets["reasoning.max_tokens"] = r.max_tokens
        if r.effort is not None and r.max_tokens is not None:
            raise _conflict("give reasoning.effort or reasoning.max_tokens, not both", "reasoning.effort",
                            "reasoning.max_tokens")
    modes = {name: mode for name, mode in (("long2short", req.long2short),
                                           ("reasoning.long2short", r.long2short if r is not None else None))
             if mode is not None}
    if len(set(modes.values())) > 1:
        raise _conflict("long2short modes disagree", *modes)
    mode: str | None = next(iter(modes.values()), None)
    if mode == "no_think":
        off.append(next(iter(modes)))
    elif mode == "early_exit":
        on.append(next(iter(modes)))
    on += list(budgets) + list(efforts)
    if mode is None:  # the server's default, where the request leaves room for it
        mode = _default_mode(fe, thinking_asked=bool(on), thinking_off=bool(off),
                             chat=isinstance(req, ChatCompletionRequest))
        if mode == "no_think":
            off.append("reasoning.long2short (the server's default)")
    elif mode != "off" and not fe.is_reasoning_model:
        raise _conflict("this model has no think tokens, so long2short does not apply", next(iter(modes)))
    if mode == "early_exit" and fe.profile.answer_pattern is None:
        raise _conflict("long2short early_exit needs the model's answer_pattern (its reasoning profile has none)",
                        next(iter(modes)))
    if off and on:
        raise _conflict("thinking is turned off and asked for at once", off[0], on[0])
    if len(set(budgets.values())) > 1:
        raise _conflict("thinking budgets disagree", *budgets)
    if len(set(efforts.values())) > 1:
        raise _conflict("reasoning efforts disagree", *efforts)
    if budgets and efforts:
        raise _conflict("give a thinking budget or an effort, not both", next(iter(budgets)), next(iter(efforts)))
    if (budgets or efforts) and not fe.is_reasoning_model:
        raise _conflict("this model has no think tokens, so it takes no thinking budget or effort",
                        next(iter(budgets or efforts)))
    if off and isinstance(req, CompletionRequest):
        raise _conflict("thinking can be turned off only for chat; end a completion prompt with an empty think "
                        "block instead", off[0])
    budget = next(iter(budgets.values()), None)
    if efforts:
        budget = fe.profile.effort_budgets[next(iter(efforts.values()))]
    exclude = req.reasoning.exclude if req.reasoning is not None else None
    if req.include_reasoning is not None and exclude is not None and req.include_reasoning == exclude:
        raise _conflict("reasoning visibility disagrees", "include_reasoning", "reasoning.exclude")
    hidden = server_hidden or req.include_reasoning is False or exclude is True
    if hidden and req.return_token_ids:
        raise _conflict("return_token_ids would show the hidden reasoning", "return_token_ids")
    return ThinkingChoice(off=bool(off), budget=budget, hidden=hidden, early_exit=mode == "early_exit")


def _default_mode(fe: ModelFrontend, *, thinking_asked: bool, thinking_off: bool, chat: bool) -> str:
    """The profile's long2short where it fits the request: no_think only for a chat that asked
    for no thinking of its own, early_exit only where thinking is on."""
    default = fe.profile.long2short
    if not fe.is_reasoning_model or (default == "no_think" and (thinking_asked or not chat)):
        return "off"
    if default == "early_exit" and thinking_off:
        return "off"
    return default


def thinking_limit(choice: ThinkingChoice, fe: ModelFrontend, *, max_tokens: int, starts_in_reasoning: bool
                   ) -> ThinkingLimit | None:
    """The budget the router enforces: the request's, lowered where `max_tokens` would leave no
    room for the answer (the profile's answer reserve, the grace window and the forced ending).
    None when nothing limits the thinking, or the model does not think."""
    profile = fe.profile
    if choice.off or fe.think_start_id is None or fe.think_end_id is None:
        return None
    forced, forced_after_line = fe.forced_end_ids()
    room = max_tokens - profile.answer_reserve - len(forced)  # for budget + grace
    budget, reason = choice.budget, "budget"
    grace = profile.grace_tokens(budget or 0)
    if room >= 0:  # else even an immediate ending leaves no room for the answer: no limit helps
        # The largest budget whose grace window still fits in `room`; when not even the grace
        # window fits, no budget and a shorter window.
        reserve_budget = max(0, min(room - profile.grace_min_tokens, int(room / (1 + profile.grace_fraction))))
        if budget is None or reserve_budget < budget:
            budget, reason = reserve_budget, "answer_reserve"
            grace = min(profile.grace_tokens(budget), room - budget)
    if budget is None:
        if not choice.early_exit:
            return None
        budget, grace, reason = NO_BUDGET, 0, "none"  # only early exit ends it
    return ThinkingLimit(
        budget=budget, grace=grace, think_start_id=fe.think_start_id,
        think_end_id=fe.think_end_id, starts_in_reasoning=starts_in_reasoning, line_end_ids=fe.line_end_ids(),
        line_start_ids=fe.line_start_ids(),
        forced_ids=tuple(forced), forced_after_line_ids=tuple(forced_after_line), reason=reason)
