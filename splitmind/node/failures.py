"""How a node's engine fails for good: the node exits (code 3) with the reason on stderr, which
`splitmind up` shows on the terminal at start, and answers with a restart later."""

from __future__ import annotations


class WarmUpError(RuntimeError):
    """The engine could not run one short request: the node must not report ready."""


class EngineDied(RuntimeError):
    """The node's vLLM engine is dead (vLLM cannot restart one): the node must exit, so that it
    leaves the gateway's rotation at once and `splitmind up` restarts it."""
