"""long2short's early exit: end the thinking once the answer has settled (Dynasor-CoT's probes).

At the first line end past every `every` reasoning tokens a sample streams, the gateway asks the
decode node holding it for a probe: a separate engine request of the prompt, the thinking up to
that line end, the model's forced ending and its answer prefix, decoded greedily for a few
tokens. The node's prefix cache holds the
prompt and all full blocks of the thinking (the sample is running there), so a probe computes
its partial last block, the ending and the answer: a handful of tokens, not a re-prefill. When
the last `agree` probes found the same answer, the thinking guard ends the thinking at the next
line end (`ThinkingGuard.end_soon`, within `grace` tokens: a line end is where the probes read
the answer, and a cut in the middle of a line may cut the answer itself), with the same forced
ending as a budget, and the sample goes on to its answer.

Probes never delay or change the sample's own stream: they run beside it, one at a time (a
probe due while one is out is skipped), and their tokens are counted apart (`probe_tokens`).
Whatever ends the sample (its end, a cut, the client leaving) cancels the probe out, and the
probe's own `finally` aborts it on the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from splitmind.protocol import GenerateRequest, Sampling

if TYPE_CHECKING:
    from router.client import WorkerClient
    from router.thinking import ThinkingGuard

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class EarlyExit:
    """How one request probes; the API builds it from the model's reasoning profile."""

    every: int  # reasoning tokens between probes
    agree: int  # the last this many probes must have found the same answer
    max_tokens: int  # a probe's answer is this many tokens at most
    suffix_ids: tuple[int, ...]  # forced ending + answer prefix, after a line whose newline is still to come
    suffix_after_line_ids: tuple[int, ...]  # the same, after a newline
    answer_of: Callable[[list[int]], str | None]  # a probe's generated ids -> its answer, if it has one
    # An answer counts only if each of its tokens had at least this probability (DEER's gate);
    # 0: every answer counts, and probes ask for no logprobs.
    min_confidence: float = 0.0
    stop_token_ids: tuple[int, ...] = ()
    grace: int = 128  # after agreement, the line in progress may run this many tokens more
    timeout_s: float = 30.0  # one probe, from sending to its answer


# (outcome: "answer" | "unsure" | "no_answer" | "failed" | "cancelled", tokens), for metrics
ProbeOutcome = Callable[[str, int], None]


@dataclass
class Prober:
    """The probes of one sample."""

    config: EarlyExit
    request_id: str
    on_probe: ProbeOutcome | None = None
    answers: list[str | None] = field(default_factory=list)
    probe_tokens: int = 0  # the suffixes sent and the tokens generated, all probes
    agreed: bool = False
    _sent: int = 0  # the multiple of `every` the last probe was for
    _probed_at: int = 0  # guard.line_end_fed of the last probe
    _task: asyncio.Task[None] | None = None

    def after(self, guard: ThinkingGuard, context_ids: list[int], decode: WorkerClient) -> None:
        """Called after each chunk of the sample: starts a probe when one is due. `context_ids`
        is the prompt and every token the client has so far (the guard was fed the same).

        A probe is due at the first line end past each multiple of `every` reasoning tokens,
        and sees the thinking up to that line end. Probes in the middle of a line saw the same
        unfinished step again and again, and agreed on its half-made answer (the bundled model:
        48.7% right at every=16, agree=2, against 100% with full thinking)."""
        due = (self._sent + 1) * self.config.every
        if guard.ended or self.agreed or guard.line_end_thought < due or guard.line_end_fed <= self._probed_at:
            return
        if self._task is not None and not self._task.done():
            return  # one probe at a time; the next line end past the next multiple gets it
        self._sent = guard.line_end_thought // self.config.every
        self._probed_at = guard.line_end_fed
        cut = len(context_ids) - (guard.fed - guard.line_end_fed)
        probe_id = f"{self.request_id}-p{self._sent}"
        suffix = self.config.suffix_after_line_ids if guard.line_end_has_newline else self.config.suffix_ids
        self._task = asyncio.create_task(self._probe(decode, probe_id, [*context_ids[:cut], *suffix], len(suffix),
                                                     guard), name=f"probe-{probe_id}")

    async def _probe(self, decode: WorkerClient, probe_id: str, ids: list[int], num_suffix: int,
                     guard: ThinkingGuard) -> None:
        cfg = self.config
        gated = cfg.min_confidence > 0
        sampling = Sampling(max_tokens=cfg.max_tokens, temperature=0.0, stop_token_ids=list(cfg.stop_token_ids),
                            logprobs=0 if gated else None)
        generated: list[int] = []
        lowest = 0.0  # the lowest logprob of the generated tokens
        answer: str | None = None
        outcome = "failed"
        stream = None
        try:
            async with asyncio.timeout(cfg.timeout_s):
                stream = await decode.open(GenerateRequest(probe_id, ids, sampling))
                # Counted as they go, not when the probe ends: the usage is read as soon as the
                # sample ends, while a probe cancelled by that end may still await its abort.
                self.probe_tokens += num_suffix
                while not stream.finished:
                    delta = await stream.next(cfg.timeout_s, "a long2short probe's answer")
                    generated += delta.token_ids
                    self.probe_tokens += len(delta.token_ids)
                    if gated:
                        lowest = min([lowest, *(lp.logprob for lp in delta.logprobs or ())])
                    answer = cfg.answer_of(generated)
                    if answer is not None:
                        break  # the rest of the probe would only repeat it
            outcome = "answer" if answer is not None else "no_answer"
            if answer is not None and gated and math.exp(lowest) < cfg.min_confidence:
                logger.debug("request %s: probe %s answered %r at confidence %.2f", self.request_id, probe_id,
                             answer, math.exp(lowest))
                answer, outcome = None, "unsure"  # breaks agreement, as no answer does
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as exc:  # a failed probe changes nothing: the sample goes on thinking
            logger.info("request %s: probe %s failed: %s", self.request_id, probe_id, exc)
        finally:
            if stream is not None:
                if stream.finished:
                    decode.release(stream)
                else:  # shielded: this runs while the sample is being cancelled
                    with contextlib.suppress(Exception):
                        await asyncio.shield(decode.abort(probe_id))
            tokens = (num_suffix if stream is not None else 0) + len(generated)
            if self.on_probe is not None:
                self.on_probe(outcome, tokens)
        self.answers.append(answer)
        last = self.answers[-cfg.agree:]
        if len(last) == cfg.agree and last[0] is not None and all(a == last[0] for a in last):
            self.agreed = True
            guard.end_soon(cfg.grace, "early_exit")
            logger.info("request %s: %d probes agree on %r; ending the thinking", self.request_id, cfg.agree,
                        last[0])

    def cancel(self) -> None:
        """Cancel the probe out; its own `finally` aborts it on the node (shielded). Not awaited:
        this runs while the sample is being cancelled, and a second cancel must not cut short
        what the sample's own `finally` still has to do."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None
