"""Configuration: frozen dataclasses, validated on construction.

The config file (TOML, `splitmind/config_file.py`) has a table for each, one file for every role:

    [cluster]    # ClusterConfig: what `splitmind up` starts
    [engine]     # EngineConfig: how every node builds its vLLM engine
    [gateway]    # GatewayTuning: timeouts, routing knobs, reasoning visibility
    [reasoning]  # the served model's reasoning profile, key by key (splitmind/reasoning_profile.py)
    [serve], [[workers]], [[discover]]  # a gateway on its own (splitmind/standalone.py, WorkerAddress, WorkerDNS)
    [node]       # a node on its own (splitmind/standalone.py)

Command-line flags override the environment, which overrides the file. Environment variables are
read only at entry points.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from splitmind import curve
from splitmind.protocol import Role

KV_TRANSPORTS = ("nixl", "zmq")


@dataclass(frozen=True)
class EngineConfig:
    """How a node builds its vLLM AsyncLLM."""

    dtype: str = "auto"  # "auto": float32 on CPU (bf16 kernels need AVX512-BF16), else the model's
    max_model_len: int | None = None
    kv_cache_gib: int = 4  # VLLM_CPU_KVCACHE_SPACE on CPU
    max_num_seqs: int = 64
    enforce_eager: bool = True
    enable_prefix_caching: bool = True
    kv_lease_s: int = 30  # how long a prefill node keeps KV that no decode node pulled
    kv_buffer_device: str = "auto"  # "auto": "cpu" on CPU, "cuda" on GPU
    mtp_tokens: int | None = None  # MTP speculative tokens; None: 1 if the model has MTP layers; 0: off
    kv_transport: str = "nixl"  # how prefill's KV reaches decode: "nixl" (RDMA/UCX, pulled) or "zmq" (TCP, pushed)

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"engine.dtype must be auto, float32, bfloat16 or float16, not {self.dtype!r}")
        if self.max_model_len is not None and self.max_model_len < 16:
            raise ValueError("engine.max_model_len must be at least 16")
        if self.kv_cache_gib <= 0:
            raise ValueError("engine.kv_cache_gib must be positive")
        if self.max_num_seqs < 1:
            raise ValueError("engine.max_num_seqs must be at least 1")
        if self.kv_lease_s < 1:
            raise ValueError("engine.kv_lease_s must be at least 1")
        if self.mtp_tokens is not None and not 0 <= self.mtp_tokens <= 8:
            raise ValueError("engine.mtp_tokens must be between 0 (off) and 8")
        if self.kv_transport not in KV_TRANSPORTS:
            raise ValueError(f"engine.kv_transport must be one of {', '.join(KV_TRANSPORTS)}, "
                             f"not {self.kv_transport!r}")


@dataclass(frozen=True)
class NodeSpec:
    """Everything one node process needs; passed to it as JSON on its command line."""

    worker_id: str
    role: Role
    model: str
    engine: EngineConfig
    rpc_address: str  # ZMQ ROUTER, e.g. tcp://127.0.0.1:18100
    stats_address: str  # ZMQ PUB
    nixl_host: str
    nixl_port: int  # NIXL side channel (VLLM_NIXL_SIDE_CHANNEL_PORT), or with kv_transport "zmq" the KV socket
    cpus: str = ""  # VLLM_CPU_OMP_THREADS_BIND, e.g. "0" or "2-3"; "" leaves vLLM's default
    keys_dir: str = ""  # CURVE keys (splitmind/curve.py): node.key_secret, authorized/; "": plain TCP
    restarts: int = 0  # how often `splitmind up` restarted this node; reported in its heartbeat

    def __post_init__(self) -> None:
        if not self.worker_id:
            raise ValueError("worker_id must not be empty")
        if not 0 < self.nixl_port < 65536:
            raise ValueError(f"nixl_port out of range: {self.nixl_port}")
        if self.keys_dir:
            curve.load_server_keys(self.keys_dir)  # raises ValueError naming the missing file


# A node's ports when it runs on its own (`splitmind node`, [node]); DNS discovery assumes them too.
NODE_RPC_PORT = 8100
NODE_STATS_PORT = 8101
NODE_NIXL_PORT = 5600  # vLLM's own default for VLLM_NIXL_SIDE_CHANNEL_PORT


@dataclass(frozen=True)
class WorkerAddress:
    """A worker the gateway knows by address (`[[workers]]` in the config file)."""

    worker_id: str
    role: Role
    rpc_address: str  # the node's request plane, e.g. tcp://10.0.0.7:8100
    stats_address: str  # its stats plane, e.g. tcp://10.0.0.7:8101

    def __post_init__(self) -> None:
        if not self.worker_id:
            raise ValueError("workers.worker_id must not be empty")
        for name in ("rpc_address", "stats_address"):
            if "://" not in getattr(self, name):
                raise ValueError(f"worker {self.worker_id}: {name} must be a ZMQ address such as "
                                 f"tcp://10.0.0.7:8100, not {getattr(self, name)!r}")


@dataclass(frozen=True)
class WorkerDNS:
    """Workers behind one DNS name (a Kubernetes headless Service): every address the name
    resolves to is one worker of `role`, serving at the same two ports (router/discovery.py)."""

    role: Role
    name: str
    rpc_port: int = NODE_RPC_PORT
    stats_port: int = NODE_STATS_PORT

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 253:
            raise ValueError("a worker DNS name must have 1 to 253 characters")
        for port in (self.rpc_port, self.stats_port):
            if not 0 < port < 65536:
                raise ValueError(f"worker DNS {self.name}: port out of range: {port}")


DECODE_POLICIES = ("least-tokens", "least-requests", "round-robin")  # router/policies/profiles.py
PREFILL_POLICIES = ("prefix-affinity", "least-tokens", "round-robin")


@dataclass(frozen=True)
class GatewayTuning:
    """Gateway timeouts and routing knobs."""

    connect_timeout_s: float = 600.0  # wait for nodes at start (engines load for a while)
    prefill_timeout_s: float = 120.0  # prompt in, first token and KV params out
    first_token_timeout_s: float = 120.0  # decode request sent -> its first token
    stream_idle_timeout_s: float = 120.0  # longest silence inside a stream
    heartbeat_timeout_s: float = 5.0  # a node whose stats stop this long is unhealthy
    min_disagg_prompt_tokens: int = 1  # shorter prompts prefill on the decode node
    # Requests on one decode node (its queue included: what this gateway has open there, or what
    # the node reports from every gateway) before it counts as full; with every decode node
    # full, new requests get a 429 with Retry-After. 0: no limit.
    max_streams_per_decode: int = 0
    # Routing profiles (router/policies/profiles.py) and their knobs.
    decode_policy: str = "least-tokens"
    prefill_policy: str = "prefix-affinity"
    prefix_load_bound: float = 1.25  # a prefix's node may carry this x the pool's mean tokens in flight
    max_prefill_queue_tokens: int = 0  # prefill locally when every prefill node has more queued; 0: never
    # A pool larger than this is decided over a random this many of its workers, plus the nodes
    # that hold the prompt's prefix (power of d choices, router/orchestrator.py); 0: every worker.
    route_sample: int = 32
    resolve_interval_s: float = 5.0  # how often DNS-discovered workers are looked up again
    # Circuit breakers (router/breaker.py): a worker failing this many requests in a row is taken
    # out for `breaker_cooldown_s` (doubling while its probes fail); 0: never.
    breaker_failures: int = 3
    breaker_cooldown_s: float = 5.0
    allow_route_override: bool = False  # honour the x-splitmind-route header (tests, benchmarks)
    reasoning: str = "visible"  # "hidden": no response ever carries reasoning text, whatever the request asks
    # The edge (api/edge.py, api/auth.py, api/limits.py): what one request may cost the gateway.
    max_body_bytes: int = 8 * 1024 * 1024  # larger bodies get a 413
    max_prompt_chars: int = 1_000_000  # text templated and tokenized per request (about 1.6 s of tokenizer)
    prepare_timeout_s: float = 10.0  # chat template and tokenization, in a worker thread
    prepare_threads: int = 4
    send_timeout_s: float = 30.0  # a streaming client that reads nothing for this long is dropped
    drain_s: float = 30.0  # on SIGTERM, open streams get this long to finish
    metrics_access: str = "open"  # "open", "api_key" or "admin_key": who may read /metrics
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the API; none by default
    key_requests_per_s: float = 0.0  # per API key (per client address without keys); 0: no limit
    key_burst: int = 20  # requests a key may send at once before its rate applies
    key_max_concurrent: int = 0  # requests (streams included) in flight per key; 0: no limit

    def __post_init__(self) -> None:
        if self.decode_policy not in DECODE_POLICIES:
            raise ValueError(f"gateway.decode_policy must be one of {', '.join(DECODE_POLICIES)}, "
                             f"not {self.decode_policy!r}")
        if self.prefill_policy not in PREFILL_POLICIES:
            raise ValueError(f"gateway.prefill_policy must be one of {', '.join(PREFILL_POLICIES)}, "
                             f"not {self.prefill_policy!r}")
        if not 1.0 <= self.prefix_load_bound <= 100.0:
            raise ValueError(f"gateway.prefix_load_bound must be between 1 and 100, not {self.prefix_load_bound}")
        if self.route_sample < 0 or (0 < self.route_sample < 2):
            raise ValueError(f"gateway.route_sample must be 0 (every worker) or at least 2, not {self.route_sample}")
        if self.max_prefill_queue_tokens < 0:
            raise ValueError("gateway.max_prefill_queue_tokens must be >= 0")
        if self.reasoning not in ("visible", "hidden"):
            raise ValueError(f"gateway.reasoning must be visible or hidden, not {self.reasoning!r}")
        if self.metrics_access not in ("open", "api_key", "admin_key"):
            raise ValueError(f"gateway.metrics_access must be open, api_key or admin_key, not {self.metrics_access!r}")
        for name in ("connect_timeout_s", "prefill_timeout_s", "first_token_timeout_s",
                     "stream_idle_timeout_s", "heartbeat_timeout_s", "resolve_interval_s", "prepare_timeout_s",
                     "send_timeout_s",
                     "max_body_bytes", "max_prompt_chars", "prepare_threads", "key_burst"):
            if getattr(self, name) <= 0:
                raise ValueError(f"gateway.{name} must be positive")
        for name in ("drain_s", "key_requests_per_s", "key_max_concurrent", "breaker_failures", "breaker_cooldown_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"gateway.{name} must be >= 0")
        if isinstance(self.cors_origins, list):  # TOML arrays arrive as lists
            object.__setattr__(self, "cors_origins", tuple(self.cors_origins))
        if not all(isinstance(o, str) and o for o in self.cors_origins):
            raise ValueError("gateway.cors_origins must be a list of origins such as \"https://chat.example.com\"")
        if self.min_disagg_prompt_tokens < 0:
            raise ValueError("gateway.min_disagg_prompt_tokens must be >= 0")


@dataclass(frozen=True)
class GatewayConfig:
    model: str  # model directory: the gateway reads its tokenizer and chat template
    served_model_name: str
    host: str
    port: int
    workers: tuple[WorkerAddress, ...]
    tuning: GatewayTuning = field(default_factory=GatewayTuning)
    reasoning_profile: dict[str, Any] = field(default_factory=dict)  # overrides of the model's profile
    keys_dir: str = ""  # CURVE keys (splitmind/curve.py): gateway.key_secret, node.key; "": plain TCP
    discover: tuple[WorkerDNS, ...] = ()  # workers found (and re-found) through DNS, besides `workers`

    def __post_init__(self) -> None:
        if not any(w.role == Role.DECODE for w in self.workers) and not any(
                d.role == Role.DECODE for d in self.discover):
            raise ValueError("the gateway needs at least one decode worker (in workers or discover)")
        ids = [w.worker_id for w in self.workers]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"workers: worker_id used more than once: {', '.join(twice)}")
        if self.keys_dir:
            curve.load_client_keys(self.keys_dir)  # raises ValueError naming the missing file


@dataclass(frozen=True)
class ClusterConfig:
    """What `splitmind up` starts on this machine."""

    model: str | None = None
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    num_prefill: int = 1
    num_decode: int = 1
    base_port: int = 0  # first ZMQ/NIXL port; 0 picks free ports
    engine: EngineConfig = field(default_factory=EngineConfig)
    gateway: GatewayTuning = field(default_factory=GatewayTuning)
    reasoning: dict[str, Any] = field(default_factory=dict)  # the [reasoning] table: profile overrides
    # The internal plane (docs/design.md, "Internal plane"). Nodes bind node_host: loopback, since
    # `splitmind up` runs the gateway on the same machine; whatever `host` the gateway serves on.
    node_host: str = "127.0.0.1"
    keys_dir: str | None = None  # `splitmind keys DIR`: CURVE on the request and stats planes

    def __post_init__(self) -> None:
        if self.keys_dir == "":
            raise ValueError("cluster.keys_dir must name a directory (`splitmind keys DIR` makes one)")
        if self.keys_dir is not None:
            curve.check_cluster_keys(self.keys_dir)  # raises ValueError naming the missing file
        elif not is_loopback(self.node_host):
            raise ValueError(f"cluster.node_host {self.node_host} is reachable from other machines: set "
                             "cluster.keys_dir (make keys with `splitmind keys DIR`), so that nodes take "
                             "requests only from gateways with a known key")
        if self.num_prefill < 0:
            raise ValueError("cluster.num_prefill must be >= 0 (0 means colocated)")
        if self.num_decode < 1:
            raise ValueError("cluster.num_decode must be >= 1")
        if not 0 < self.port < 65536:
            raise ValueError(f"cluster.port out of range: {self.port}")


def is_loopback(host: str) -> bool:
    """Only this machine can reach `host`; a host name may resolve to anything, so it is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False
