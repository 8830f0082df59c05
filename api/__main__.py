"""Gateway process entry: `python -m api --config JSON`. `splitmind up` starts it, and `splitmind gateway`
becomes it (exec) once it has read and checked the config file: operators never write the JSON."""

from __future__ import annotations

import gc
import logging
import sys

import uvicorn

from api.app import config_from_json, create_app
from api.auth import keys_from_environment
from splitmind import lifeline


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] != "--config":
        raise SystemExit("usage: python -m api --config JSON")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lifeline.die_with_parent()  # SIGTERM (a drain) when `splitmind up` is gone, even if killed outright
    config = config_from_json(sys.argv[2])
    keys = keys_from_environment()  # keys come through the environment, never the command line
    # Keep-alive longer than clients': uvicorn's default (5 s) equals the idle expiry of httpx's
    # pool, which the openai client uses, so a client reusing a connection just as the server
    # closes it got "Server disconnected without sending a response" (bench/reasoner_eval.py,
    # 32 threads pausing between phases). With the server's timeout longer, the client closes first.
    # On SIGTERM uvicorn stops accepting connections and waits for open ones; streams see
    # `should_exit`, get `drain_s` to finish (api/sse.py), then are cut; the margin covers the
    # last sends.
    app = create_app(config, keys)
    # Everything built so far (imports, the tokenizer, the app) lives as long as the process:
    # frozen, the garbage collector's full collections skip it (vLLM's own server does the same,
    # `vllm.utils.gc_utils.freeze_gc_heap`). bench/gateway_throughput.py, staggered streams at
    # 2,560 tokens/s: p99 added delay 4.8 and 3.7 ms before, 1.9, 2.2 and 3.4 ms frozen (noisy).
    gc.collect()
    gc.freeze()
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                                           timeout_graceful_shutdown=int(config.tuning.drain_s) + 5,
                                           timeout_keep_alive=75))
    app.state.shutting_down = lambda: server.should_exit
    server.run()


if __name__ == "__main__":
    main()
