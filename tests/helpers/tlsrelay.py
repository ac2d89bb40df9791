"""A TLS-terminating TCP relay on 127.0.0.1 with a self-signed certificate (tests only).

Some third-party clients accept only ``https`` service URLs (``ga4gh-drs-client`` refuses any
other scheme). The local stack speaks plain HTTP, so tests put this relay in front of it: it
accepts TLS connections with a certificate made for 127.0.0.1 and passes the decrypted bytes
unchanged to the target port, and the answers back. Clients trust the certificate through
their CA bundle setting (``REQUESTS_CA_BUNDLE`` for requests), so TLS is verified, not skipped.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path


def self_signed_certificate(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """``(cert.pem, key.pem)`` of a one-day self-signed certificate for the IP ``host``."""
    cert, key = directory / "relay-cert.pem", directory / "relay-key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={host}",
            "-addext",
            f"subjectAltName=IP:{host}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes until ``source`` closes, then half-close ``sink`` so the peer sees EOF."""
    try:
        while True:
            chunk = source.recv(65536)
            if not chunk:
                break
            sink.sendall(chunk)
    except OSError:
        pass  # the other direction closed the connection
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def _serve_connection(raw: socket.socket, context: ssl.SSLContext, target: tuple[str, int]) -> None:
    with contextlib.ExitStack() as stack:
        stack.callback(raw.close)
        try:
            raw.settimeout(30)
            client = context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            return  # a client that refused our certificate, or a bad handshake
        stack.callback(client.close)
        try:
            upstream = socket.create_connection(target, timeout=30)
        except OSError:
            return
        stack.callback(upstream.close)
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join(timeout=60)


@contextlib.contextmanager
def tls_relay(target_port: int, cert: Path, key: Path) -> Iterator[int]:
    """Relay TLS on a free port of 127.0.0.1 to plain TCP ``127.0.0.1:target_port``; yield
    the port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.2)  # so that the accept loop notices when to stop
    stopping = threading.Event()

    def accept_loop() -> None:
        while not stopping.is_set():
            try:
                raw, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(
                target=_serve_connection,
                args=(raw, context, ("127.0.0.1", target_port)),
                daemon=True,
            ).start()

    acceptor = threading.Thread(target=accept_loop, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stopping.set()
        acceptor.join(timeout=5)
        listener.close()
