"""CURVE on the KV sockets, with the internal plane's keys (`splitmind keys`, `splitmind/curve.py`).

All nodes share one key pair (node.key_secret), so a decode node's KV socket is a CURVE server
with it and lets in exactly one client key, the nodes' own: gateways' keys cannot push KV, and a
peer without node.key_secret fails the handshake before any frame is read. A prefill node
connects as a CURVE client with the same pair.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator

from splitmind import curve


def node_pair(keys_dir: str) -> curve.KeyPair:
    """The nodes' shared key pair, as every node loads it (`NodeSpec` checks it at start)."""
    return curve.load_server_keys(keys_dir).own


class _NodesOnly:
    def __init__(self, public: bytes) -> None:
        self.public = public

    def callback(self, domain: str, key: bytes) -> bool:
        return key == self.public


def serve(ctx: zmq.Context[Any], sock: zmq.Socket[Any], pair: curve.KeyPair) -> ThreadAuthenticator:
    """Before bind: `sock` takes only clients holding node.key_secret. Stop the returned
    authenticator with the socket."""
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=_NodesOnly(pair.public))
    curve.make_server(sock, curve.CurveServerKeys(pair, Path()))
    return auth


def connect_as_node(sock: zmq.Socket[Any], pair: curve.KeyPair) -> None:
    """Before connect: a node's CURVE client, checking the peer is a node."""
    curve.make_client(sock, curve.CurveClientKeys(pair, pair.public))
