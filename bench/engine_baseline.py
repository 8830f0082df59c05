"""Baseline for bench/pd_latency.py: the same prompts straight into one vLLM AsyncLLM.

Runs in its own process (vLLM reads its environment at import): prints one JSON line per
prompt with TTFT and mean inter-token latency, measured on the engine's output stream.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # kv_transfer, for --as-node


async def run(args: argparse.Namespace) -> None:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind, SamplingParams
    from vllm.v1.engine.async_llm import AsyncLLM

    extra: dict[str, object] = {}
    if args.as_node:  # what a splitmind node adds: the NIXL connector, stats for its stat logger
        from kv_transfer.nixl import nixl_kv_transfer_config

        extra = {"kv_transfer_config": nixl_kv_transfer_config(kv_buffer_device="cpu", kv_lease_s=30),
                 "disable_log_stats": False}
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(
        model=args.model, dtype="float32", max_model_len=args.max_model_len, enforce_eager=True,
        enable_prefix_caching=False, **extra))  # type: ignore[arg-type]
    try:
        prompts = json.loads(args.prompts)
        params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0, ignore_eos=True, detokenize=False,
                                output_kind=RequestOutputKind.DELTA)
        for i, prompt in enumerate([prompts[0], *prompts]):  # first one warms up
            t0 = time.perf_counter()
            stamps: list[float] = []
            async for out in engine.generate(TokensPrompt(prompt_token_ids=prompt), params, f"b{i}"):
                stamps += [time.perf_counter()] * len(out.outputs[0].token_ids)
            if i == 0:
                continue
            gaps = [b - a for a, b in itertools.pairwise(stamps)]
            print(json.dumps({"prompt_len": len(prompt), "ttft_s": stamps[0] - t0,
                              "itl_s": statistics.mean(gaps)}), flush=True)
    finally:
        engine.shutdown()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--prompts", required=True, help="JSON list of token-id lists")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--as-node", action="store_true", help="with the engine arguments a splitmind node adds")
    a = p.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    asyncio.run(run(a))
