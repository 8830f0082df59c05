"""Ports for `splitmind up`: free ones for nodes, and a check, before anything loads, that the
ones it was told to use are free."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable
from pathlib import Path


class PortError(RuntimeError):
    pass


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port(host: str) -> int:
    """A port that is free now and that the kernel will not hand out on its own.

    Ports are chosen here but bound by the nodes tens of seconds later. A port from bind(0)
    lies in the kernel's ephemeral range, where vLLM's engines and every outgoing connection
    take ports in the meantime: a node once died on "Address already in use" for its stats
    port. Ports below that range are only ever taken by explicit binds.
    """
    low, _ = ephemeral_range()
    candidates = list(range(max(1024, low - 12000), low))
    random.shuffle(candidates)  # launchers starting together rarely pick the same port
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise PortError(f"no free port below the ephemeral range ({low}) on {host}")


def bind_error(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on now, or None. SO_REUSEADDR as uvicorn and ZMQ set
    it, so a port left in TIME_WAIT by the last run does not count as taken."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"cannot resolve {host}: {exc.strerror}"
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
            s.listen(1)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def check_free(ports: Iterable[tuple[str, str, int]]) -> None:
    """Raise PortError naming every (what, host, port) that is taken."""
    taken = [f"{what} {host}:{port} ({why})" for what, host, port in ports
             if (why := bind_error(host, port)) is not None]
    if taken:
        raise PortError("cannot start, port in use: " + "; ".join(taken) + ". Stop whatever holds it "
                        "(`ss -ltnp` shows it) or choose another port (--port, [cluster] base_port).")
