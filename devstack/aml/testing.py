"""Helpers for the AML double's own tests and benchmarks: a private double on a free port (own state dir,
so fault injection and restarts never disturb the shared stack instance), and an MLClient for it built
the way STACK.md documents the azureml_default connection.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from devstack.aml import config

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PrivateDouble:
    port: int
    state_dir: Path
    log_file: Path
    stack_env: Mapping[str, str]
    proc: subprocess.Popen | None = None
    extra_args: tuple[str, ...] = ()

    @property
    def endpoint(self) -> str:
        return f"https://{config.HOST}:{self.port}"

    @property
    def ca_file(self) -> str:
        return self.stack_env["EDGE_CA_FILE"]

    def start(self, timeout: float = 30.0) -> None:
        pki = Path(self.ca_file).parent
        env = {**os.environ, "PYTHONPATH": str(REPO),
               **{k: self.stack_env[k] for k in ("EDGE_AMLSTORE_CONNECTION_STRING", "EDGE_VM_KNOWN_HOSTS",
                                                 "EDGE_CA_FILE")}}
        log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devstack.aml.server", "--port", str(self.port), "--state-dir",
             str(self.state_dir), "--cert", str(pki / "server.crt"), "--key", str(pki / "server.key"),
             "--ca-file", self.ca_file, *self.extra_args],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(REPO))
        context = ssl.create_default_context(cafile=self.ca_file)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the private AML double exited with {self.proc.returncode}; see {self.log_file}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/healthz", context=context, timeout=2):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the private AML double did not answer /healthz within {timeout}s; see {self.log_file}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@contextmanager
def running_private_double(stack_env: Mapping[str, str], root: Path) -> Iterator[PrivateDouble]:
    """A private double on a free port with its state under ``root``, stopped on exit."""
    double = PrivateDouble(port=free_port(), state_dir=root / "state", log_file=root / "double.log",
                           stack_env=stack_env)
    double.start()
    try:
        yield double
    finally:
        double.stop()


def connection_json(endpoint: str, ca_file: str, cloud_name: str) -> str:
    import json

    extra = config.connection_extra(ca_file=ca_file, endpoint=endpoint)
    extra["cloud_name"] = cloud_name
    return json.dumps({"conn_type": "azureml", "extra": extra})


def ml_client(endpoint: str, ca_file: str, cloud_name: str):
    from devstack.aml.bootstrap import ml_client_from_connection

    return ml_client_from_connection(connection_json(endpoint, ca_file, cloud_name))
