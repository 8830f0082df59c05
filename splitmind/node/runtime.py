"""A node's ZMQ server: request plane (ROUTER) and stats plane (PUB) around one AsyncLLM.

Each `GenerateRequest` runs as its own task, streaming `TokenDelta`s back to the gateway
identity that sent it. An `AbortRequest` cancels that task; cancellation travels into
`AsyncLLM.generate()`, which aborts the request in the engine (vLLM's own cancellation path), so
no KV stays pinned by a request nobody reads.

Whatever arrives that is not a request (a message of the wrong number of frames, a payload that
does not decode) is logged, rate-limited, and dropped: the receive loop never ends on a peer's
input. Sockets, size limits and CURVE are `splitmind/node/sockets.py`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from typing import Any, Protocol

import zmq

from splitmind.config import NodeSpec
from splitmind.node import kv_refresh
from splitmind.node.counters import EngineCounters, engine_timings
from splitmind.node.engine import node_kv_address
from splitmind.node.failures import EngineDied
from splitmind.node.sampling import token_logprobs
from splitmind.node.sockets import NodeSockets
from splitmind.protocol import (
    PROTOCOL_VERSION,
    AbortRequest,
    ErrorCode,
    ErrorReply,
    FinishReason,
    GenerateRequest,
    HealthReply,
    HealthRequest,
    NodeStats,
    ReleaseKV,
    Role,
    TokenDelta,
    encoder,
    kv_params_from_vllm,
    kv_params_to_vllm,
    to_node_decoder,
)
from splitmind.wire_guard import decode_frames

logger = logging.getLogger(__name__)

STATS_INTERVAL_S = 0.5
SEND_QUEUE_MESSAGES = 10_000  # per gateway, before the node waits for it to read
SEND_TIMEOUT_S = 60.0  # a gateway that reads nothing for this long has given up on its requests
SEND_RETRY_S = 1.0
ENGINE_CHECK_S = 0.5
RELEASE_TIMEOUT_S = 10.0
ABORT_DRAIN_S = 5.0  # an aborted prefill's task gets this long to read its last output
_FINISH = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH, "abort": FinishReason.ABORT}


class RoleHandler(Protocol):
    """What differs between a prefill and a decode node: how a request becomes SamplingParams."""

    role: Role

    def sampling_params(self, req: GenerateRequest) -> Any: ...


class GatewayGone(Exception):
    """The gateway a reply is for cannot take it: disconnected, or not reading."""


class NodeServer:
    def __init__(self, spec: NodeSpec, engine: Any, handler: RoleHandler, counters: EngineCounters) -> None:
        self.spec = spec
        self.engine = engine
        self.handler = handler
        self.counters = counters
        self.sockets = NodeSockets(spec)
        self.rpc, self.pub = self.sockets.rpc, self.sockets.pub
        # A ROUTER drops, silently, what it cannot queue for a peer; a gateway that fell behind
        # for a moment then lost deltas and waited out its timeout (3 of 3,300 requests in
        # bench/thinking_budgets.py). Mandatory routing makes a full queue wait instead, and a
        # vanished gateway an error (EHOSTUNREACH) that ends its requests.
        self.rpc.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.rpc.setsockopt(zmq.SNDHWM, SEND_QUEUE_MESSAGES)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.replies: set[asyncio.Task[None]] = set()  # strong refs to fire-and-forget sends
        self.started: set[str] = set()  # requests that produced output (running, not waiting)
        self.tokens: dict[str, int] = {}  # prompt + generated tokens per open request (load, for routing)
        self.pulling: set[str] = set()  # decode requests with KV to pull
        self.abort_at_first_output: set[str] = set()  # aborted while their KV was on the way
        self.seq = 0
        self.kv_releases_total = 0
        self.last_request_at = time.monotonic()
        self.release_steps_until = 0.0  # step the idle engine until then (a ReleaseKV's notification)
        self.stats_due = asyncio.Event()  # publish the stats now, not at the next interval
        self.max_model_len = int(engine.vllm_config.model_config.max_model_len)
        spec_config = engine.vllm_config.speculative_config
        self.mtp_tokens = int(spec_config.num_speculative_tokens) if spec_config is not None else 0
        cache_config = getattr(engine.vllm_config, "cache_config", None)
        self.prefix_caching = bool(getattr(cache_config, "enable_prefix_caching", False))
        self.kv_address = node_kv_address(spec) or ""

    async def serve(self) -> None:
        self.sockets.bind()
        logger.info("node %s (%s) serving on %s; MTP speculative tokens: %d", self.spec.worker_id,
                    self.handler.role.name, self.spec.rpc_address, self.mtp_tokens)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._recv_loop())
                tg.create_task(self._stats_loop())
                tg.create_task(self.sockets.watch())
                tg.create_task(self._engine_watch())
                tg.create_task(kv_refresh.keep_report_true(self))
        finally:
            for task in list(self.tasks.values()):
                task.cancel()
            if self.tasks:
                await asyncio.wait(list(self.tasks.values()), timeout=5)
            self.sockets.close()

    async def _engine_watch(self) -> None:
        while True:  # vLLM offers no event for it; the flag is cheap to read
            if self.engine.errored:
                break
            await asyncio.sleep(ENGINE_CHECK_S)
        raise EngineDied(f"node {self.spec.worker_id}: its vLLM engine died (the engine-core's traceback is above "
                         f"in this log); exiting so that it is taken out of rotation and restarted")

    async def _recv_loop(self) -> None:
        where = f"node {self.spec.worker_id}"
        while True:
            frames = await self.rpc.recv_multipart()
            # identity + payload; a DEALER that sent several frames, or a REQ (empty delimiter
            # frame), brings more, and unpacking them ended this loop and the node with it
            msg = decode_frames(frames, 2, to_node_decoder, self.sockets.drops, where)
            if msg is None:
                continue
            identity = frames[0]
            if isinstance(msg, GenerateRequest):
                self._start(identity, msg)
            elif isinstance(msg, AbortRequest):
                self._abort(msg.request_id)
            elif isinstance(msg, ReleaseKV):
                self._release_kv(msg)
            elif isinstance(msg, HealthRequest):
                self._reply_health(identity, msg)

    def _reply_health(self, identity: bytes, msg: HealthRequest) -> None:
        if msg.protocol_version != PROTOCOL_VERSION:
            reply: Any = ErrorReply(msg.request_id, ErrorCode.BAD_REQUEST,
                                    f"protocol version {msg.protocol_version} != node's {PROTOCOL_VERSION}")
        else:
            reply = HealthReply(
                request_id=msg.request_id, worker_id=self.spec.worker_id, role=self.handler.role,
                pid=os.getpid(), protocol_version=PROTOCOL_VERSION,
                model=self.spec.model, max_model_len=self.max_model_len, mtp_tokens=self.mtp_tokens,
                prefix_caching=self.prefix_caching, kv_transport=self.spec.engine.kv_transport,
                kv_address=self.kv_address,
            )
        self._reply_later(identity, reply)

    def _reply_later(self, identity: bytes, msg: Any) -> None:
        """Send off the receive loop: a gateway slow to read must not hold up the others' aborts."""
        async def send() -> None:
            with contextlib.suppress(GatewayGone):
                await self._send(identity, msg)

        reply = asyncio.create_task(send())
        self.replies.add(reply)
        reply.add_done_callback(self.replies.discard)

    def _start(self, identity: bytes, req: GenerateRequest) -> None:
        if req.request_id in self.tasks:
            self._reply_later(identity, ErrorReply(req.request_id, ErrorCode.BAD_REQUEST, "duplicate request id"))
            return
        task = asyncio.create_task(self._generate(identity, req), name=f"generate-{req.request_id}")
        self.tasks[req.request_id] = task
        self.tokens[req.request_id] = len(req.prompt_token_ids)
        if req.kv_transfer is not None and self.handler.role == Role.DECODE:
            self.pulling.add(req.request_id)
        self.last_request_at = time.monotonic()
        # Forgotten when the task ends, however it ends: an abort that arrives right behind its
        # request cancels the task before its coroutine starts, and then no `finally` inside it
        # runs (bench/soak.py found 61 such requests counted as waiting forever after 10 min).
        task.add_done_callback(functools.partial(self._forget, req.request_id))

    def _forget(self, request_id: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get(request_id) is task:
            del self.tasks[request_id]
            self.tokens.pop(request_id, None)
            self.pulling.discard(request_id)
            self.abort_at_first_output.discard(request_id)
        self.last_request_at = time.monotonic()
        self.started.discard(request_id)

    def _release_kv(self, msg: ReleaseKV) -> None:
        """Have the prefill node holding the KV free it now: vLLM's own path for a decode that
        will never run (`AsyncLLM.notify_kv_transfer_request_rejected`, a pre-aborted request whose
        connector notifies the prefill engine). Only decode nodes pull KV, so only they can."""
        notify = getattr(self.engine, "notify_kv_transfer_request_rejected", None)
        if self.handler.role != Role.DECODE or notify is None:
            logger.warning("request %s: cannot release prefill KV here (role %s, vLLM support: %s)",
                           msg.request_id, self.handler.role.name.lower(), notify is not None)
            return
        params = kv_params_to_vllm(msg.kv_transfer, do_remote_prefill=True, do_remote_decode=False)

        async def release() -> None:
            try:
                async with asyncio.timeout(RELEASE_TIMEOUT_S):
                    await notify(f"release-{msg.request_id}", params)
                # The engine's worker sends the notification at a later step (after its NIXL
                # handshake with that prefill engine, the first time), and an idle engine does not
                # step: the refresh loop steps it for a while, or the prefill node would hear of it
                # only with the next client request here.
                self.release_steps_until = time.monotonic() + kv_refresh.RELEASE_STEPS_S
                self.kv_releases_total += 1
                logger.info("request %s: prefill KV released (never pulled)", msg.request_id)
            except Exception as exc:  # the lease frees it in the end
                logger.warning("request %s: releasing prefill KV failed: %s", msg.request_id, exc)

        task = asyncio.create_task(release())
        self.replies.add(task)
        task.add_done_callback(self.replies.discard)

    def _abort(self, request_id: str) -> None:
        task = self.tasks.get(request_id)
        if task is None:
            return
        logger.info("request %s: abort", request_id)
        # An aborted decode that was to pull KV tells the prefill engine to free it, through its
        # worker at a later step: an idle engine must step (kv_refresh.py).
        self.release_steps_until = time.monotonic() + kv_refresh.RELEASE_STEPS_S
        if request_id in self.pulling and request_id not in self.started:
            # A decode aborted before its KV arrived finishes the pull first: vLLM tells the
            # prefill engine to free the KV when a read completes, but a request cancelled on
            # its way into the engine never reads, and the KV waited out the lease (the storm in
            # tests/e2e/test_kv_release.py, aborts 1-30 ms after the request). The first output
            # ends it; the drain's timeout bounds the wait.
            self.abort_at_first_output.add(request_id)
            self._cancel_later(request_id, task)
            return
        abort = getattr(self.engine, "abort", None)
        if self.handler.role != Role.PREFILL or abort is None:
            task.cancel()
            return
        # A prefill (one forward pass, max_tokens=1) is left to finish for up to ABORT_DRAIN_S, and
        # its last output, with the address of the KV now leased, goes to the gateway, which has a
        # decode node release it. Aborting it at once raced the engine: a prefill that finished
        # as the abort arrived had its KV leased while vLLM's output processor, aborting, dropped
        # the output that named it, and the KV waited out the 30 s lease (1 storm in 6 of
        # tests/e2e/test_kv_release.py). vLLM keeps such KV for the lease by design
        # (vllm-project/vllm#25067, "Ignore abort on already-finished request"): only the one
        # who knows its address can free it early. One prefill's compute is the price.

        async def drain() -> None:
            done, _ = await asyncio.wait({task}, timeout=ABORT_DRAIN_S)
            if done:
                return
            try:  # queued behind others all that time: abort it (no longer racing a finish)
                async with asyncio.timeout(ABORT_DRAIN_S):
                    await abort(request_id)
                    await asyncio.wait({task})
            except Exception as exc:  # TimeoutError included: cancel it the plain way
                logger.warning("request %s: engine abort did not end it (%s); cancelling", request_id,
                               type(exc).__name__)
                task.cancel()

        drainer = asyncio.create_task(drain())
        self.replies.add(drainer)
        drainer.add_done_callback(self.replies.discard)

    def _cancel_later(self, request_id: str, task: asyncio.Task[None]) -> None:
        async def cancel() -> None:
            await asyncio.wait({task}, timeout=ABORT_DRAIN_S)
            if not task.done():
                logger.warning("request %s: no first output %g s after its abort; cancelling", request_id,
                               ABORT_DRAIN_S)
                task.cancel()

        canceller = asyncio.create_task(cancel())
        self.replies.add(canceller)
        canceller.add_done_callback(self.replies.discard)

    async def _generate(self, identity: bytes, req: GenerateRequest) -> None:
        from vllm.inputs import TokensPrompt

        rid = req.request_id
        try:
            try:
                params = self.handler.sampling_params(req)
            except ValueError as exc:  # vLLM validates SamplingParams with ValueError
                await self._send(identity, ErrorReply(rid, ErrorCode.BAD_REQUEST, str(exc)))
                return
            prompt = TokensPrompt(prompt_token_ids=req.prompt_token_ids)
            self.counters.requests_total += 1
            num_top = req.sampling.logprobs
            # aclosing: when a send fails, the generator's close aborts the engine request now,
            # not whenever the garbage collector finds it
            async with contextlib.aclosing(self.engine.generate(prompt, params, rid)) as outputs:
                async for out in outputs:
                    if rid in self.abort_at_first_output:
                        return  # aborted while its KV was on the way: pulled now, so end it
                    comp = out.outputs[0]
                    finish = _FINISH.get(comp.finish_reason or "") if out.finished else None
                    kv_params = out.kv_transfer_params if out.finished else None
                    kv = kv_params_from_vllm(kv_params) if kv_params else None
                    token_ids = list(comp.token_ids)
                    if rid in self.tokens:
                        self.tokens[rid] += len(token_ids)
                    logprobs = token_logprobs(token_ids, comp.logprobs, num_top) if num_top is not None else None
                    first = rid not in self.started
                    self.started.add(rid)
                    await self._send(identity, TokenDelta(
                        request_id=rid, token_ids=token_ids, finish_reason=finish, kv_transfer=kv,
                        num_prompt_tokens=len(req.prompt_token_ids), num_cached_tokens=out.num_cached_tokens or 0,
                        logprobs=logprobs, engine_timings=engine_timings(out) if first else None,
                    ))
        except asyncio.CancelledError:
            raise  # AsyncLLM.generate aborted the engine request on its way out
        except GatewayGone as exc:
            logger.warning("request %s: aborted, %s", rid, exc)
        except Exception as exc:
            logger.exception("request %s failed", rid)
            code = ErrorCode.BAD_REQUEST if isinstance(exc, ValueError) else ErrorCode.INTERNAL
            with contextlib.suppress(Exception):
                await self._send(identity, ErrorReply(rid, code, f"{type(exc).__name__}: {exc}"))
        finally:
            self.started.discard(rid)  # the task itself is forgotten by `_forget`

    async def _send(self, identity: bytes, msg: Any) -> None:
        frames = [identity, encoder.encode(msg)]
        deadline = time.monotonic() + SEND_TIMEOUT_S
        while True:
            try:
                # A send waiting on a full queue is not woken when its gateway disconnects (the
                # socket never turns writable for it), so it waits in slices and tries again:
                # the retry is what raises EHOSTUNREACH.
                async with asyncio.timeout(SEND_RETRY_S):
                    await self.rpc.send_multipart(frames)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise GatewayGone(f"its gateway read nothing for {SEND_TIMEOUT_S:.0f} s") from None
            except zmq.ZMQError as exc:
                if exc.errno == zmq.EHOSTUNREACH:
                    raise GatewayGone("its gateway disconnected") from None
                raise

    def stats(self) -> NodeStats:
        c = self.counters
        self.seq += 1
        running = len(self.started)
        return NodeStats(
            worker_id=self.spec.worker_id, role=self.handler.role, pid=os.getpid(), seq=self.seq,
            num_running=running, num_waiting=len(self.tasks) - running, kv_usage=c.kv_usage,
            tokens_in_flight=sum(self.tokens.values()),
            remote_kv_tokens_total=c.remote_kv_tokens_total, kv_transfers_total=c.kv_transfers_total,
            kv_transfer_bytes_total=c.kv_transfer_bytes_total, kv_transfer_seconds=c.kv_transfer_seconds,
            kv_transfer_failures_total=dict(c.kv_transfer_failures_total),
            spec_draft_tokens_total=c.spec_draft_tokens_total,
            spec_accepted_tokens_total=c.spec_accepted_tokens_total,
            prompt_tokens_total=c.prompt_tokens_total, generation_tokens_total=c.generation_tokens_total,
            prompt_tokens_computed_total=c.prompt_tokens_computed_total,
            prompt_tokens_local_cache_total=c.prompt_tokens_local_cache_total, requests_total=c.requests_total,
            restarts=self.spec.restarts, kv_releases_total=self.kv_releases_total,
        )

    async def _stats_loop(self) -> None:
        while True:
            self.stats_due.clear()
            await self.pub.send(encoder.encode(self.stats()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stats_due.wait(), STATS_INTERVAL_S)
