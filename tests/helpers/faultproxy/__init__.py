"""A fault-injecting HTTP forward proxy for tests and benchmarks (standard library only).

Why a *forward* proxy: presigned S3 URLs sign the ``Host`` header, so a reverse proxy on another
port would invalidate every signature on real S3 or Ceph RGW. A client pointed at this proxy
(libcurl ``CURLOPT_PROXY`` or the ``http_proxy`` environment variable) sends absolute-URI requests
(``PUT http://host:port/bucket/key?X-Amz-... HTTP/1.1``); the proxy forwards them to the origin with
the path, query and ``Host`` header byte-for-byte unchanged, and can break chosen requests on the
way: connection resets, 5xx/429/408 answers, expired-URL 403s, stalls, bandwidth limits, truncated
and corrupted bodies.

``CONNECT`` (HTTPS) is tunnelled without faults, so a client that happens to use TLS still works.

Usage::

    with FaultProxy(rules=[Rule("reset", method="PUT", url=r"partNumber=2", nth=1)]) as proxy:
        curl.setopt(pycurl.PROXY, proxy.url)
        curl.setopt(pycurl.NOPROXY, "")  # no_proxy often lists 127.0.0.1
        ...
        assert proxy.count(method="PUT", fault="reset") == 1

Command line (for benchmarks; prints the proxy URL as its first stdout line), from the
checkout's root::

    python -m tests.helpers.faultproxy --port 0 --random-rate 0.2 --seed 1

The modules, in the order a request meets them:

- :mod:`.server`: :class:`FaultProxy`: listening, one thread per client connection, the log;
- :mod:`.connection`: a client connection, its cached origin connection, CONNECT tunnels;
- :mod:`.rules`: :class:`Rule` and the :class:`~.rules.FaultPlan` that picks a request's fault;
- :mod:`.exchange`: one request forwarded and answered, the fault applied at its step;
- :mod:`.wire`: HTTP/1.1 parsing and writing; :mod:`.pacing`: bandwidth limits;
- :mod:`.records`: the request log's :class:`RequestRecord`; :mod:`.cli`: the command.
"""

from __future__ import annotations

from .cli import main
from .records import RequestRecord, redact_url, request_key
from .rules import DEFAULT_RANDOM_FAULTS, FAULTS, Rule
from .server import FaultProxy
from .wire import authority_for_host

__all__ = [
    "DEFAULT_RANDOM_FAULTS",
    "FAULTS",
    "FaultProxy",
    "RequestRecord",
    "Rule",
    "authority_for_host",
    "main",
    "redact_url",
    "request_key",
]
