"""The /etc/hosts block that gives the stack production-shaped hostnames on 127.0.0.1."""

from __future__ import annotations

import socket
from pathlib import Path

from devstack.base import Service, StackContext, StackError

BEGIN = "# BEGIN edge-training devstack"
END = "# END edge-training devstack"
HOSTNAMES = (
    "edgedata.blob.local.azurestack.external",
    "amlworkspace.blob.local.azurestack.external",
    "edgevm.local.azurestack.external",
    "edgeacr.azsacr.local.azurestack.external",
    "management.local.azurestack.external",
)
HOSTS_FILE = Path("/etc/hosts")


def render_block(names: tuple[str, ...] = HOSTNAMES) -> str:
    return "\n".join([BEGIN, *(f"127.0.0.1 {name}" for name in names), END]) + "\n"


def with_block(text: str, names: tuple[str, ...] = HOSTNAMES) -> str:
    """``text`` with exactly one stack block (replacing any previous one, wherever it is)."""
    kept: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.strip() == BEGIN:
            inside = True
            continue
        if line.strip() == END:
            inside = False
            continue
        if not inside:
            kept.append(line)
    body = "\n".join(kept).rstrip("\n")
    return (body + "\n" if body else "") + render_block(names)


class HostsService(Service):
    name = "hosts"
    address = str(HOSTS_FILE)

    def __init__(self, *, hosts_file: Path = HOSTS_FILE) -> None:
        self.hosts_file = hosts_file

    def install(self, ctx: StackContext) -> None:
        current = self.hosts_file.read_text()
        wanted = with_block(current)
        if wanted != current:
            # Rewritten in place: /etc/hosts is often a bind mount that cannot be replaced by rename.
            try:
                with open(self.hosts_file, "w") as fh:
                    fh.write(wanted)
            except OSError as exc:
                raise StackError(f"hosts: cannot write {self.hosts_file}: {exc}") from exc

    def start(self, ctx: StackContext) -> str:
        return f"hosts: {len(HOSTNAMES)} names mapped to 127.0.0.1 in {self.hosts_file}"

    def health(self, ctx: StackContext) -> tuple[bool, str]:
        if render_block() not in self.hosts_file.read_text():
            return False, f"the devstack block is missing from {self.hosts_file}"
        for name in HOSTNAMES:
            try:
                addr = socket.gethostbyname(name)
            except OSError as exc:
                return False, f"{name} does not resolve: {exc}"
            if addr != "127.0.0.1":
                return False, f"{name} resolves to {addr}, expected 127.0.0.1"
        return True, f"{len(HOSTNAMES)} names resolve to 127.0.0.1"

    def stop(self, ctx: StackContext) -> str:
        # The block is harmless and other tools (the demo, tests) resolve through it: kept.
        return "hosts: block kept in /etc/hosts"
