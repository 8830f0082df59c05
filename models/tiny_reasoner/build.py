"""Retrain the bundled tiny reasoner from scratch: one command, under an hour on 2 CPU cores (bfloat16).

    .venv/bin/python -m models.tiny_reasoner.build                 # writes models/tiny-reasoner/

1. data: a byte-level BPE tokenizer trained on seeded traces; the seeded training samples.
2. train: main LM loss plus the MTP layer's loss (`models.tiny_reasoner.train`).
3. export: the Hugging Face `MiMoForCausalLM` layout vLLM loads (`models.tiny_reasoner.export`).
4. eval: `bench/reasoner_eval.py` through `splitmind up` (gateway, prefill, NIXL, MTP decode).
5. model card: README.md with the recipe, the timings and the measured numbers.

Everything is seeded; the tokenizer and data are identical run to run, the weights up to the
floating-point nondeterminism of multithreaded CPU kernels. The committed checkpoint's build took
57.4 min on a 2-vCPU EPYC host (53.1 min data and training at 5,700 tokens/s, 4.3 min eval;
the model card has the build's own times). That needs bfloat16 matrix products
(`TrainConfig.bf16`, detected): in float32 the same host trains at 3,900 tokens/s, and the build
would take about 85 min. Training speed also varies between hosts of the same kind: in float32,
5,820 tokens/s on one and 4,030 on another.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from tokenizers import Tokenizer

from models.tiny_reasoner.card import write_card
from models.tiny_reasoner.data import FORCED_END, QUESTION_FORMS, reply, sample_problem
from models.tiny_reasoner.export import export
from models.tiny_reasoner.samples import SampleBuilder
from models.tiny_reasoner.train import TrainConfig, new_model, train
from models.tokenizer import train_bpe

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "models" / "tiny-reasoner"
VOCAB_SIZE = 384
MODEL_SHAPE = {"hidden_size": 256, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 768}


def build_tokenizer(seed: int, num_problems: int = 3000) -> Tokenizer:
    """BPE merges learned from seeded traces: digits stay single tokens, fixed phrases merge."""
    rng = random.Random(seed)
    problems = [sample_problem(rng) for _ in range(num_problems)]
    corpus = [p.phrased(i % len(QUESTION_FORMS)) for i, p in enumerate(problems)]
    corpus += [reply(p) for p in problems] + [FORCED_END] * 50
    return train_bpe(corpus, VOCAB_SIZE, split_digits=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Retrain the bundled tiny reasoner from scratch.")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--steps", type=int, default=TrainConfig.steps)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-eval", action="store_true", help="stop after export (no eval numbers in the card)")
    args = ap.parse_args(argv)
    say: Callable[[str], None] = lambda s: print(f"[build] {s}", flush=True)  # noqa: E731
    timings: dict[str, float] = {}
    t_all = time.monotonic()

    t0 = time.monotonic()
    say(f"1/5 data: tokenizer (vocab {VOCAB_SIZE}) and samples, seed {args.seed}")
    tokenizer = build_tokenizer(args.seed)
    cfg = replace(TrainConfig(), steps=args.steps, seed=args.seed)
    model = new_model(tokenizer.get_vocab_size(), **MODEL_SHAPE)
    say(f"model: {model.num_parameters() / 1e6:.2f}M parameters, {MODEL_SHAPE}")
    timings["tokenizer"] = time.monotonic() - t0

    t0 = time.monotonic()
    say(f"2/5 train: {cfg.steps} steps of about {cfg.tokens_per_batch} tokens")
    result = train(model, SampleBuilder(tokenizer), cfg, lambda s: say("  " + s))
    timings["data and training"] = time.monotonic() - t0

    t0 = time.monotonic()
    say(f"3/5 export to {args.out}")
    export(model, tokenizer, args.out)
    timings["export"] = time.monotonic() - t0

    if not args.skip_eval:
        t0 = time.monotonic()
        say("4/5 eval through the serving path (bench/reasoner_eval.py)")
        subprocess.run([sys.executable, str(ROOT / "bench" / "reasoner_eval.py"), "--model", str(args.out)],
                       check=True)
        timings["eval"] = time.monotonic() - t0
    timings["total"] = time.monotonic() - t_all

    say("5/5 model card")
    recipe = {"train": {**asdict(cfg), "bf16": cfg.use_bf16}, "shape": MODEL_SHAPE,
              "vocab_size": tokenizer.get_vocab_size(), "parameters": model.num_parameters(),
              "held_out": asdict(result), "timings_s": timings}
    (args.out / "training.json").write_text(json.dumps(recipe, indent=2) + "\n")
    write_card(args.out)
    say(f"done in {timings['total'] / 60:.1f} min: {args.out}")


if __name__ == "__main__":
    main()
