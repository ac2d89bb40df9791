"""A bandwidth-limited link inside this machine: a network namespace joined by a veth pair.

Host side ``10.200.0.1/30`` (veth ``ghgab0``), namespace side ``10.200.0.2/30`` (``ghgab1`` in
netns ``ghga-bench``); both veth ends shaped with ``tc qdisc ... tbf`` at the given rate, so
uploads (namespace -> host) and downloads (host -> namespace) both cross a shaped egress.

The services listen on 127.0.0.1 and the presigned URLs name 127.0.0.1:<port>, so every port a
client needs is relayed by two ``socat`` processes: inside the namespace on 127.0.0.1:<port>
(the namespace's own loopback) to 10.200.0.1:<port>, and on the host from 10.200.0.1:<port> to
127.0.0.1:<port>. The Host header (signed by SigV4) is unchanged. No traffic leaves the machine.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator

NETNS = "ghga-bench"
HOST_IF, NS_IF = "ghgab0", "ghgab1"
HOST_IP, NS_IP = "10.200.0.1", "10.200.0.2"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def teardown() -> None:
    sh("ip", "netns", "del", NETNS, check=False)
    sh("ip", "link", "del", HOST_IF, check=False)


@contextlib.contextmanager
def shaped_link(rate_mbit: int, ports: list[int]) -> Iterator[list[str]]:
    """Yield the command prefix that runs a program inside the namespace."""
    if not shutil.which("socat"):
        raise RuntimeError("socat is needed for the link test (apt-get install socat)")
    teardown()
    relays: list[subprocess.Popen] = []
    try:
        sh("ip", "netns", "add", NETNS)
        sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
        sh("ip", "link", "set", NS_IF, "netns", NETNS)
        sh("ip", "addr", "add", f"{HOST_IP}/30", "dev", HOST_IF)
        sh("ip", "link", "set", HOST_IF, "up")
        ns = ["ip", "netns", "exec", NETNS]
        sh(*ns, "ip", "addr", "add", f"{NS_IP}/30", "dev", NS_IF)
        sh(*ns, "ip", "link", "set", NS_IF, "up")
        sh(*ns, "ip", "link", "set", "lo", "up")
        # burst >= rate/HZ; 1 MiB keeps tbf exact at 400 Mbit/s; latency bounds the queue.
        for prefix, dev in (([], HOST_IF), (ns, NS_IF)):
            sh(
                *prefix,
                "tc",
                "qdisc",
                "add",
                "dev",
                dev,
                "root",
                "tbf",
                "rate",
                f"{rate_mbit}mbit",
                "burst",
                "1mb",
                "latency",
                "50ms",
            )
        for port in ports:
            relays.append(
                subprocess.Popen(
                    [
                        "socat",
                        f"TCP-LISTEN:{port},bind={HOST_IP},fork,reuseaddr",
                        f"TCP:127.0.0.1:{port}",
                    ]
                )
            )
            relays.append(
                subprocess.Popen(
                    [
                        *ns,
                        "socat",
                        f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr",
                        f"TCP:{HOST_IP}:{port}",
                    ]
                )
            )
        time.sleep(0.5)
        yield ns
    finally:
        for relay in relays:
            relay.terminate()
        for relay in relays:
            try:
                relay.wait(timeout=5)
            except subprocess.TimeoutExpired:
                relay.kill()
        teardown()
