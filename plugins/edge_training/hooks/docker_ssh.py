"""The docker_edge connection as a docker-py client: its arguments, and Docker over SSH with a pinned
host key and the connection's own key (docker-py's ssh transport reads both from ~/.ssh only).

pinned_ssh_client builds on docker-py's transport classes (docker.transport.sshconn), which are not
public API: a docker-py upgrade may need this module changed, and nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge_training.exceptions import ContainerImageError

if TYPE_CHECKING:
    import docker


def docker_client_kwargs(host: str | None, port: int | None, extra: dict[str, Any]) -> dict[str, Any]:
    """docker.DockerClient arguments from a docker_edge connection (host, port, extra)."""
    base_url = (host or "").strip() or "unix:///var/run/docker.sock"
    if not base_url.startswith(("unix://", "tcp://", "ssh://", "npipe://", "http://", "https://")):
        raise ContainerImageError(
            f"Docker host {base_url!r}: expected unix://, tcp:// or ssh:// in the connection's host"
        )
    if port and base_url.startswith(("tcp://", "ssh://")) and ":" not in base_url.split("://", 1)[1].split("@")[-1]:
        base_url = f"{base_url}:{port}"
    tls: Any = False
    if extra.get("tls") or extra.get("tls_ca_cert") or extra.get("tls_client_cert"):
        from docker.tls import TLSConfig

        cert = (extra["tls_client_cert"], extra["tls_client_key"]) if extra.get("tls_client_cert") else None
        tls = TLSConfig(client_cert=cert, ca_cert=extra.get("tls_ca_cert"), verify=extra.get("tls_verify", True))
    return {
        "base_url": base_url,
        "version": "auto",
        "timeout": int(extra.get("timeout", 600)),
        "tls": tls,
        "use_ssh_client": bool(extra.get("use_ssh_client", False)),
    }


def parse_host_key(host_key: str):
    """A paramiko key from ``'ssh-ed25519 AAAA...'`` or the bare base64 blob (as the SSH connection holds it)."""
    import base64

    import paramiko

    parts = host_key.strip().split()
    blob = base64.b64decode(parts[-1])
    key_type = parts[0] if len(parts) > 1 else blob[4:4 + int.from_bytes(blob[:4], "big")].decode()
    return key_type, paramiko.PKey.from_type_string(key_type, blob)


def pinned_ssh_client(kwargs: dict[str, Any], *, key_file: str | None, host_key: str | None) -> docker.DockerClient:
    """A DockerClient over ssh:// (paramiko) that logs in with ``key_file`` and accepts only ``host_key``.

    docker-py's own ssh transport takes the key and known hosts from ~/.ssh only; the edge VM's
    connection carries both (like the SSH connection of the same VM), so the transport is built here.
    Without ``host_key`` the system known_hosts must know the host (unknown hosts are refused).

    Each HTTP connection gets its own SSH connection: docker-py multiplexes sessions on one, and
    streamed or hijacked responses (build, exec) keep theirs open, so a build and a smoke test run
    into sshd's MaxSessions (10) on the one connection.
    """
    import urllib.parse

    import docker
    import paramiko
    from docker.transport.sshconn import SSHConnection, SSHConnectionPool, SSHHTTPAdapter

    url = urllib.parse.urlparse(kwargs["base_url"])
    pinned = parse_host_key(host_key) if host_key else None
    known_as = url.hostname if not url.port or url.port == 22 else f"[{url.hostname}]:{url.port}"

    def new_ssh_client(params: dict[str, Any]) -> paramiko.SSHClient:
        ssh = paramiko.SSHClient()
        ssh.load_system_host_keys()
        if pinned:
            ssh.get_host_keys().add(known_as, *pinned)
        ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        ssh.connect(**params)
        return ssh

    class OwnSSHConnection(SSHConnection):
        def __init__(self, params: dict[str, Any], timeout: float) -> None:
            super().__init__(ssh_transport=None, timeout=timeout)
            self._params = params
            self._ssh: paramiko.SSHClient | None = None

        def connect(self) -> None:
            self._ssh = new_ssh_client(self._params)
            channel = self._ssh.get_transport().open_session()
            channel.settimeout(self.timeout)
            channel.exec_command("docker system dial-stdio")
            self.sock = channel

        def close(self) -> None:
            super().close()
            if self._ssh is not None:
                self._ssh.close()
                self._ssh = None

    class OwnSSHConnectionPool(SSHConnectionPool):
        def __init__(self, params: dict[str, Any], timeout: float, maxsize: int) -> None:
            super().__init__(ssh_client=None, timeout=timeout, maxsize=maxsize)
            self._params = params

        def _new_conn(self) -> OwnSSHConnection:
            return OwnSSHConnection(self._params, self.timeout)

    class PinnedSSHAdapter(SSHHTTPAdapter):
        def _create_paramiko_client(self, base_url: str) -> None:
            super()._create_paramiko_client(base_url)
            if key_file:
                self.ssh_params.update(key_filename=key_file, look_for_keys=False, allow_agent=False)
            if pinned:
                self.ssh_client.get_host_keys().add(known_as, *pinned)

        def get_connection(self, url: str, proxies: Any = None) -> OwnSSHConnectionPool:
            with self.pools.lock:
                pool = self.pools.get(url)
                if pool is None:
                    pool = OwnSSHConnectionPool(self.ssh_params, self.timeout, self.max_pool_size)
                    self.pools[url] = pool
            return pool

    # Shell-out mode defers connecting, so the adapter can be swapped before the first request.
    client = docker.DockerClient(**{**kwargs, "use_ssh_client": True, "version": "1.41"})
    # Connects once here: a wrong host key or key fails now, with paramiko's exception.
    adapter = PinnedSSHAdapter(kwargs["base_url"], kwargs["timeout"])
    adapter.ssh_client.close()
    client.api._custom_adapter = adapter
    client.api.mount("http+docker://ssh", adapter)
    client.api._version = client.api._retrieve_server_version()
    return client
