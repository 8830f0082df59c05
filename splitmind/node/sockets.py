"""A node's two listening sockets, hardened: the request plane (ROUTER) and the stats plane (PUB).

- Both refuse messages over `MAX_MESSAGE_BYTES` (libzmq disconnects the sender).
- With `NodeSpec.keys_dir` set, both are CURVE servers, and a ZAP handler on the node's own
  context admits only the public keys in the keys' authorized/ directory
  (`splitmind/curve.py`). A peer without a known key fails its handshake and gets nothing.
- The request plane pings each gateway (ZMQ heartbeats, answered by the peer's ZMQ I/O thread,
  not its event loop) and drops one that has not answered for `PEER_TIMEOUT_S`: a gateway that
  was frozen (SIGSTOP) or whose host vanished without closing its connections. Replies to it then
  fail at once (mandatory routing) and its requests end, instead of the node generating into
  kernel buffers until the send timeout, or for as long as TCP takes to give up (minutes).
- A monitor on each logs the peers whose handshake failed, rate-limited, since ZMQ tells the
  application nothing about them; on the ROUTER also the peers that disconnected.

They bind `NodeSpec.rpc_address` and `stats_address`, which the launcher puts on loopback unless
`[cluster] node_host` says otherwise.
"""

from __future__ import annotations

import asyncio
import logging

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from splitmind import curve
from splitmind.config import NodeSpec
from splitmind.wire_guard import HANDSHAKE_FAILURES, RateLimitedLog, limit_message_size, watch_handshakes

logger = logging.getLogger(__name__)

PEER_HEARTBEAT_S = 1.0
PEER_TIMEOUT_S = 10.0


class NodeSockets:
    def __init__(self, spec: NodeSpec) -> None:
        self.spec = spec
        self.ctx = zmq.asyncio.Context()
        self.rpc = self.ctx.socket(zmq.ROUTER)
        self.pub = self.ctx.socket(zmq.PUB)
        for sock in (self.rpc, self.pub):
            sock.setsockopt(zmq.LINGER, 0)
        limit_message_size(self.rpc, self.pub)
        self.rpc.setsockopt(zmq.HEARTBEAT_IVL, int(PEER_HEARTBEAT_S * 1000))
        self.rpc.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(PEER_TIMEOUT_S * 1000))
        self.keys = curve.load_server_keys(spec.keys_dir) if spec.keys_dir else None
        if self.keys is not None:
            curve.make_server(self.rpc, self.keys)
            curve.make_server(self.pub, self.keys)
        self.drops = RateLimitedLog(logger)
        self._auth: AsyncioAuthenticator | None = None

    def bind(self) -> None:
        """On the running loop: the ZAP handler runs there, and must be up before the first peer."""
        if self.keys is not None:
            self._auth = curve.start_authenticator(self.ctx, self.keys)
        self.rpc.bind(self.spec.rpc_address)
        self.pub.bind(self.spec.stats_address)
        logger.info("node %s: request plane %s, stats plane %s, %s", self.spec.worker_id, self.spec.rpc_address,
                    self.spec.stats_address,
                    f"CURVE, clients from {self.keys.authorized_dir}" if self.keys else "plain TCP (no keys)")

    async def watch(self) -> None:
        """Log failed handshakes on both planes until cancelled."""
        where = f"node {self.spec.worker_id}"
        async with asyncio.TaskGroup() as tg:
            tg.create_task(watch_handshakes(self.rpc, f"{where} request plane", self.drops,
                                            HANDSHAKE_FAILURES | zmq.EVENT_DISCONNECTED))
            tg.create_task(watch_handshakes(self.pub, f"{where} stats plane", self.drops))

    def close(self) -> None:
        if self._auth is not None:
            self._auth.stop()
        self.rpc.close()
        self.pub.close()
        self.ctx.term()
