"""Gateway <-> node wire protocol: typed msgspec structs, msgpack on ZMQ.

Request plane: the gateway's DEALER talks to each node's ROUTER. Every message carries the
request id, so an abort always finds its work. Stats plane: each node PUBlishes `NodeStats`
twice a second; the gateway SUBscribes.

`PROTOCOL_VERSION` travels in `HealthRequest`/`HealthReply`; a node refuses a gateway of another
version (and vice versa) instead of misreading its messages.
"""

from __future__ import annotations

import enum

import msgspec

PROTOCOL_VERSION = 5  # 3: ReleaseKV; 4: EngineTimings; 5: KV transports (HealthReply.kv_address)

MAX_LOGPROBS = 20  # most alternatives per token a request may ask for (OpenAI's top_logprobs limit)


class Role(enum.IntEnum):
    PREFILL = 1
    DECODE = 2


class FinishReason(enum.IntEnum):
    STOP = 1  # a stop token (eos) or stop string
    LENGTH = 2  # max_tokens or the context length
    ABORT = 3


class ErrorCode(enum.IntEnum):
    BAD_REQUEST = 400  # the client's fault: not retried
    OVERLOADED = 503  # retryable elsewhere
    INTERNAL = 500  # retryable elsewhere


class KVTransferParams(msgspec.Struct, frozen=True, omit_defaults=True):
    """A prefill's KV on its way to decode: the connectors' `kv_transfer_params`, typed.

    Both transports keep one contract, seeded decode: decode's prompt is prefill's prompt plus
    the token prefill produced, and only `remote_num_tokens` (prefill's prompt) are taken as
    remote, so decode computes that token's KV itself.
    - "nixl" (pulled): the KV waits on the prefill node, at `remote_host`/`remote_port` (NIXL's
      side channel), in `remote_block_ids`, until the decode node pulls it.
    - "zmq" (pushed): in a prefill request, `push_to` (the decode node's KV socket, from its
      `HealthReply.kv_address`) and `transfer_id` tell prefill where to push as it computes; in
      prefill's reply and the decode request they name what was pushed.

    `extra` holds connector fields this version does not name, so a newer vLLM's additions
    pass through untouched.
    """

    transport: str = "nixl"  # "nixl" | "zmq"
    remote_engine_id: str = ""
    remote_request_id: str = ""
    remote_host: str = ""
    remote_port: int = 0
    remote_block_ids: list[list[int]] = []  # one list per KV-cache group
    remote_num_tokens: int = 0
    tp_size: int = 1
    transfer_id: str = ""
    push_to: str = ""
    extra: dict[str, msgspec.Raw] = {}

    def __post_init__(self) -> None:
        if self.transport == "nixl":
            if not (self.remote_engine_id and self.remote_request_id and self.remote_host and self.remote_port):
                raise ValueError("NIXL KV params need remote_engine_id, remote_request_id, remote_host and "
                                 "remote_port")
        elif self.transport == "zmq":
            if not self.transfer_id or len(self.transfer_id) > 256 or len(self.push_to) > 256:
                raise ValueError("ZMQ KV params need a transfer_id (at most 256 characters)")
        else:
            raise ValueError(f"unknown KV transport {self.transport[:20]!r}")


class Sampling(msgspec.Struct, frozen=True, omit_defaults=True, array_like=True):
    """The sampling knobs that reach vLLM. Stop *strings* stay in the gateway (it detokenizes)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    stop_token_ids: list[int] = []
    ignore_eos: bool = False
    logprobs: int | None = None  # None: none; k: each sampled token's logprob and the top k
    logit_bias: dict[int, float] = {}


class TokenLogprob(msgspec.Struct, frozen=True, array_like=True):
    """One generated token's log-probability and the `top_*` alternatives, most likely first."""

    token_id: int
    logprob: float
    top_ids: list[int] = []
    top_logprobs: list[float] = []


class HealthRequest(msgspec.Struct, tag="health", frozen=True):
    request_id: str
    protocol_version: int = PROTOCOL_VERSION


class GenerateRequest(msgspec.Struct, tag="generate", frozen=True):
    """Prefill nodes run it with max_tokens=1 and keep the KV for a decode node to pull.

    Decode nodes run it to the end; with `kv_transfer` set, `prompt_token_ids` is the prompt plus
    the token prefill produced, and the prompt's KV is pulled instead of computed.
    """

    request_id: str
    prompt_token_ids: list[int]
    sampling: Sampling
    kv_transfer: KVTransferParams | None = None


class AbortRequest(msgspec.Struct, tag="abort", frozen=True):
    request_id: str


class ReleaseKV(msgspec.Struct, tag="release_kv", frozen=True):
    """To a decode node: the prompt KV a prefill node holds for `kv_transfer` will never be
    pulled (the client left between prefill and decode, or the first token ended the request);
    tell the prefill node to free it now rather than at its lease's end."""

    request_id: str
    kv_transfer: KVTransferParams


class HealthReply(msgspec.Struct, tag="health_reply", frozen=True):
    request_id: str
    worker_id: str
    role: Role
    pid: int
    protocol_version: int
    model: str
    max_model_len: int
    mtp_tokens: int = 0  # speculative tokens per step; 0: MTP off
    prefix_caching: bool = False  # its engine keeps prompts' KV for later requests (routing)
    kv_transport: str = "nixl"
    kv_address: str = ""  # a decode node on "zmq": where prefill pushes KV for it


class EngineTimings(msgspec.Struct, frozen=True, array_like=True):
    """Where a request's time went in its node's engine before the first token (vLLM's request
    stats, engine-core clock). For a decode request that receives its prompt's KV, `wait_s` is
    the wait for the KV (the transfer, and any wait for a slot to start it) and `first_step_s`
    its first decode step; otherwise `wait_s` is the engine's queue and `first_step_s` the
    prefill that produced the first token."""

    wait_s: float  # queued -> scheduled
    first_step_s: float  # scheduled -> first token


class TokenDelta(msgspec.Struct, tag="delta", frozen=True, omit_defaults=True):
    """New token ids for a request; the last one has `finish_reason` set."""

    request_id: str
    token_ids: list[int]
    finish_reason: FinishReason | None = None
    kv_transfer: KVTransferParams | None = None
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    logprobs: list[TokenLogprob] | None = None  # one per token id, when the request asked
    engine_timings: EngineTimings | None = None  # on a request's first delta, when the engine kept stats


def merge_deltas(prev: TokenDelta, new: TokenDelta) -> TokenDelta:
    """Two consecutive deltas of one request as one (what a reader that lags is handed)."""
    logprobs = None if prev.logprobs is None and new.logprobs is None else (prev.logprobs or []) + (new.logprobs or [])
    return TokenDelta(
        request_id=new.request_id, token_ids=prev.token_ids + new.token_ids, finish_reason=new.finish_reason,
        kv_transfer=new.kv_transfer or prev.kv_transfer, num_prompt_tokens=new.num_prompt_tokens,
        num_cached_tokens=new.num_cached_tokens, logprobs=logprobs,
        engine_timings=prev.engine_timings or new.engine_timings,
    )


class ErrorReply(msgspec.Struct, tag="error", frozen=True):
    request_id: str
    code: ErrorCode
    message: str


class HistogramState(msgspec.Struct, array_like=True):
    """Cumulative histogram, Prometheus-style: counts per upper bound (last is +Inf)."""

    bounds: list[float]
    counts: list[int]
    total: float = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value


# NIXL failures a node counts (kv_transfer/stats.py): a KV read failed; no metadata from the
# peer; a "done" to the prefill side failed; prefill KV whose lease ran out before a pull
KV_FAILURE_KINDS = ("transfer", "handshake", "notification", "expired")


class NodeStats(msgspec.Struct, tag="stats", omit_defaults=True):
    """A node's heartbeat: load for routing, counters for /metrics (cumulative since start)."""

    worker_id: str
    role: Role
    pid: int
    seq: int
    num_running: int = 0
    num_waiting: int = 0
    kv_usage: float = 0.0
    tokens_in_flight: int = 0  # prompt + generated tokens of the requests open on the node
    remote_kv_tokens_total: int = 0
    kv_transfers_total: int = 0
    kv_transfer_bytes_total: int = 0
    kv_transfer_seconds: HistogramState | None = None
    kv_transfer_failures_total: dict[str, int] = {}  # NIXL failures by kind, KV_FAILURE_KINDS
    spec_draft_tokens_total: int = 0
    spec_accepted_tokens_total: int = 0
    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    prompt_tokens_computed_total: int = 0  # prefilled on this node (not cached, not received)
    prompt_tokens_local_cache_total: int = 0  # served by its prefix cache
    requests_total: int = 0  # engine requests started
    kv_releases_total: int = 0  # ReleaseKV messages passed on to a prefill node (decode nodes)
    restarts: int = 0  # how often `splitmind up` restarted this node


ToNode = HealthRequest | GenerateRequest | AbortRequest | ReleaseKV
FromNode = HealthReply | TokenDelta | ErrorReply

encoder = msgspec.msgpack.Encoder()
to_node_decoder = msgspec.msgpack.Decoder(ToNode)
from_node_decoder = msgspec.msgpack.Decoder(FromNode)
stats_decoder = msgspec.msgpack.Decoder(NodeStats)


def kv_params_from_vllm(params: dict[str, object]) -> KVTransferParams:
    """Type vLLM's dict; unknown keys ride along in `extra`."""
    known = set(KVTransferParams.__struct_fields__) - {"extra"}
    body = {k: v for k, v in params.items() if k in known}
    extra = {k: msgspec.Raw(msgspec.msgpack.encode(v)) for k, v in params.items() if k not in known}
    return msgspec.structs.replace(msgspec.convert(body, KVTransferParams), extra=extra)


# Fields vLLM's NixlConnector never had: left out of its params at their defaults.
_ZMQ_ONLY = {"transport": "nixl", "transfer_id": "", "push_to": ""}


def kv_params_to_vllm(params: KVTransferParams, **overrides: object) -> dict[str, object]:
    out: dict[str, object] = {k: msgspec.msgpack.decode(v) for k, v in params.extra.items()}
    for name in KVTransferParams.__struct_fields__:
        value = getattr(params, name)
        if name != "extra" and not (name in _ZMQ_ONLY and value == _ZMQ_ONLY[name]):
            out[name] = value
    out.update(overrides)
    return out
