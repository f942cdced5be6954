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
import subprocess
import sys
import time
from pathlib import Path

from devstack import ports
from devstack.base import StackContext, StackError
from devstack.util import apt_install, port_listening, run

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


class ExitedDuringStartUp(StackError):
    """The service's process ended before it listened; the message carries its log's end."""


def _log_tail(name: str, ctx: StackContext, since: int = 0) -> str:
    log = ctx.log_file(name)
    if not log.exists():
        return "(no log)"
    return log.read_bytes()[since:].decode(errors="replace")[-1500:]


def _log_size(name: str, ctx: StackContext) -> int:
    log = ctx.log_file(name)
    return log.stat().st_size if log.exists() else 0


def _wait_port(name: str, port: int, ctx: StackContext, timeout: float = 60, log_since: int = 0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_listening(port):
            return
        if not ctx.running_pid(name):
            raise ExitedDuringStartUp(f"{name}: exited during start-up: {_log_tail(name, ctx, log_since)}")
        time.sleep(0.2)
    raise StackError(f"{name}: not listening on 127.0.0.1:{port} after {timeout:.0f}s; its log ends: "
                     f"{_log_tail(name, ctx, log_since)}")


def _start(name: str, argv: list[str], port: int, ctx: StackContext, *, attempts: int = 3,
           backoff: float = 2.0, cwd: Path | None = None) -> None:
    """Spawn ``argv`` as service ``name`` and wait until it listens on ``port``, starting it again (up to
    ``attempts`` times) when it exits during start-up; the error that remains quotes each attempt's log."""
    failures = []
    for attempt in range(1, attempts + 1):
        since = _log_size(name, ctx)
        ctx.spawn(name, argv, cwd=cwd)
        try:
            _wait_port(name, port, ctx, log_since=since)
            return
        except ExitedDuringStartUp as exc:
            failures.append(f"attempt {attempt}: {exc}")
            print(f"{exc} (attempt {attempt} of {attempts})", file=sys.stderr)
            if attempt < attempts:
                time.sleep(backoff * attempt)
    raise StackError(f"{name}: did not start in {attempts} attempts:\n" + "\n".join(failures))


def _clear_stale_lock(data: Path) -> None:
    """Remove ``postmaster.pid`` left by a Postgres that did not shut down (killed with its machine).

    Postgres itself ignores such a file only when its pid is free; once another process of the
    postgres user has that pid, it refuses to start, however long it is retried. A live postmaster on
    this data directory is left alone and named instead.
    """
    lock = data / "postmaster.pid"
    try:
        pid = int(lock.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        command = []
    if b"-D" in command and str(data).encode() in command:
        raise StackError(f"postgres: a postmaster (pid {pid}) this stack did not start runs on {data} "
                         f"without listening on 127.0.0.1:{PG_PORT}; stop it and run again")
    lock.unlink()


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
        ports.wait_for_time_wait(PG_PORT)
        if port_listening(PG_PORT):
            raise StackError(f"postgres: port {PG_PORT} is taken by a process this stack did not start")
        if not (data / "PG_VERSION").exists():
            PG_DATA_ROOT.mkdir(parents=True, exist_ok=True)
            PG_DATA_ROOT.chmod(0o755)
            data.mkdir(parents=True, exist_ok=True)
            shutil.chown(data, "postgres", "postgres")
            run(["runuser", "-u", "postgres", "--", _pg_bin("initdb"), "-D", str(data), "-U", PG_USER,
                 "--auth=trust", "-E", "UTF8"], what="postgres initdb", cwd=Path("/"))
        # Only TCP on loopback, which every client here uses: no Unix socket, so no lock file in the
        # shared /tmp that a Postgres of another checkout, or one killed with the machine, leaves behind.
        # Several Airflow installations share it (each process keeps a pool of connections); its data is
        # the tests' and demo's throwaway metadata, so it skips fsync.
        _clear_stale_lock(data)
        _start("postgres", ["runuser", "-u", "postgres", "--", _pg_bin("postgres"), "-D", str(data),
                            "-h", "127.0.0.1", "-p", str(PG_PORT), "-c", "unix_socket_directories=",
                            "-c", "max_connections=400", "-c", "fsync=off"], PG_PORT, ctx, cwd=Path("/"))
        started.append("postgres")
        deadline = time.monotonic() + 30
        while _psql("SELECT 1").returncode != 0:
            if time.monotonic() > deadline:
                raise StackError(f"postgres: not accepting queries: {_psql('SELECT 1').stderr}")
            time.sleep(0.5)
        database(PG_DB)
    if redis and not ctx.running_pid("redis"):
        ports.wait_for_time_wait(REDIS_PORT)
        if port_listening(REDIS_PORT):
            raise StackError(f"redis: port {REDIS_PORT} is taken by a process this stack did not start")
        redis_dir = ctx.state / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        _start("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(REDIS_PORT),
                         "--dir", str(redis_dir), "--save", "", "--appendonly", "no"], REDIS_PORT, ctx)
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
