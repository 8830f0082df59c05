"""Train the tiny reasoner: main LM loss plus the MTP layer's loss, on CPU.

Progress is measured without generating: a trace is deterministic, so greedy decoding writes
it exactly iff the model's argmax is right at every reply token given the right prefix.
"Teacher-forced exact match" on held-out problems is therefore a lower bound on greedy
accuracy (greedy can only do better, by recovering from a slip), at the cost of one forward
pass. The MTP layer's top-1 accuracy on the same tokens predicts vLLM's draft acceptance.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from models.tiny_reasoner.model import ReasonerConfig, TinyReasoner
from models.tiny_reasoner.samples import IGNORE, Batch, Mix, Sample, SampleBuilder, bucketed_batches, collate


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000
    tokens_per_batch: int = 6144  # padded tokens per step
    num_samples: int = 88_000  # drawn once (about one epoch at the default steps); cycled if more are needed
    peak_lr: float = 2.4e-3
    warmup_steps: int = 100
    final_lr_fraction: float = 0.05
    weight_decay: float = 0.05
    mtp_loss_weight: float = 0.3
    eval_every: int = 400
    num_eval_problems: int = 256
    seed: int = 0
    threads: int = 2
    mix: Mix = field(default_factory=Mix)
    compile: bool = True  # torch.compile(dynamic=True): ~1 min to compile, then faster steps (below)
    # Matmuls in bfloat16 under autocast (weights, optimizer and loss stay float32) where the CPU
    # has bfloat16 instructions (AVX512-BF16/AMX; None: detect). On a 2-vCPU EPYC host, 30-step
    # probes: float32 3,900 tokens/s, bfloat16 5,400, bfloat16 compiled 7,100 (float32 compiled:
    # 3,900); the whole build there averaged 5,700.
    bf16: bool | None = None

    @property
    def use_bf16(self) -> bool:
        return bf16_supported() if self.bf16 is None else self.bf16

    def __post_init__(self) -> None:
        if self.steps < 1 or self.tokens_per_batch < 512 or self.num_samples < 1:
            raise ValueError("steps, tokens_per_batch and num_samples must be positive (batch >= 512 tokens)")
        if not 0 < self.peak_lr < 1 or not 0 <= self.final_lr_fraction <= 1:
            raise ValueError("peak_lr in (0, 1), final_lr_fraction in [0, 1]")

    def lr(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return self.peak_lr * (self.final_lr_fraction + (1 - self.final_lr_fraction) * cosine)


@dataclass(frozen=True)
class EvalResult:
    exact_match: float  # held-out full traces with every reply token right (teacher forced)
    token_accuracy: float
    mtp_accuracy: float  # MTP top-1 on the same tokens: about the draft acceptance rate
    loss: float


def bf16_supported() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def losses(model: torch.nn.Module, batch: Batch, mtp_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    logits, mtp_logits = model(batch.ids)
    vocab = logits.shape[-1]
    lm = F.cross_entropy(logits[:, :-1].reshape(-1, vocab), batch.labels[:, 1:].reshape(-1), ignore_index=IGNORE)
    if mtp_logits is None:
        return lm, lm
    mtp = F.cross_entropy(mtp_logits[:, :-1].reshape(-1, vocab), batch.labels[:, 2:].reshape(-1),
                          ignore_index=IGNORE)
    return lm + mtp_weight * mtp, lm


@torch.no_grad()
def evaluate(model: TinyReasoner, samples: list[Sample], pad_id: int, batch_size: int = 64) -> EvalResult:
    model.eval()
    exact = correct = total = mtp_correct = mtp_total = 0
    loss_sum = 0.0
    for start in range(0, len(samples), batch_size):
        batch = collate(samples[start : start + batch_size], pad_id)
        logits, mtp_logits = model(batch.ids)
        target = batch.labels[:, 1:]
        mask = target != IGNORE
        hit = (logits[:, :-1].argmax(-1) == target) & mask
        exact += int((hit.sum(1) == mask.sum(1)).sum())
        correct += int(hit.sum())
        total += int(mask.sum())
        loss_sum += float(F.cross_entropy(logits[:, :-1].transpose(1, 2), target, ignore_index=IGNORE,
                                          reduction="sum"))
        if mtp_logits is not None:
            mtp_target = batch.labels[:, 2:]
            mtp_mask = mtp_target != IGNORE
            mtp_correct += int(((mtp_logits[:, :-1].argmax(-1) == mtp_target) & mtp_mask).sum())
            mtp_total += int(mtp_mask.sum())
    model.train()
    return EvalResult(exact / len(samples), correct / total, mtp_correct / max(1, mtp_total), loss_sum / total)


def train(model: TinyReasoner, builder: SampleBuilder, cfg: TrainConfig, say: Callable[[str], None]) -> EvalResult:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed)
    pad_id = builder.im_end
    mix = cfg.mix
    t0 = time.monotonic()
    samples = [builder.draw(rng, mix) for _ in range(cfg.num_samples)]
    eval_rng = random.Random(cfg.seed + 1_000_003)  # problems disjoint in stream from training
    held_out = [builder.draw(eval_rng, Mix(cut=0, no_think=0, hard=0, op_weights=(1, 1, 1)))
                for _ in range(cfg.num_eval_problems)]
    say(f"data: {len(samples)} samples, {sum(len(s.ids) for s in samples) / 1e6:.1f}M tokens "
        f"({time.monotonic() - t0:.0f}s)")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or "embed" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.peak_lr, betas=(0.9, 0.95))
    bf16 = cfg.use_bf16
    say(f"matmuls in {'bfloat16 (autocast)' if bf16 else 'float32'}{', compiled' if cfg.compile else ''}")
    forward: torch.nn.Module = torch.compile(model, dynamic=True) if cfg.compile else model  # type: ignore[assignment]
    step, tokens, t_start = 0, 0, time.monotonic()
    window_loss, window_n = 0.0, 0
    result = evaluate(model, held_out, pad_id)
    while step < cfg.steps:
        for batch in bucketed_batches(samples, cfg.tokens_per_batch, pad_id, rng):
            if step >= cfg.steps:
                break
            for group in opt.param_groups:
                group["lr"] = cfg.lr(step)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss, lm = losses(forward, batch, cfg.mtp_loss_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            tokens += batch.ids.numel()
            window_loss, window_n = window_loss + float(lm.detach()), window_n + 1
            if step % 50 == 0 or step == cfg.steps:
                elapsed = time.monotonic() - t_start
                eta = elapsed / step * (cfg.steps - step)
                say(f"step {step}/{cfg.steps}  loss {window_loss / window_n:.4f}  lr {cfg.lr(step):.2e}  "
                    f"{tokens / elapsed:.0f} tok/s  elapsed {elapsed / 60:.1f} min  eta {eta / 60:.1f} min")
                window_loss, window_n = 0.0, 0
            if step % cfg.eval_every == 0 or step == cfg.steps:
                result = evaluate(model, held_out, pad_id)
                say(f"eval step {step}: exact {result.exact_match:.3f}  token acc {result.token_accuracy:.4f}  "
                    f"mtp acc {result.mtp_accuracy:.4f}  loss {result.loss:.4f}")
    return result


def new_model(vocab_size: int, **overrides: int) -> TinyReasoner:
    return TinyReasoner(ReasonerConfig(vocab_size=vocab_size, **overrides))  # type: ignore[arg-type]
