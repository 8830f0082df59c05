"""A correct `expand_kernel` for vLLM's CPU build, where the shipped fallback loses its output.

Upstream: vLLM issue 55005 (fix proposed in PR 55006). Without Triton, `vllm/platforms/cpu.py`
swaps Triton kernels for C++ ones from `vllm/utils/cpu_triton_utils.py`. Its
`_expand_kernel_impl` hands `_ensure_int64(output)` to the op: for the float32 temperatures and
int32 top-k that the rejection sampler expands, that is a temporary int64 copy, written and
thrown away (and the float input is truncated to integers on the way in). The rejection
sampler's `expand_batch_to_tokens` then divides logits by uninitialised memory, so with
speculative decoding any temperature > 0 drew near-random tokens: 5.6% of MTP drafts accepted,
garbage text. Greedy returns before that code; without speculative decoding nothing calls it.

`apply()` replaces the fallback with a torch implementation that writes into `output` in its own
dtype. It is a no-op where it is not needed: with real Triton kernels, off CPU, or once the
installed vLLM's own fallback passes `probe()`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

logger = logging.getLogger(__name__)

KERNEL_NAME = "vllm.v1.sample.rejection_sampler.expand_kernel"

# What `apply()` decided in this process: "fixed", "upstream_fixed", "not_needed" or "not_loaded".
status = "not_loaded"
upstream: Callable[..., Any] | None = None  # vLLM's own fallback, once replaced


def expand(output: torch.Tensor, input_val: torch.Tensor, cu_num_tokens: torch.Tensor,
           replace_from: int | float, replace_to: int | float, MAX_NUM_TOKENS: int | None = None) -> None:
    """Write `input_val[i]` (`replace_from` becoming `replace_to`) into request i's slots of
    `output`: slots `cu_num_tokens[i-1]` to `cu_num_tokens[i]`, the Triton kernel's contract.
    `MAX_NUM_TOKENS` is the kernel's launch constant, accepted for the same signature."""
    ends = cu_num_tokens.to(torch.int64)
    counts = torch.diff(ends, prepend=ends.new_zeros(1))
    values = torch.where(input_val == replace_from, torch.tensor(replace_to, dtype=input_val.dtype), input_val)
    total = int(ends[-1]) if ends.numel() else 0
    output[:total] = torch.repeat_interleave(values, counts, output_size=total).to(output.dtype)


def probe(impl: Callable[..., Any]) -> bool:
    """Whether `impl` expands a float32 batch correctly (the case the upstream fallback fails)."""
    output = torch.full((6,), -1.0)
    impl(output, torch.tensor([0.5, 0.0, 1.5]), torch.tensor([2, 5, 6], dtype=torch.int32), 0, 1)
    return torch.equal(output, torch.tensor([0.5, 0.5, 1.0, 1.0, 1.0, 1.5]))


def needed() -> str | None:
    """Why the fix is or is not needed here: None if it is, else the status to record."""
    from vllm.platforms import current_platform
    from vllm.triton_utils import HAS_TRITON

    if HAS_TRITON or not current_platform.is_cpu():
        return "not_needed"  # real Triton kernels run; nothing of ours is involved
    from vllm.utils import cpu_triton_utils

    impl = upstream or cpu_triton_utils._expand_kernel_impl
    current_platform.import_kernels()  # the C++ op the upstream fallback calls
    return "upstream_fixed" if probe(impl) else None


def apply() -> str:
    """Install `expand` as vLLM's CPU fallback where the installed one is broken; returns (and
    records in `status`) what was done."""
    global status, upstream
    reason = needed()
    if reason is not None:
        if reason == "upstream_fixed" and status != reason:
            logger.warning("splitmind: vLLM's CPU expand kernel is correct now (vLLM issue 55005 fixed "
                           "upstream); splitmind's replacement stays off and can be removed")
        status = reason
        return status
    from vllm.triton_utils import dispatcher
    from vllm.utils import cpu_triton_utils

    # The platform reads this attribute when it registers its overrides (after plugins load)...
    if cpu_triton_utils._expand_kernel_impl is not expand:
        upstream = cpu_triton_utils._expand_kernel_impl
        cpu_triton_utils._expand_kernel_impl = expand
    # ...but if it already registered them in this process, register ours over them.
    if KERNEL_NAME in dispatcher._registry and dispatcher._registry[KERNEL_NAME][1] is not expand:
        dispatcher.register_kernels({KERNEL_NAME: expand})
    if status != "fixed":
        logger.info("splitmind: replaced vLLM's CPU expand kernel (vLLM issue 55005); "
                    "sampling with speculative decoding is exact")
    status = "fixed"
    return status
