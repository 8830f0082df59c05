"""The seeded-decode contract, which both KV transports keep (`SeededNixlConnector`, and
`kv_transfer.zmq.plan.Planner.claim`).

splitmind streams the token prefill produced to the client and hands it to decode as the last
prompt token: decode's prompt is prefill's prompt plus that token. Prefill computed KV for its
own prompt only, `remote_num_tokens` of them, so decode takes at most those as remote and
computes the seeded token itself (never recomputing anything prefill did, never asking for KV
prefill does not have). What its own prefix cache already holds it does not take either.
"""

from __future__ import annotations


def remote_tokens_to_take(remote_num_tokens: int, num_prompt_tokens: int, num_computed_tokens: int) -> int:
    """How many prompt tokens' KV decode takes from prefill; 0 or less: none (a full local hit)."""
    return min(remote_num_tokens, num_prompt_tokens) - num_computed_tokens
