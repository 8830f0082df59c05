"""Service DNS names for processes the tests start outside Kubernetes (tests/e2e/test_manifests_run.py).

Python imports `sitecustomize` at start-up from any folder on PYTHONPATH, so a process started
with this folder there, and `SPLITMIND_TEST_HOSTS=name=address,...` in its environment, resolves
those names to those addresses, as a cluster's DNS resolves a headless Service's name to its
pods' addresses. Other names resolve as usual; without the variable nothing changes. The gateway's
discovery (router/discovery.py) looks names up with socket.getaddrinfo, which is what is wrapped.
"""

import os
import socket

_HOSTS = dict(item.split("=", 1) for item in os.environ.get("SPLITMIND_TEST_HOSTS", "").split(",") if "=" in item)

if _HOSTS:
    _getaddrinfo = socket.getaddrinfo

    def _mapped(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        return _getaddrinfo(_HOSTS.get(host, host) if isinstance(host, str) else host, *args, **kwargs)

    socket.getaddrinfo = _mapped
