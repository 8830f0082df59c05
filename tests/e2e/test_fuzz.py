"""Fuzz the gateway from its own OpenAPI schema (schemathesis): no request gets a 5xx or hangs.

Schemathesis reads `/openapi.json` from a real PD cluster (`scripted_cluster`) and sends
generated requests to `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`
and `GET /health` (not `/admin` or `/metrics`: ops endpoints without a request body). It runs
its engine (the one its CLI runs; its pytest plugin does not work with pytest 9) over three
phases: examples, coverage (every field's bounds, one past each bound, each wrong type, each
missing required field, and the unexpected HTTP methods on every path), then fuzzing,
`MAX_EXAMPLES` hypothesis cases per operation, in both generation modes: positive (bodies the
schema accepts) and negative (bodies that break it). About 1,050 requests in all, about 430 of
them valid enough to reach the nodes, nearly all in the coverage phase, whose size the schema
decides (no setting bounds it). About 5 minutes on 2 cores (the suite of 2026-12-01).

Every response must:
- not be a 5xx (schemathesis's `not_a_server_error`): a client's mistake is a 4xx, and the
  cluster is healthy, so not even a 503;
- arrive within `REQUEST_TIMEOUT_S` (`max_response_time`), and no read of its body may stall
  that long (the request's timeout, an engine error): a hang is a failure;
- be an OpenAI error (`{"error": {"message", "type", ...}}`) when it is a 4xx.
Our schema declares no response bodies, so response-schema conformance is not checked; nor is
schemathesis's `positive_data_acceptance`, since the schema cannot say everything the server
checks (token ids within the vocabulary, `top_logprobs` only with `logprobs`): a schema-valid
body may rightly get a 400. Nor is `negative_data_rejection`: pydantic's lax mode takes `0` for
a boolean and `false` for an integer, which the schema forbids (a 200, not a 5xx).
Afterwards the cluster must be as it was: `/health` 200, every worker ready and idle, and a
plain chat completion through the openai client still answered.

Bounded and deterministic on purpose: CI runs the whole suite on 2 cores in 90 minutes, and
the cluster really generates tokens. Generation is derandomized with a fixed seed and no
example database, so every run sends the same requests and a failure reproduces.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
import schemathesis
from schemathesis import Case, CheckContext, GenerationMode, HookContext, Response
from schemathesis.engine import Status, events
from schemathesis.engine.recorder import ScenarioRecorder

from tests.e2e.cluster import RunningCluster
from tests.e2e.conftest import client

FUZZED_PATHS = ["/v1/chat/completions", "/v1/completions", "/v1/models", "/health"]
MAX_EXAMPLES = 20  # per operation (positive and negative mixed), in the fuzzing phase; 30 took 180 s
# One operation at a time. With 2 workers (the two completion endpoints at once, 2 minutes faster)
# a chat case failed on its first run and passed on Hypothesis's rerun ("Inconsistent results") in
# 2 of 3 runs, with no 5xx or error in the gateway's log: Hypothesis in two threads, not the server.
WORKERS = 1
SEED = 11  # issue #11
REQUEST_TIMEOUT_S = 30.0
SERVED_MODEL = "model"
# Cost, not correctness: the cluster really generates, and an unbounded `max_tokens` (or none:
# up to the context) with `n` up to 64 costs minutes per case. Bodies are capped at these.
MAX_FUZZ_TOKENS = 8
MAX_FUZZ_N = 2
TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")
IDLE_LIMIT_S = 10.0


def cheap_body(body: Any) -> Any:
    """The generated body with its generation capped (`MAX_FUZZ_TOKENS`, `MAX_FUZZ_N`) and its
    model named as served. Only integers in range shrink; a negative case's wrong type, zero or
    negative value is left for the server to refuse. Without the model's name, nearly every
    schema-valid body would stop at the 404 for an unknown model, and with an empty prompt
    (which the schema allows, and the coverage phase starts every completions case from) at a
    400 (tests/e2e/test_bad_input.py covers both); they would never reach templating, sampling
    checks or the workers."""
    if not isinstance(body, dict):
        return body
    body = dict(body)
    for field in TOKEN_FIELDS:
        if _is_int(body.get(field)) and body[field] > MAX_FUZZ_TOKENS:
            body[field] = MAX_FUZZ_TOKENS
    if all(body.get(field) is None for field in TOKEN_FIELDS):  # absent or null: up to the context
        body["max_tokens"] = MAX_FUZZ_TOKENS
    if _is_int(body.get("n")) and body["n"] > MAX_FUZZ_N:
        body["n"] = MAX_FUZZ_N
    if isinstance(body.get("model"), str) and len(body["model"]) <= 256:
        body["model"] = SERVED_MODEL
    if body.get("prompt") in ("", [], [""]):
        body["prompt"] = "1+1="
    return body


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def map_case(context: HookContext, case: Case[Any]) -> Case[Any]:
    """Schemathesis hook, in the coverage and fuzzing phases alike."""
    if case.body is not None:
        case.body = cheap_body(case.body)
    return case


@schemathesis.check
def openai_error_shape(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """A 4xx carries `{"error": {"message": str, "type": str, ...}}`."""
    if response.status_code < 400:
        return None
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        raise AssertionError(f"{response.status_code} without an OpenAI error body: {response.text[:500]!r}") from None
    if not (isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"]
            and isinstance(error.get("type"), str)):
        raise AssertionError(f"malformed OpenAI error: {response.text[:500]!r}")
    return None


def fuzz_schema(url: str) -> schemathesis.BaseSchema:
    whole = schemathesis.openapi.from_url(url + "/openapi.json", timeout=30)
    schema = whole.include(path=FUZZED_PATHS)
    schema.config.update(base_url=url, request_timeout=REQUEST_TIMEOUT_S, workers=WORKERS,
                         continue_on_failure=True)
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                    max_examples=MAX_EXAMPLES, deterministic=True, database="none")
    schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])
    # Generation must not learn from responses (their ids and timings differ run to run): the
    # same cases every run.
    phases = schema.config.phases
    phases.fuzzing.error_feedback.is_enabled = False
    phases.fuzzing.extra_data_sources.responses = False
    phases.coverage.extra_data_sources.responses = False
    schema.config.checks.update(included_check_names=["not_a_server_error", "openai_error_shape"],
                                max_response_time=REQUEST_TIMEOUT_S)
    schema.config.seed = SEED
    schema.hook("map_case")(map_case)
    return schema


def describe(recorder: ScenarioRecorder, case_id: str) -> str:
    """The request and response of one case, for a failure's report."""
    interaction = recorder.interactions.get(case_id)
    if interaction is None:
        return f"{case_id}: no response"
    req, resp = interaction.request, interaction.response
    body = (req.body or b"")[:2000].decode(errors="replace")
    answer = "no response" if resp is None else f"{resp.status_code} {resp.content[:1000]!r}"
    return f"{req.method} {req.uri}\n  body: {body}\n  -> {answer}"


def test_no_request_gets_a_5xx_or_hangs(scripted_cluster: RunningCluster) -> None:
    """The whole fuzz run (schemathesis's engine: coverage, then fuzzing) as one test."""
    statuses: Counter[str] = Counter()
    problems: list[str] = []
    for event in schemathesis.engine.from_schema(fuzz_schema(scripted_cluster.url)).execute():
        if isinstance(event, events.ScenarioFinished):
            rec = event.recorder
            for case_id, interaction in rec.interactions.items():
                code = interaction.response.status_code if interaction.response is not None else "none"
                statuses[f"{interaction.request.method} {rec.label.split()[-1]} {code}"] += 1
                if interaction.response is None:  # timed out, or the connection broke: which request
                    problems.append(f"[{event.phase.value}] no response\n{describe(rec, case_id)}")
            for case_id, checks in rec.checks.items():
                for check in checks:
                    if check.status != Status.SUCCESS:
                        info = check.failure_info
                        title = info.failure.title if info else check.status
                        problems.append(f"[{event.phase.value}] {check.name}: {title}\n{describe(rec, case_id)}")
        elif isinstance(event, events.NonFatalError):  # a timeout or a connection the server broke
            problems.append(f"[{event.phase}] {event.label}: {event.info.title}: {event.info.message}"[:3000])
        elif isinstance(event, events.FatalError):
            raise event.exception
    print("\n".join(f"{k}: {v}" for k, v in sorted(statuses.items())))
    assert statuses, "the fuzzer sent nothing"
    assert not problems, "\n\n".join(problems)


def busy_workers(url: str) -> list[dict[str, Any]]:
    workers: list[dict[str, Any]] = httpx.get(url + "/admin/workers", timeout=10).json()
    return [w for w in workers
            if w["state"] != "ready" or w["running_requests"] or w["waiting_requests"] or w["open_streams"]]


def test_cluster_is_healthy_after_fuzzing(scripted_cluster: RunningCluster) -> None:
    url = scripted_cluster.url
    assert httpx.get(url + "/health", timeout=10).status_code == 200
    deadline = time.monotonic() + IDLE_LIMIT_S  # node counters arrive by heartbeat (0.5 s)
    while (busy := busy_workers(url)) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not busy, busy
    workers = httpx.get(url + "/admin/workers", timeout=10).json()
    assert {w["role"] for w in workers} == {"prefill", "decode"}
    r = client(scripted_cluster).chat.completions.create(
        model=SERVED_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=8, temperature=0)
    message = r.choices[0].message
    assert (message.content or "") + (getattr(message, "reasoning_content", None) or "")
