"""long2short's early exit, as the gateway sets it up for a request: the probe's suffix (the
model's forced ending and answer prefix, in its own tokens) and how to read a probe's answer,
from the model's reasoning profile. The probing itself is the router's (`router/early_exit.py`).
"""

from __future__ import annotations

import functools
import re

from api.tokenization import ModelFrontend
from router.early_exit import EarlyExit

PROBE_TIMEOUT_S = 30.0


@functools.cache  # one per frontend: the suffix is tokenized and the pattern compiled once, not per request
def early_exit_for(fe: ModelFrontend) -> EarlyExit:
    """Early exit for this model; the API has checked that its profile has an `answer_pattern`."""
    profile = fe.profile
    assert profile.answer_pattern is not None
    pattern = re.compile(profile.answer_pattern)
    prefix = profile.answer_prefix
    forced = profile.forced_end

    def answer_of(ids: list[int]) -> str | None:
        found = pattern.search(prefix + fe.tokenizer.decode(ids, skip_special_tokens=False))
        return found.group(1) if found else None

    return EarlyExit(
        every=profile.probe_every, agree=profile.probe_agree, max_tokens=profile.probe_max_tokens,
        suffix_ids=tuple(fe.encode(forced + prefix)),
        suffix_after_line_ids=tuple(fe.encode(forced.lstrip("\n") + prefix)),
        answer_of=answer_of, min_confidence=profile.probe_min_confidence,
        stop_token_ids=tuple(fe.stop_token_ids), grace=profile.exit_grace_tokens,
        timeout_s=PROBE_TIMEOUT_S)
