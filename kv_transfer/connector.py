"""`SeededNixlConnector`: vLLM's NixlConnector, with decode seeded by prefill's first token.

splitmind streams the token prefill produced to the client and hands it to decode as the last
prompt token (prompt + first token), so decode never recomputes it. vLLM's connector claims
*every* prompt token of a `do_remote_prefill` request as remote, one more than prefill computed
(`remote_num_tokens`). The extra slot is garbage on the prefill side; worse, when decode's own
prefix cache already covers the real prompt, the only "remote" token left is that one, and the
pull asks prefill for a block it never had (seen here: 30 s stalls and "unrecognized request"
errors on the prefill worker until the lease ran out).

The fix is the clamp vLLM already applies on its bidirectional path: claim at most
`remote_num_tokens`; the seeded token is then an ordinary uncached prompt token that decode
computes, and a full local hit becomes vLLM's "notify prefill to free" path.

Importing this module (vLLM does, in every engine process, via `kv_connector_module_path`)
also calms NIXL's progress thread; see `_calm_progress_thread`. And the connector keeps the
worker's model on the node's cores; see `SeededNixlConnector.__init__`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from vllm.distributed.kv_transfer.kv_connector.v1.nixl import NixlConnector

from kv_transfer.seeded import remote_tokens_to_take

# Under "vllm.": this runs in vLLM's worker process, where only vLLM's loggers have a handler.
logger = logging.getLogger("vllm.splitmind." + __name__)

PROGRESS_THREAD_DELAY_US = 50_000


def _calm_progress_thread() -> None:
    """Give NIXL's UCX progress thread a fallback wake-up of 50 ms (nixl's Python API hardcodes 0).

    The thread sleeps in `poll()` on its UCX workers' event fds and is woken by every transfer
    event; the delay is only that poll's timeout, a periodic wake-up NIXL keeps against a UCX bug
    that can leave an fd unsignalled (nixl's ucx_backend.cpp, rounded up to whole milliseconds).
    With 0 the thread busy-polled a whole core and, created after vLLM pins the worker, shared
    the model's core: on a 2-core machine each engine ran at half speed, and gateway and engine
    frontends starved (heartbeats lost for seconds, KV pulls delayed until the lease ran out).
    Without the thread, pulls hang: an idle prefill engine never calls into its agent, so nothing
    answers the decode's connection. The pause was 200 us (1 ms after rounding): 1,000 wake-ups a
    second, 3% of a core per idle engine. At 10 ms an idle engine's thread cost 0.3%, and the
    transfer time did not move: bench/pd_latency.py measured a mean KV transfer of 1.4-5.2 ms over
    runs at 200 us, 10 ms and 50 ms, with no trend across them (docs/benchmarks.md, "Idle CPU").
    50 ms (2026-12-03) took the two idle workers' threads other than Gloo's from 1.23% to 0.83%
    of a core; the wake-up only bounds what an unsignalled fd, which UCX rarely leaves, can cost.
    """
    import importlib

    from vllm.distributed import nixl_utils

    wrapper = getattr(nixl_utils, "NixlWrapper", None)
    if wrapper is None:
        return
    api = importlib.import_module(wrapper.__module__)
    bind = api.nixlBind
    if getattr(bind.nixlAgent, "_splitmind_patched", False):
        return
    make_agent = bind.nixlAgent

    def agent_with_delay(name: str, config: Any) -> Any:
        config.pthrDelay = PROGRESS_THREAD_DELAY_US
        return make_agent(name, config)

    agent_with_delay._splitmind_patched = True  # type: ignore[attr-defined]
    bind.nixlAgent = agent_with_delay


_calm_progress_thread()


class SeededNixlConnector(NixlConnector):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """vLLM's NIXL worker, on CPU, moves the thread that builds it to the last core of each
        NUMA node, "to reserve cores for start_load_kv() from model_forward()" (PR 32365). That
        thread is the worker's main thread, which runs model_forward: on a 2-core host a prefill
        node's model left its core 0 for core 1 and computed beside the decode node's, while core
        0 idled. One stream at a time never showed it; under load (guidellm, 2 requests/s, 512
        prompt tokens) the prefill phase took 0.8 s against 35 ms alone (docs/benchmarks.md,
        "Load at rising rates"). The thread gets back the cores it had: the node's, as vLLM's OpenMP binding
        set them. (The same call ignores the process's cpuset, vLLM issue 58033; its open fix,
        PR 58036, would also have left this node's thread alone.)"""
        kept = os.sched_getaffinity(0)
        super().__init__(*args, **kwargs)
        if os.sched_getaffinity(0) != kept:
            os.sched_setaffinity(0, kept)
            logger.info("splitmind: the NIXL worker's thread is back on cores %s (vLLM moved it)", sorted(kept))

    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int) -> tuple[int | None, bool]:
        params = request.kv_transfer_params
        if params and params.get("do_remote_prefill") and params.get("remote_num_tokens"):
            remote = int(params["remote_num_tokens"])
            if len(request.prompt_token_ids or ()) > remote:
                count = remote_tokens_to_take(remote, request.num_prompt_tokens, num_computed_tokens)
                return (count, True) if count > 0 else (0, False)
        return super().get_num_new_matched_tokens(request, num_computed_tokens)
