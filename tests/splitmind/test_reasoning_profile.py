"""A model's reasoning profile: defaults for Qwen3/R1-style checkpoints, the model directory's
file, the config's overrides key by key, and a clear error for anything malformed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from splitmind.reasoning_profile import PROFILE_FILE, QWEN_TRANSITION, load_profile


def model_dir(tmp_path: Path, profile: Any = None) -> Path:
    if profile is not None:
        (tmp_path / PROFILE_FILE).write_text(profile if isinstance(profile, str) else json.dumps(profile))
    return tmp_path


def test_a_checkpoint_without_a_profile_gets_qwen_defaults(tmp_path: Path) -> None:
    p = load_profile(model_dir(tmp_path))
    assert QWEN_TRANSITION in p.forced_end and p.forced_end.rstrip().endswith("</think>")
    assert p.effort_budgets == {"minimal": 256, "low": 1024, "medium": 4096, "high": None}
    assert (p.think_start, p.think_end, p.answer_pattern) == ("<think>", "</think>", None)


def test_config_overrides_the_file_key_by_key_effort_levels_too(tmp_path: Path) -> None:
    d = model_dir(tmp_path, {"forced_end": "\nstop\n</think>", "answer_reserve": 24,
                             "effort_budgets": {"minimal": 16, "low": 64, "medium": 192, "high": None}})
    p = load_profile(d, {"effort_budgets": {"medium": 100}, "grace_min_tokens": 4})
    assert p.effort_budgets == {"minimal": 16, "low": 64, "medium": 100, "high": None}
    assert (p.forced_end, p.answer_reserve, p.grace_min_tokens) == ("\nstop\n</think>", 24, 4)


def test_grace_is_the_larger_of_the_floor_and_the_fraction(tmp_path: Path) -> None:
    p = load_profile(model_dir(tmp_path))
    assert [p.grace_tokens(b) for b in (0, 100, 160, 1000)] == [16, 16, 16, 100]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"think_budget": 5}, "unknown reasoning profile key"),
    ({"answer_reserve": "5"}, "reasoning.answer_reserve"),
    ({"answer_reserve": True}, "reasoning.answer_reserve"),
    ({"forced_end": 3}, "reasoning.forced_end"),
    ({"forced_end": "Time is up."}, "must contain the end marker"),
    ({"effort_budgets": {"huge": 5}}, "exactly the levels"),
    ({"effort_budgets": {"low": -1}}, "non-negative"),
    ({"effort_budgets": {"low": 1.5}}, "non-negative"),
    ({"effort_budgets": {"minimal": 5000}}, "must not shrink"),
    ({"answer_reserve": -1}, ">= 0"),
    ({"grace_fraction": 2}, "grace_fraction"),
    ({"answer_pattern": "The answer is ("}, "not a regex"),
    ({"answer_pattern": r"The answer is \d+"}, "needs a group"),
    ({"think_start": ""}, "must not be empty"),
    ({"probe_min_confidence": 1}, "probe_min_confidence"),
    ({"exit_grace_tokens": -1}, "exit_grace_tokens"),
    ({"probe_min_confidence": -0.1}, "probe_min_confidence"),
    ({"probe_min_confidence": "0.9"}, "probe_min_confidence"),
], ids=str)
def test_malformed_settings_are_refused_by_name(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_profile(model_dir(tmp_path), overrides)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_an_unreadable_file_names_itself(tmp_path: Path, text: str) -> None:
    with pytest.raises(ValueError, match=PROFILE_FILE):
        load_profile(model_dir(tmp_path, text))
