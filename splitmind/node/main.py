"""Node process entry: read the spec, set vLLM's environment, build the engine, serve.

vLLM reads its environment variables at import, so they are set here before the first vLLM
import; the launcher passes everything in the spec and nothing through the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

import msgspec

from splitmind import lifeline
from splitmind.config import NodeSpec
from splitmind.node.counters import EngineCounters
from splitmind.node.failures import EngineDied, WarmUpError

logger = logging.getLogger(__name__)

EXIT_ENGINE_FAILED = 3  # the engine could not run a request, or died: the reason is on stderr


def parse_spec(argv: list[str]) -> NodeSpec:
    if len(argv) != 2 or argv[0] != "--spec":
        raise SystemExit("usage: python -m prefill_node|decode_node --spec JSON")
    return msgspec.json.decode(argv[1], type=NodeSpec)


def parse_cpus(text: str) -> set[int]:
    """"0", "2-3", "0,2-3" -> {0}, {2, 3}, {0, 2, 3}."""
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def confine_to_cpus(spec: NodeSpec) -> None:
    """Keep the node's engine processes (vLLM engine core, workers, NIXL threads) on its cores.

    vLLM pins only the worker's compute threads. The engine-core process steps continuously
    while a request waits for remote KV, and NIXL's threads poll; left to float they landed on
    the other node's core. There they slowed its prefill 5-15x, and starved the UCX progress a
    KV pull depends on (30 s stalls until the lease expired). Children inherit the affinity;
    the frontend process floats again once the engine is up (see `_serve`): it mostly waits on
    sockets, and sharing the model's core with it cost decode inter-token latency.
    """
    if spec.cpus:
        os.sched_setaffinity(0, parse_cpus(spec.cpus))


def omp_cpus(cpus: str) -> str:
    """The cores a node's compute threads are bound to: all of its cores but the first when it
    has several. The first is left to the engine-core process, which spins on its queue after
    every step, and to the frontend. Bound to every core, the compute threads waited at each
    parallel region for the one whose core the spinning engine core held: `splitmind up
    --prefill 0` on 2 cores took 48.8 s for the bundled model's 278-token reply to "What is
    4821+379?", and 0.8-1.0 s with this reservation (curl, 3 requests). vLLM's own default
    reserves a core the same way (`VLLM_CPU_NUM_OF_RESERVED_CPU`)."""
    ordered = sorted(parse_cpus(cpus))
    return ",".join(str(c) for c in (ordered[1:] if len(ordered) > 1 else ordered))


def set_vllm_environment(spec: NodeSpec) -> None:
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(spec.engine.kv_cache_gib)
    if spec.cpus:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = omp_cpus(spec.cpus)
    os.environ["VLLM_NIXL_SIDE_CHANNEL_HOST"] = spec.nixl_host
    os.environ["VLLM_NIXL_SIDE_CHANNEL_PORT"] = str(spec.nixl_port)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def run(handler_factory: object) -> None:
    """Entry for `python -m prefill_node` / `python -m decode_node`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lifeline.die_with_parent()
    spec = parse_spec(sys.argv[1:])
    set_vllm_environment(spec)
    assert callable(handler_factory)
    try:
        asyncio.run(_serve(spec, handler_factory()))
    except (WarmUpError, EngineDied) as exc:
        logger.error("%s", exc)
        print(f"[{spec.worker_id}] error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_ENGINE_FAILED) from None


async def _serve(spec: NodeSpec, handler: object) -> None:
    from splitmind.node.engine import build_engine
    from splitmind.node.runtime import NodeServer
    from splitmind.node.warmup import warm_up

    counters = EngineCounters()
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # a stop during the warm-up too
        loop.add_signal_handler(sig, main.cancel)
    all_cpus = os.sched_getaffinity(0)
    confine_to_cpus(spec)  # the engine processes inherit this...
    engine = build_engine(spec, counters)
    os.sched_setaffinity(0, all_cpus)  # ...while the frontend, mostly waiting on sockets, floats
    try:
        took = await warm_up(engine)  # before the sockets open: no health reply until it passed
        logger.info("node %s: warm-up request ran in %.2f s", spec.worker_id, took)
        await asyncio.sleep(0.1)  # the engine's last stats for it arrive right behind its output
        counters.reset()
        server = NodeServer(spec, engine, handler, counters)  # type: ignore[arg-type]
        await server.serve()
    except asyncio.CancelledError:
        logger.info("node %s: shutting down", spec.worker_id)
    except ExceptionGroup as group:  # from the server's TaskGroup
        died = group.subgroup(EngineDied)
        if died is None:
            raise
        raise died.exceptions[0] from None
    finally:
        with contextlib.suppress(Exception):
            engine.shutdown()
