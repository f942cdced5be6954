"""Airflow's production-grade services on loopback: Postgres (the tests' metadata database, and the
scale path's) and Redis (the CeleryExecutor's broker).

    python -m devstack.scale up|down

Debian's postgresql and redis-server (installed if missing), each with its data outside the checkout
and its pid recorded, so `down` (and `make stack-down`) stops exactly what `up` started. Each Airflow
installation gets its own database (``database(name)``), so the tests' LocalExecutor Airflow and the
Celery one can run side by side.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from devstack.base import StackContext, StackError
from devstack.util import apt_install, run

PG_PORT = 47132
REDIS_PORT = 47179
PG_USER = "airflow"
PG_DB = "airflow"
PG_DATA_ROOT = Path("/var/lib/edge-training/postgres")


def _pg_bin(name: str) -> str:
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise StackError(f"postgres: {name} not found after installing postgresql")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_port(name: str, port: int, ctx: StackContext, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _listening(port):
            return
        if not ctx.running_pid(name):
            log = ctx.log_file(name)
            raise StackError(f"{name}: exited during start-up: {log.read_text()[-1500:] if log.exists() else ''}")
        time.sleep(0.2)
    raise StackError(f"{name}: not listening on 127.0.0.1:{port} after {timeout:.0f}s")


def sql_alchemy_conn(database: str = PG_DB) -> str:
    return f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{PG_PORT}/{database}"


def _psql(sql: str, database: str = "postgres") -> subprocess.CompletedProcess:
    return subprocess.run([_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", PG_USER, "-d", database,
                           "-v", "ON_ERROR_STOP=1", "-tAc", sql], capture_output=True, text=True)


def database(name: str, *, fresh: bool = False) -> str:
    """The URL of database ``name`` on the running Postgres, created if missing (dropped first when
    ``fresh``: a new metadata database for an Airflow that must not see earlier runs)."""
    if not name.replace("_", "").isalnum():
        raise StackError(f"postgres: database name {name!r} must be letters, digits and underscores")
    if fresh:
        proc = _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if proc.returncode != 0:
            raise StackError(f"postgres: dropping database {name}: {proc.stderr.strip()}")
    proc = _psql(f"SELECT 1 FROM pg_database WHERE datname='{name}'")
    if proc.returncode != 0:
        raise StackError(f"postgres: not accepting queries: {proc.stderr.strip()}")
    if proc.stdout.strip() != "1":
        run([_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", PG_USER, name],
            what=f"postgres createdb {name}")
    return sql_alchemy_conn(name)


def broker_url() -> str:
    return f"redis://127.0.0.1:{REDIS_PORT}/0"


def up(ctx: StackContext | None = None, *, redis: bool = True) -> list[str]:
    """Start Postgres (and Redis unless ``redis`` is false) if not running; returns what it started,
    for ``down(only=...)``."""
    ctx = ctx or StackContext()
    started = []
    apt_install(["postgresql", "redis-server"], what="scale path")
    # Postgres refuses to run as root: its data directory belongs to the postgres user, outside the
    # checkout (a clone may sit in a 0700 folder the postgres user cannot enter), one per checkout.
    data = PG_DATA_ROOT / hashlib.sha256(str(ctx.state).encode()).hexdigest()[:12]
    if not ctx.running_pid("postgres"):
        if _listening(PG_PORT):
            raise StackError(f"postgres: port {PG_PORT} is taken by a process this stack did not start")
        if not (data / "PG_VERSION").exists():
            PG_DATA_ROOT.mkdir(parents=True, exist_ok=True)
            PG_DATA_ROOT.chmod(0o755)
            data.mkdir(parents=True, exist_ok=True)
            shutil.chown(data, "postgres", "postgres")
            run(["runuser", "-u", "postgres", "--", _pg_bin("initdb"), "-D", str(data), "-U", PG_USER,
                 "--auth=trust", "-E", "UTF8"], what="postgres initdb", cwd=Path("/"))
        # Several Airflow installations share it (each process keeps a pool of connections); its data is
        # the tests' and demo's throwaway metadata, so it skips fsync.
        ctx.spawn("postgres", ["runuser", "-u", "postgres", "--", _pg_bin("postgres"), "-D", str(data),
                               "-h", "127.0.0.1", "-p", str(PG_PORT), "-k", "/tmp",
                               "-c", "max_connections=400", "-c", "fsync=off"], cwd=Path("/"))
        started.append("postgres")
        _wait_port("postgres", PG_PORT, ctx)
        deadline = time.monotonic() + 30
        while _psql("SELECT 1").returncode != 0:
            if time.monotonic() > deadline:
                raise StackError(f"postgres: not accepting queries: {_psql('SELECT 1').stderr}")
            time.sleep(0.5)
        database(PG_DB)
    if redis and not ctx.running_pid("redis"):
        if _listening(REDIS_PORT):
            raise StackError(f"redis: port {REDIS_PORT} is taken by a process this stack did not start")
        redis_dir = ctx.state / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        ctx.spawn("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(REDIS_PORT),
                            "--dir", str(redis_dir), "--save", "", "--appendonly", "no"])
        _wait_port("redis", REDIS_PORT, ctx)
        started.append("redis")
    print(f"scale path: postgres 127.0.0.1:{PG_PORT}" + (f", redis 127.0.0.1:{REDIS_PORT}" if redis else ""))
    return started


def down(ctx: StackContext | None = None, *, only: list[str] | None = None) -> None:
    """Stop Redis and Postgres, or only those named (what one ``up`` call started)."""
    ctx = ctx or StackContext()
    for name in ("redis", "postgres"):
        if only is None or name in only:
            print(f"{name}: {'stopped' if ctx.stop(name) else 'not running'}")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("up", "down"):
        sys.exit(__doc__)
    try:
        up() if sys.argv[1] == "up" else down()
    except StackError as exc:
        sys.exit(str(exc))
