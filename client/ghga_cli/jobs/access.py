"""The run's API clients: one set per thread (a pycurl handle serves one thread)."""

from __future__ import annotations

import threading
from typing import Callable

from ghga_cli.jobs.api import DrsClient, UcsClient
from ghga_cli.jobs.http import HttpClient, TokenSource
from ghga_cli.retry import RetryPolicy
from ghga_cli.transfer.engine import InterruptFlag


class ApiAccess:
    """The run's API clients, one per thread (a pycurl handle serves one thread)."""

    def __init__(
        self,
        api_url: str,
        tokens: TokenSource,
        policy: RetryPolicy,
        *,
        stall_timeout: float = 60.0,
        log: Callable[[str], None] | None = None,
        interrupt: InterruptFlag | None = None,
    ) -> None:
        self.api_url = api_url
        self.tokens = tokens
        self.policy = policy
        self.stall_timeout = stall_timeout
        self._log = log
        self.interrupt = interrupt
        self._local = threading.local()
        self._clients: list[HttpClient] = []
        self._lock = threading.Lock()

    def http(self) -> HttpClient:
        client = getattr(self._local, "http", None)
        if client is None:
            client = HttpClient(
                self.tokens,
                self.policy,
                stall_timeout=self.stall_timeout,
                log=self._log,
                interrupt=self.interrupt,
            )
            self._local.http = client
            with self._lock:
                self._clients.append(client)
        return client

    def ucs(self) -> UcsClient:
        client = getattr(self._local, "ucs", None)
        if client is None:
            client = self._local.ucs = UcsClient(self.http(), self.api_url)
        return client

    def drs(self) -> DrsClient:
        client = getattr(self._local, "drs", None)
        if client is None:
            client = self._local.drs = DrsClient(self.http(), self.api_url)
        return client

    @property
    def retries(self) -> int:
        with self._lock:
            return sum(c.retries for c in self._clients)

    def close(self) -> None:
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients = []
