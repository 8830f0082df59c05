"""Run token-id requests through a node's vLLM engine in-process and print what it sampled.

    .venv/bin/python tests/node/engine_probe.py JOB.json OUT.json

The engine is built from a node's own engine arguments (`splitmind.node.engine.engine_kwargs`:
MTP when the checkpoint has it, splitmind's vLLM plugin loaded as in every node) without the KV
connector, so node-level tests can draw thousands of samples without HTTP in the way. A job is
`{"model": DIR, "mtp_tokens": N|null, "requests": [{"prompt": [ids], "n": K, ...sampling}]}`,
optionally with `"then": [[requests], ...]`, more rounds, each generated after the one before;
the output is, per request of every round in order, the token ids of each of its K samples, plus
the plugins' status and how many Gloo event-loop threads the engine's processes run.
Run as a script: vLLM starts its engine core in a child process.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def run(job: dict[str, Any]) -> dict[str, Any]:
    from splitmind.config import EngineConfig, NodeSpec
    from splitmind.node.main import set_vllm_environment
    from splitmind.protocol import Role

    engine = EngineConfig(mtp_tokens=job.get("mtp_tokens"), max_model_len=2048, max_num_seqs=256,
                          kv_cache_gib=1)
    spec = NodeSpec("probe", Role.DECODE, job["model"], engine, "tcp://127.0.0.1:1", "tcp://127.0.0.1:2",
                    "127.0.0.1", 3)
    set_vllm_environment(spec)  # before vLLM is imported, as a node does

    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.utils import cpu_triton_utils

    from splitmind.node import cpu_expand_fix, cpu_seed_fix, shm_spin_fix
    from splitmind.node.engine import engine_kwargs

    kwargs = engine_kwargs(spec, kv_transfer=False)
    kwargs.pop("disable_log_stats")
    llm = LLM(**kwargs)
    samples = []
    for requests in [job["requests"], *job.get("then", [])]:
        prompts, params = [], []
        for r in requests:
            r = dict(r)
            prompts.append(TokensPrompt(prompt_token_ids=r.pop("prompt")))
            params.append(SamplingParams(detokenize=False, **r))
        outputs = llm.generate(prompts, params, use_tqdm=False)
        samples += [[list(c.token_ids) for c in out.outputs] for out in outputs]
    return {"plugin": cpu_expand_fix.status, "seed_fix": cpu_seed_fix.status, "samples": samples,
            "kernel_replaced": cpu_triton_utils._expand_kernel_impl is cpu_expand_fix.expand,
            "gloo_loops": threads_named("gloo_tcp_loop"), "spin_fix": shm_spin_fix.status}


def threads_named(name: str) -> int:
    """Threads of that name in this process's children: the engine core and its worker."""
    import psutil

    count = 0
    for child in psutil.Process().children(recursive=True):
        for thread in child.threads():
            try:
                with open(f"/proc/{child.pid}/task/{thread.id}/comm") as f:
                    count += f.read().strip() == name
            except OSError:  # the thread ended
                pass
    return count


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        result = run(json.load(f))
    with open(sys.argv[2], "w") as f:  # not stdout: vLLM logs there
        json.dump(result, f)
