"""A TCP relay on 127.0.0.1 that adds a fixed delay to every request/response round trip.

    with DelayRelay("http://127.0.0.1:8000", delay=1.0) as relay:
        run_client(api_url=relay.url)          # http://127.0.0.1:<relay port>
        relay.round_trips                      # responses it held back so far

Per connection, bytes from the client go on at once and mark the connection as "asked"; the
first bytes the server sends after that are held for ``delay`` seconds, then everything flows
unchanged until the client sends again. So each request on a keep-alive connection costs one
extra ``delay`` (a request with ``Expect: 100-continue`` costs two: one for the interim 100,
one for the response), like a link with that round-trip time -- except that the TCP handshake
itself is not delayed (connections are cheap here, requests are what is measured). A long
response is delayed once, at its start, not slowed down. Bytes are relayed as they are
(no TLS, no HTTP parsing; the Host header names the relay's port).

The standard library only (asyncio on a thread of its own), so the relay runs beside
synchronous code in any venv. Standalone:

    python bench/delayrelay.py --target http://127.0.0.1:8000 --delay 1.0 [--port 8001]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

CHUNK = 1 << 16


class DelayRelay:
    """Relays 127.0.0.1:<port> to ``target`` (``host:port`` or an http URL), delaying answers.

    ``url`` is ``target`` with its host and port replaced by the relay's (the path is kept).
    ``connections`` and ``round_trips`` count accepted connections and delayed answers.
    """

    def __init__(self, target: str, delay: float = 1.0, port: int = 0) -> None:
        if "://" not in target:
            target = f"http://{target}"
        parts = urlsplit(target)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"target {target!r} needs a host and a port")
        self.target = (parts.hostname, parts.port)
        self._parts = parts
        self.delay = delay
        self.port = port
        self.connections = 0
        self.round_trips = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        return urlunsplit(self._parts._replace(netloc=f"127.0.0.1:{self.port}"))

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> DelayRelay:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        future.result(timeout=10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> DelayRelay:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=5)

    # ------------------------------------------------------------------ relaying
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._relay(reader, writer)
        except asyncio.CancelledError:
            pass
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _relay(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        try:
            server_in, server_out = await asyncio.open_connection(*self.target)
        except OSError:
            return
        self.connections += 1
        asked = False  # the client sent bytes that the server has not begun to answer

        async def upstream() -> None:
            nonlocal asked
            while data := await client_in.read(CHUNK):
                asked = True  # before the bytes go on: the answer cannot overtake the mark
                server_out.write(data)
                await server_out.drain()
            if server_out.can_write_eof():
                server_out.write_eof()

        async def downstream() -> None:
            nonlocal asked
            while data := await server_in.read(CHUNK):
                if asked:
                    asked = False
                    self.round_trips += 1
                    await asyncio.sleep(self.delay)
                client_out.write(data)
                await client_out.drain()
            if client_out.can_write_eof():
                client_out.write_eof()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        try:
            # A half-close (EOF one way) lets the other direction finish; an error ends both.
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(not t.cancelled() and t.exception() is not None for t in done):
                    break
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            server_out.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="host:port or http://host:port[/path]")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds per round trip")
    parser.add_argument("--port", type=int, default=0, help="listening port (0: a free one)")
    args = parser.parse_args()
    with DelayRelay(args.target, args.delay, args.port) as relay:
        print(f"{relay.url} -> {args.target}, +{args.delay} s per round trip", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
