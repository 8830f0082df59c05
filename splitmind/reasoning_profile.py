"""A served model's reasoning profile: its think markers, how a budget ends its thinking, what
each effort level means, and how much room its answer needs.

Read from `reasoning_profile.json` in the model directory (training code writes it for the
models it trains), then overridden key by key by the `[reasoning]` table of the config file.
Every field has a default fit for Qwen3 and R1-style models, so a checkpoint without the file
works: the transition sentence is Qwen's own.

    {"forced_end": "\\nTime is up, so I answer with what I have.\\n</think>",
     "effort_budgets": {"minimal": 16, "low": 64, "medium": 192, "high": null},
     "answer_reserve": 32, "answer_pattern": "The answer is (-?\\\\d+)\\\\.",
     "long2short": "off", "probe_every": 64, "probe_agree": 3, "answer_prefix": "\\n\\nThe answer is "}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

PROFILE_FILE = "reasoning_profile.json"
EFFORTS = ("minimal", "low", "medium", "high")
LONG2SHORT_MODES = ("off", "early_exit", "no_think")
MAX_PROBE_TOKENS = 256
QWEN_TRANSITION = ("Considering the limited time by the user, I have to give the solution based on the thinking "
                   "directly now.")


def _default_efforts() -> dict[str, int | None]:
    return {"minimal": 256, "low": 1024, "medium": 4096, "high": None}


@dataclass(frozen=True)
class ReasoningProfile:
    think_start: str = "<think>"
    think_end: str = "</think>"
    # What a budget forces when it ends the thinking: the transition sentence and the end marker.
    forced_end: str = f"\n\n{QWEN_TRANSITION}\n</think>\n\n"
    # Reasoning-token budget per effort level; None: unlimited.
    effort_budgets: dict[str, int | None] = field(default_factory=_default_efforts)
    # Tokens kept for the answer when max_tokens would otherwise be spent on thinking.
    answer_reserve: int = 512
    # After a budget runs out the model may finish its line: at most max(grace_min_tokens,
    # grace_fraction * budget) more tokens before the forced end.
    grace_min_tokens: int = 16
    grace_fraction: float = 0.1
    # A regex whose first group is the answer (long2short probes compare it); None: unknown.
    answer_pattern: str | None = None
    # long2short: the server's default mode ("off", "early_exit", "no_think"), and early exit's
    # probes: one every `probe_every` reasoning tokens, of at most `probe_max_tokens` greedy
    # tokens after the forced ending and `answer_prefix`; the last `probe_agree` must agree.
    long2short: str = "off"
    # 64 and 3: the stage-1 bundled model's only setting near full thinking's accuracy (docs/benchmarks.md)
    probe_every: int = 64
    probe_agree: int = 3
    probe_max_tokens: int = 16
    # DEER's gate: a probe's answer counts only if every token of it was at least this likely
    # (the probe asks for its tokens' logprobs); 0: every answer counts.
    probe_min_confidence: float = 0.0
    # Once probes agree, the line in progress may run this many tokens more before the forced
    # ending: an exit cuts at a line end, where the probes read their answer. A budget's
    # 16-token grace cut the bundled model's 40-token check lines in the middle of the result.
    exit_grace_tokens: int = 128
    answer_prefix: str = ""

    def __post_init__(self) -> None:
        if not self.think_start or not self.think_end:
            raise ValueError("reasoning.think_start and reasoning.think_end must not be empty")
        if self.think_end not in self.forced_end:
            raise ValueError(f"reasoning.forced_end must contain the end marker {self.think_end!r}")
        unknown = set(self.effort_budgets) - set(EFFORTS)
        if unknown or set(self.effort_budgets) != set(EFFORTS):
            raise ValueError(f"reasoning.effort_budgets needs exactly the levels {', '.join(EFFORTS)}")
        budgets = [self.effort_budgets[e] for e in EFFORTS]
        if any(b is not None and (not isinstance(b, int) or isinstance(b, bool) or b < 0) for b in budgets):
            raise ValueError("reasoning.effort_budgets values must be non-negative integers or null")
        as_numbers = [float("inf") if b is None else b for b in budgets]
        if as_numbers != sorted(as_numbers):
            raise ValueError("reasoning.effort_budgets must not shrink from minimal to high")
        if self.answer_reserve < 0 or self.grace_min_tokens < 0 or not 0 <= self.grace_fraction <= 1:
            raise ValueError("reasoning.answer_reserve and grace_min_tokens must be >= 0, grace_fraction in [0, 1]")
        if self.long2short not in LONG2SHORT_MODES:
            raise ValueError(f"reasoning.long2short must be one of {', '.join(LONG2SHORT_MODES)}")
        if not (self.probe_every >= 1 and self.probe_agree >= 1 and 1 <= self.probe_max_tokens <= MAX_PROBE_TOKENS):
            raise ValueError(f"reasoning.probe_every and probe_agree must be >= 1, probe_max_tokens in [1, "
                             f"{MAX_PROBE_TOKENS}]")
        if self.exit_grace_tokens < 0:
            raise ValueError("reasoning.exit_grace_tokens must be >= 0")
        if not 0 <= self.probe_min_confidence < 1:
            raise ValueError("reasoning.probe_min_confidence must be in [0, 1) (0: off)")
        if self.long2short == "early_exit" and self.answer_pattern is None:
            raise ValueError("reasoning.long2short = \"early_exit\" needs reasoning.answer_pattern (what a probe's "
                             "answer is)")
        if self.answer_pattern is not None:
            try:
                if re.compile(self.answer_pattern).groups < 1:
                    raise ValueError("reasoning.answer_pattern needs a group for the answer")
            except re.error as exc:
                raise ValueError(f"reasoning.answer_pattern is not a regex: {exc}") from None

    def grace_tokens(self, budget: int) -> int:
        return max(self.grace_min_tokens, int(self.grace_fraction * budget))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_TYPES: dict[str, tuple[type, ...]] = {
    "think_start": (str,), "think_end": (str,), "forced_end": (str,), "effort_budgets": (dict,),
    "answer_reserve": (int,), "grace_min_tokens": (int,), "grace_fraction": (int, float), "answer_pattern": (str,),
    "long2short": (str,), "probe_every": (int,), "probe_agree": (int,), "probe_max_tokens": (int,),
    "probe_min_confidence": (int, float), "exit_grace_tokens": (int,), "answer_prefix": (str,),
}


def _type_ok(key: str, value: Any) -> bool:
    if value is None:
        return key == "answer_pattern"
    return isinstance(value, _TYPES[key]) and not isinstance(value, bool)  # TOML's true is not a count


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable JSON object: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def load_profile(model_dir: str | Path, overrides: dict[str, Any] | None = None) -> ReasoningProfile:
    """The model directory's profile (if any) with `overrides` applied key by key (effort levels
    too); unknown keys and values of the wrong type are errors."""
    layers = [_read_file(Path(model_dir) / PROFILE_FILE), overrides or {}]
    data: dict[str, Any] = {}
    efforts: dict[str, Any] = _default_efforts()
    for layer in layers:
        unknown = sorted(set(layer) - set(_TYPES))
        if unknown:
            raise ValueError(f"unknown reasoning profile key(s): {', '.join(unknown)}")
        for key, value in layer.items():
            if not _type_ok(key, value):
                raise ValueError(f"reasoning.{key}: {value!r} is not a {_TYPES[key][0].__name__}")
        efforts.update(layer.get("effort_budgets", {}))
        data.update(layer)
    data["effort_budgets"] = efforts
    return ReasoningProfile(**data)
