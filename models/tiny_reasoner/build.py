"""Retrain the bundled tiny reasoner from scratch: one command, about an hour on 2 CPU cores (bfloat16).

    .venv/bin/python -m models.tiny_reasoner.build                 # writes models/tiny-reasoner/

1. data: a byte-level BPE tokenizer trained on seeded traces; the seeded training samples.
2. train: main LM loss plus the MTP layer's loss (`models.tiny_reasoner.train`).
3. answer stage: a short second run from those weights with traces cut at line ends from the
   `check` line on, so that an answer after a forced end copies the finished result
   (long2short's probes; `models.tiny_reasoner.line_ends` measures it before and after).
4. export: the Hugging Face `MiMoForCausalLM` layout vLLM loads (`models.tiny_reasoner.export`).
5. eval: `bench/reasoner_eval.py` through `splitmind up` (gateway, prefill, NIXL, MTP decode).
6. model card: README.md with the recipe, the timings and the measured numbers.

`--answer-stage-from DIR` runs steps 3 to 6 on an exported checkpoint (its tokenizer, weights and
stage-1 recipe): how the committed checkpoint got its answer stage.

Everything is seeded; the tokenizer and data are identical run to run, the weights up to the
floating-point nondeterminism of multithreaded CPU kernels. The committed checkpoint's build took
65.5 min on a 2-vCPU EPYC host (53.1 min data and training at 5,700 tokens/s, 9.7 min answer
stage with its two line-end measurements, 2.7 min eval; the model card has the build's own
times). That needs bfloat16 matrix products
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
from models.tiny_reasoner.export import export, load
from models.tiny_reasoner.line_ends import line_end_answers
from models.tiny_reasoner.model import TinyReasoner
from models.tiny_reasoner.samples import Mix, SampleBuilder
from models.tiny_reasoner.train import TrainConfig, new_model, train
from models.tokenizer import train_bpe

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "models" / "tiny-reasoner"
VOCAB_SIZE = 384
MODEL_SHAPE = {"hidden_size": 256, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 768}
# 300 steps, a quarter of the samples cut at a line end from the check line on, at a peak rate
# near stage 1's last (1.2e-4). At 6e-4 the stage taught the copy as well (line ends from the
# check line on: 53% -> 97% right) but unlearnt rare shapes: 7 of 1,800 fresh full traces had a
# teacher-forced slip (5-5, 1897+3389, ...) against stage 1's 2, and greedy accuracy on
# long2short's 300 problems fell from 100% to 98.7%. At 2e-4 (the committed checkpoint): 1 slip,
# 96% right at those line ends (training.json, "answer_stage").
ANSWER_STAGE = TrainConfig(steps=300, peak_lr=2e-4, warmup_steps=20, num_samples=7200, eval_every=100, seed=1,
                           mix=Mix(line_cut=0.25))
LINE_END_PROBLEMS = 200
LINE_END_SEED = 20261202


def build_tokenizer(seed: int, num_problems: int = 3000) -> Tokenizer:
    """BPE merges learned from seeded traces: digits stay single tokens, fixed phrases merge."""
    rng = random.Random(seed)
    problems = [sample_problem(rng) for _ in range(num_problems)]
    corpus = [p.phrased(i % len(QUESTION_FORMS)) for i, p in enumerate(problems)]
    corpus += [reply(p) for p in problems] + [FORCED_END] * 50
    return train_bpe(corpus, VOCAB_SIZE, split_digits=True)


def line_ends(model: TinyReasoner, builder: SampleBuilder) -> dict[str, float]:
    rng = random.Random(LINE_END_SEED)
    return asdict(line_end_answers(model, builder, [sample_problem(rng) for _ in range(LINE_END_PROBLEMS)]))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Retrain the bundled tiny reasoner from scratch.")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--steps", type=int, default=TrainConfig.steps)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--answer-stage-from", type=Path, metavar="DIR",
                    help="skip the tokenizer and stage 1: load DIR's checkpoint and run the answer stage on it")
    ap.add_argument("--skip-eval", action="store_true", help="stop after export (no eval numbers in the card)")
    args = ap.parse_args(argv)
    say: Callable[[str], None] = lambda s: print(f"[build] {s}", flush=True)  # noqa: E731
    timings: dict[str, float] = {}
    t_all = time.monotonic()

    t0 = time.monotonic()
    if args.answer_stage_from:
        source = args.answer_stage_from
        say(f"1-2/6 data and stage 1: the checkpoint in {source}")
        tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
        model = load(source)
        earlier = json.loads((source / "training.json").read_text())
        stage1 = {k: earlier[k] for k in ("train", "shape", "vocab_size", "parameters", "held_out")}
        timings.update({k: v for k, v in earlier["timings_s"].items() if k in ("tokenizer", "data and training")})
    else:
        say(f"1/6 data: tokenizer (vocab {VOCAB_SIZE}) and samples, seed {args.seed}")
        tokenizer = build_tokenizer(args.seed)
        cfg = replace(TrainConfig(), steps=args.steps, seed=args.seed)
        model = new_model(tokenizer.get_vocab_size(), **MODEL_SHAPE)
        say(f"model: {model.num_parameters() / 1e6:.2f}M parameters, {MODEL_SHAPE}")
        timings["tokenizer"] = time.monotonic() - t0

        t0 = time.monotonic()
        say(f"2/6 train: {cfg.steps} steps of about {cfg.tokens_per_batch} tokens")
        result = train(model, SampleBuilder(tokenizer), cfg, lambda s: say("  " + s))
        timings["data and training"] = time.monotonic() - t0
        stage1 = {"train": {**asdict(cfg), "bf16": cfg.use_bf16}, "shape": MODEL_SHAPE,
                  "vocab_size": tokenizer.get_vocab_size(), "parameters": model.num_parameters(),
                  "held_out": asdict(result)}

    t0 = time.monotonic()
    builder = SampleBuilder(tokenizer)
    stage = ANSWER_STAGE
    say(f"3/6 answer stage: {stage.steps} steps, {stage.mix.line_cut:.0%} of samples cut at a line end")
    before = line_ends(model, builder)
    say(f"  line ends before: {before}")
    result = train(model, builder, stage, lambda s: say("  " + s))
    after = line_ends(model, builder)
    say(f"  line ends after: {after}")
    timings["answer stage"] = time.monotonic() - t0

    t0 = time.monotonic()
    say(f"4/6 export to {args.out}")
    export(model, tokenizer, args.out)
    timings["export"] = time.monotonic() - t0

    if not args.skip_eval:
        t0 = time.monotonic()
        say("5/6 eval through the serving path (bench/reasoner_eval.py)")
        subprocess.run([sys.executable, str(ROOT / "bench" / "reasoner_eval.py"), "--model", str(args.out)],
                       check=True)
        timings["eval"] = time.monotonic() - t0
    timings["total"] = time.monotonic() - t_all
    if args.answer_stage_from:  # the stage-1 build's own time, as it measured it
        timings["total"] += sum(v for k, v in timings.items() if k in ("tokenizer", "data and training"))

    say("6/6 model card")
    recipe = {**stage1,
              "answer_stage": {"train": {**asdict(stage), "bf16": stage.use_bf16}, "held_out": asdict(result),
                               "line_ends_before": before, "line_ends_after": after},
              "timings_s": timings}
    (args.out / "training.json").write_text(json.dumps(recipe, indent=2) + "\n")
    write_card(args.out)
    say(f"done in {timings['total'] / 60:.1f} min: {args.out}")


if __name__ == "__main__":
    main()
