"""Keeps the stack's fixed ports out of the kernel's ephemeral range.

Every port the stack listens on (47100-47199: Azurite, the edge VM's sshd, Postgres, the AML double, the
registry, Redis, the Airflow API servers) lies inside Linux's default ephemeral range (32768-60999). A client
connection anywhere on the machine (the unit tests open thousands on loopback) can be given one of them as
its own port, and after it closes, its TIME_WAIT holds the port for 60 s: a service that starts then cannot
bind it (Postgres exits with "Address already in use"), and stack-up's port check refuses to start. Listing
the range in ``net.ipv4.ip_local_reserved_ports`` stops the kernel from handing them out; services still
bind them explicitly.

    python -m devstack.ports    # reserve (stack-up does it first; run-tests.sh before the unit tests start)
"""

from __future__ import annotations

import time
from pathlib import Path

from devstack.util import port_in_use, port_listening

STACK_PORTS = range(47100, 47200)
RESERVED_PORTS = Path("/proc/sys/net/ipv4/ip_local_reserved_ports")


def parse_ranges(text: str) -> list[tuple[int, int]]:
    """``ip_local_reserved_ports`` ("8080,47100-47199") as inclusive (first, last) pairs."""
    ranges = []
    for part in text.replace("\n", "").split(","):
        part = part.strip()
        if not part:
            continue
        first, _, last = part.partition("-")
        ranges.append((int(first), int(last or first)))
    return ranges


def covers(ranges: list[tuple[int, int]], ports: range) -> bool:
    return all(any(first <= port <= last for first, last in ranges) for port in ports)


def with_stack_ports(text: str, ports: range = STACK_PORTS) -> str:
    """The setting's value with ``ports`` added; what was reserved before stays reserved."""
    if covers(parse_ranges(text), ports):
        return text.strip()
    wanted = f"{ports.start}-{ports.stop - 1}"
    return f"{text.strip()},{wanted}" if text.strip() else wanted


def reserve(path: Path = RESERVED_PORTS, ports: range = STACK_PORTS) -> str:
    """Reserve ``ports``; a one-line message. Where the setting cannot be written (an unprivileged
    container), it says so and the stack goes on: the reservation guards against a race, it is not
    needed to run."""
    try:
        current = path.read_text()
        if covers(parse_ranges(current), ports):
            return f"ports: {ports.start}-{ports.stop - 1} reserved (not handed out as ephemeral ports)"
        path.write_text(with_stack_ports(current, ports) + "\n")
    except OSError as exc:
        return (f"ports: could not reserve {ports.start}-{ports.stop - 1} in {path} ({exc}); a client's "
                f"ephemeral port may hold one of them for up to 60 s after it closes")
    return f"ports: reserved {ports.start}-{ports.stop - 1} (no longer handed out as ephemeral ports)"


def wait_for_time_wait(port: int, *, timeout: float = 65.0, in_use=None, listening=None) -> bool:
    """Wait while ``port`` cannot be bound though nothing listens on it: a closed connection's TIME_WAIT
    (at most 60 s), from before the range was reserved. True when it is free now; a port something
    listens on is returned at once, for the port check to name."""
    in_use = in_use or port_in_use
    listening = listening or port_listening
    deadline = time.monotonic() + timeout
    announced = False
    while True:
        busy = in_use(port)
        if not busy or listening(port):
            return not busy
        if time.monotonic() >= deadline:
            return False
        if not announced:
            print(f"ports: 127.0.0.1:{port} is held by a closed connection (TIME_WAIT); waiting for it",
                  flush=True)
            announced = True
        time.sleep(1.0)


if __name__ == "__main__":
    print(reserve())
