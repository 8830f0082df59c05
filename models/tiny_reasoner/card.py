"""The model card (README.md) of the bundled tiny reasoner, written from what a build measured.

Every number in the card comes from `training.json` (the recipe, timings and held-out scores
that `build.py` wrote) and `eval.md` (the tables `bench/reasoner_eval.py` wrote), so the card
never disagrees with the checkpoint beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models.tiny_reasoner.data import FORCED_END, Problem, reply

COMMAND = ".venv/bin/python -m models.tiny_reasoner.build"


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.0f}%"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _answer_stage(stage: dict[str, Any] | None) -> str:
    if stage is None:
        return ""
    train, before, after = stage["train"], stage["line_ends_before"], stage["line_ends_after"]
    return f"""
Then the answer stage: {train['steps']} more steps from those weights, peak learning rate
{train['peak_lr']} ({train['warmup_steps']} warm-up steps), {train['num_samples']:,} samples of the same
mix except that {_pct(train['mix']['line_cut'])} are traces cut at a line end from the `check` line on
and closed with the forced end. Stage 1's cuts fall at random tokens, rarely at a line end, and
the model had not learnt to copy the finished result (`sum 38141_`) from the line before the
forced end: that is what long2short's probes and budgets that finish their line ask of it.
Teacher-forced over {before['probes']} line ends of fresh problems
(`python -m models.tiny_reasoner.line_ends`), the answer after a forced end was right at
{_pct(before['from_check'])} of line ends from the check line on before the stage and
{_pct(after['from_check'])} after ({_pct(before['before_check'])} and {_pct(after['before_check'])} before
the check line, where the result is not known yet); the median confidence (lowest probability
of the answer's tokens) of right answers {after['confidence_right']:.2f}, of wrong ones
{after['confidence_wrong']:.2f}. Held out after it: {100 * stage['held_out']['exact_match']:.1f}% of full traces
exact.
"""


def write_card(model_dir: Path) -> Path:
    recipe: dict[str, Any] = json.loads((model_dir / "training.json").read_text())
    config: dict[str, Any] = json.loads((model_dir / "config.json").read_text())
    eval_md = model_dir / "eval.md"
    size_mb = (model_dir / "model.safetensors").stat().st_size / 1e6
    train, timings, held_out = recipe["train"], recipe["timings_s"], recipe["held_out"]
    mix = train["mix"]
    example = Problem(4821, 379, "+")
    timing_rows = "\n".join(f"| {name} | {_minutes(s)} |" for name, s in timings.items())
    precision = ("Matrix products in bfloat16 (autocast; weights, optimizer state and loss in float32)"
                 if train.get("bf16") else "float32")
    evaluation = eval_md.read_text() if eval_md.exists() else "(not evaluated: the build ran with --skip-eval)\n"
    budgets_md = model_dir / "budgets.md"
    budgets = (f"{budgets_md.read_text()}\n![accuracy against the thinking a budget allows](budgets.png)\n"
               if budgets_md.exists() else "(not measured yet: `.venv/bin/python bench/thinking_budgets.py --card`)\n")
    answer_stage = _answer_stage(recipe.get("answer_stage"))
    l2s_md = model_dir / "long2short.md"
    long2short = (f"{l2s_md.read_text()}\n![long2short: accuracy against tokens](long2short.png)\n"
                  if l2s_md.exists() else "(not measured yet: `.venv/bin/python bench/long2short.py --card`)\n")
    text = f"""# tiny-reasoner

A {recipe['parameters'] / 1e6:.1f}M-parameter reasoning model for verifiable arithmetic, trained by
splitmind on two CPU cores so that the system has a real reasoning model to serve out of the box
(no model hub is reachable here). It thinks step by step inside `<think>…</think>`, longer for
harder problems, then answers in one line: `The answer is N.` `splitmind up` serves it when no
`--model` is given.

## Architecture

`MiMoForCausalLM`, the layout vLLM's MTP speculative decoding loads: a Qwen2 decoder
({config['num_hidden_layers']} layers, hidden {config['hidden_size']}, {config['num_attention_heads']} heads /
{config['num_key_value_heads']} KV heads, MLP {config['intermediate_size']}, RoPE θ {config['rope_theta']:g})
plus `num_nextn_predict_layers: {config.get('num_nextn_predict_layers', 0)}` multi-token-prediction layer that
predicts token t+2 from the main model's hidden state at t (before the final norm) and the
embedding of token t+1. Separate `lm_head` (`tie_word_embeddings: false`), shared with the MTP
layer. float32 safetensors, {size_mb:.1f} MB.

Tokenizer: byte-level BPE (`tokenizers`), vocabulary {config['vocab_size']}. `<|im_start|>`, `<|im_end|>`,
`<|endoftext|>` are special tokens; `<think>` and `</think>` are single added tokens that are not
special, so text output keeps them. Every digit and every `_` is its own token. Chat template:
Qwen3-style; the assistant turn opens `<think>\\n`, and `chat_template_kwargs:
{{"enable_thinking": false}}` emits an empty think block, after which the model answers directly.

## Task and trace

Addition and subtraction of non-negative integers of 1–5 digits (results may be negative) and
multiplication of a number of up to 3 digits by one digit, asked in plain words ("What is
4821+379?"). The thinking writes each operand out by place, works column by column with
carries or borrows into a fixed-width running result, then re-checks the result another way
(subtracting back, adding back, or long division) and carries it to the end:

```
{reply(example)}
```

A thinking budget ends the thinking by forcing `{json.dumps(FORCED_END)[1:-1]}`: the model was
trained on traces cut at every length and closed that way, and answers in the same format from
what it has so far (see the cut rows below). `reasoning_profile.json` tells the server so, with
effort budgets that fit these traces.

## Training

```bash
{COMMAND}        # data, training, export, eval, this card
```

Seeded data ({train['num_samples']:,} samples drawn once: {_pct(1 - mix['cut'] - mix['no_think'])} full traces,
{_pct(mix['cut'])} traces cut at a random token and closed with the forced end, {_pct(mix['no_think'])} thinking off;
{_pct(mix['other_question_forms'])} of questions in other phrasings; +, -, * drawn
{' : '.join(f"{w:g}" for w in mix['op_weights'])}; {_pct(mix.get('hard', 0))} of problems drawn instead from the
shapes earlier checkpoints got wrong, `sample_hard_problem`), loss on the reply only and not on
the forced end.
AdamW (β 0.9/0.95, weight decay
{train['weight_decay']}), {train['steps']} steps of about {train['tokens_per_batch']} tokens
(length-bucketed batches), peak learning rate {train['peak_lr']} with {train['warmup_steps']} warm-up steps and
cosine decay to {train['final_lr_fraction']:g}×, gradient clipping 1.0; loss = LM loss +
{train['mtp_loss_weight']} × MTP loss. {precision} on {train['threads']} CPU threads.
{answer_stage}
Time of the build that produced this checkpoint (2 vCPUs, no GPU):

| phase | time |
|---|---:|
{timing_rows}

Held out during training, teacher-forced (every reply token right given the right prefix,
a lower bound on greedy accuracy): {100 * held_out['exact_match']:.1f}% of traces exact, token accuracy
{100 * held_out['token_accuracy']:.2f}%, MTP top-1 accuracy {100 * held_out['mtp_accuracy']:.2f}%.

## Evaluation through the serving path

`bench/reasoner_eval.py` (run by the build) starts `splitmind up` with one prefill and one decode
node, NIXL between them and MTP on the decode node, and asks fresh problems with the `openai`
client, greedy. Cut rows: the first 25/50/75% of each problem's own reasoning tokens, then the
forced end, continued by the model.

{evaluation}
![accuracy against reasoning tokens](accuracy_vs_reasoning.png)

## Thinking budgets through the API

`bench/thinking_budgets.py --card` asks fresh problems with each budget and effort level the API
takes (`thinking_budget`, `reasoning_effort`), greedy. The server ends the thinking after the
budget once the line in progress is finished (or 16 more tokens), with the forced end above.

{budgets}
## long2short through the API

`bench/long2short.py --card` asks fresh problems with full thinking, budgets, `no_think` and
`early_exit` over a grid of probe settings (`probe_every` K, `probe_agree` m), greedy and at
0.7. Probes are the forced end above and `The answer is `, read greedily.

{long2short}
## Limits

It knows this task only. Numbers outside the trained ranges, other operations or free text get
confident nonsense. Its chat template keeps one user turn in mind at a time. `eval.json` holds
every answer of the eval above; `bench/reasoner_errors.py` counts teacher-forced errors by step
of the trace, which shows where its wrong answers come from.
"""
    path = model_dir / "README.md"
    path.write_text(text)
    return path
