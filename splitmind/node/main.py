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

from splitmind.config import NodeSpec
from splitmind.node.counters import EngineCounters

logger = logging.getLogger(__name__)


def parse_spec(argv: list[str]) -> NodeSpec:
    if len(argv) != 2 or argv[0] != "--spec":
        raise SystemExit("usage: python -m prefill_node|decode_node --spec JSON")
    return msgspec.json.decode(argv[1], type=NodeSpec)


def set_vllm_environment(spec: NodeSpec) -> None:
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(spec.engine.kv_cache_gib)
    if spec.cpus:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = spec.cpus
    os.environ["VLLM_NIXL_SIDE_CHANNEL_HOST"] = spec.nixl_host
    os.environ["VLLM_NIXL_SIDE_CHANNEL_PORT"] = str(spec.nixl_port)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def run(handler_factory: object) -> None:
    """Entry for `python -m prefill_node` / `python -m decode_node`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = parse_spec(sys.argv[1:])
    set_vllm_environment(spec)
    assert callable(handler_factory)
    asyncio.run(_serve(spec, handler_factory()))


async def _serve(spec: NodeSpec, handler: object) -> None:
    from splitmind.node.engine import build_engine
    from splitmind.node.runtime import NodeServer

    counters = EngineCounters()
    engine = build_engine(spec, counters)
    server = NodeServer(spec, engine, handler, counters)  # type: ignore[arg-type]
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, main.cancel)
    try:
        await server.serve()
    except asyncio.CancelledError:
        logger.info("node %s: shutting down", spec.worker_id)
    finally:
        with contextlib.suppress(Exception):
            engine.shutdown()
