"""A local Airflow (api-server, scheduler, dag-processor, triggerer) against the edge stack.

Used by `make demo` and the e2e tests. Runs the project's dags/ and plugins/ unchanged, with the
connections from .devstack/stack.env, on LocalExecutor + SQLite by default (the demo), LocalExecutor +
Postgres (the tests, whose cases run side by side) or CeleryExecutor + Postgres + Redis (the scale path). Every process is started with a pid file and stopped by pid.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from devstack.base import REPO, STATE, StackContext, StackError
from devstack.util import read_stack_env
from edge_training.pool_order import EDGE_VM_POOL

API_PORT = 47180
ADMIN_USER = "admin"
#: A read-only user (Airflow's viewer role), so the UI's permissions can be tried as a person without them.
VIEWER_USER = "viewer"
#: The simple auth manager's users and their roles.
USERS = {ADMIN_USER: "admin", VIEWER_USER: "viewer"}
EDGE_VM_POOL_SLOTS = 2
MODEL_REGISTRY_POOL = "edge_model_registry"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
#: Scheduler settings of every deployment of the project (docker-compose.yaml sets them too). After a loop
#: with nothing to do the scheduler sleeps scheduler_idle_sleep_time (Airflow's default is 1 s): a task that
#: ends meanwhile waits out the sleep before the next one is scheduled, at each step of the chain
#: (bench/overhead.py's gaps between tasks).
SCHEDULER_SETTINGS = {"AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25"}


@dataclass
class LocalAirflow:
    """One Airflow installation: its home, executor, database and the processes it runs."""

    name: str = "airflow"
    port: int = API_PORT
    #: The LocalExecutor, with the SDKs imported before its workers fork (edge_training/executors/).
    executor: str = "edge_training.executors.PreloadingLocalExecutor"
    sql_alchemy_conn: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: int = 0
    #: "env": connections come from stack.env's AIRFLOW_CONN_* variables; "db": they are imported into
    #: the metadata database at start, so they can be edited through the REST API (as in the UI).
    connections: str = "env"
    edge_vm_slots: int = EDGE_VM_POOL_SLOTS
    ctx: StackContext = field(default_factory=StackContext)

    @property
    def home(self) -> Path:
        return STATE / self.name

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- configuration -------------------------------------------------------------------------

    def _secret(self, filename: str) -> str:
        path = self.home / filename
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(24))
            path.chmod(0o600)
        return path.read_text().strip()

    def password(self, user: str) -> str:
        """The user's password, from the file the API server reads (written at first use)."""
        path = self.home / "passwords.json"
        known = json.loads(path.read_text()) if path.exists() else {}
        missing = {u: secrets.token_urlsafe(12) for u in USERS if u not in known}
        if missing:
            self.home.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({**known, **missing}))
            path.chmod(0o600)
            known.update(missing)
        return known[user]

    @property
    def admin_password(self) -> str:
        return self.password(ADMIN_USER)

    def env(self) -> dict[str, str]:
        stack_env = read_stack_env()
        if not stack_env:
            raise StackError("airflow: .devstack/stack.env not found; run `make stack-up` first")
        self.admin_password  # noqa: B018 - creates the passwords file the API server reads
        from_env = self.connections == "env"
        inherited = {k: v for k, v in {**os.environ, **stack_env}.items()
                     if from_env or not k.startswith("AIRFLOW_CONN_")}
        # azure-ai-ml records the cloud it registered in its own process here; a child that inherits the
        # name without having registered the cloud fails every MLClient call (see devstack/STACK.md).
        inherited.pop("AZUREML_CURRENT_CLOUD", None)
        env = {
            **inherited,
            "AIRFLOW_HOME": str(self.home),
            "PYTHONPATH": f"{REPO}:{REPO / 'plugins'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": self.executor,
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{role}" for u, role in USERS.items()),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__SECRET_KEY": self._secret("api_secret_key"),
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secret("jwt_secret"),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            # Runs here come from the demo's and the tests' own triggers and backfills, and the deploys their
            # model asset events start (which needs the scheduler's job schedule on): edge_training's
            # timetable ends on its first day, so the scheduler adds no "latest partition" run beside them.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
            "EDGE_TRAINING_SCHEDULE_END": "2026-11-01",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            **SCHEDULER_SETTINGS,
            # A task whose process died (a worker or scheduler crash) is retried after this, not 5 min.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "NO_PROXY": "*",
        }
        if self.sql_alchemy_conn:
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = self.sql_alchemy_conn
        else:
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{self.home / 'airflow.db'}"
        env.update(self.extra_env)
        return env

    def airflow(self, *args: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess:
        """Run an `airflow` CLI command in this installation's environment."""
        proc = subprocess.run(
            [str(REPO / ".venv" / "bin" / "airflow"), *args],
            env=self.env(),
            cwd=str(REPO),
            capture_output=capture,
            text=True,
        )
        if check and proc.returncode != 0:
            raise StackError(
                f"airflow {' '.join(args)} exited {proc.returncode}: "
                f"{(proc.stderr or proc.stdout or '')[-2000:]}"
            )
        return proc

    # -- lifecycle -----------------------------------------------------------------------------

    def _pid_name(self, component: str) -> str:
        return f"{self.name}-{component}"

    def running_components(self) -> list[str]:
        names = list(COMPONENTS) + [f"worker-{i}" for i in range(self.workers)]
        return [c for c in names if self.ctx.running_pid(self._pid_name(c))]

    def start(self) -> None:
        """Migrate the DB, create the pool, start every component (idempotent)."""
        self.home.mkdir(parents=True, exist_ok=True)
        if len(self.running_components()) == len(COMPONENTS) + self.workers and self.healthy():
            print(f"{self.name}: already running at {self.base_url}")
            return
        self.airflow("db", "migrate")
        # --include-deferred: a deferred training still runs on the VM, so it must keep its slot.
        self.airflow("pools", "set", EDGE_VM_POOL, str(self.edge_vm_slots),
                     "Trainings the edge VM runs at once", "--include-deferred")
        self.airflow("pools", "set", MODEL_REGISTRY_POOL, "1",
                     "One model registration at a time: find-by-job-tag then register stays atomic")
        if self.connections == "db":
            self.import_connections()
        env = self.env()
        airflow_bin = str(REPO / ".venv" / "bin" / "airflow")
        preloading = [str(REPO / ".venv" / "bin" / "python"), "-m", "edge_training.preloading"]
        commands = {
            "api-server": [airflow_bin, "api-server", "--port", str(self.port), "--host", "127.0.0.1"],
            "scheduler": [airflow_bin, "scheduler"],
            # `airflow dag-processor` and `airflow triggerer`, each with the modules its forked processes would
            # import (DAG file parses, the trigger runner) imported first (edge_training.preloading).
            "dag-processor": [*preloading, "dag-processor"],
            "triggerer": [*preloading, "triggerer"],
        }
        for i in range(self.workers):
            commands[f"worker-{i}"] = [
                airflow_bin, "celery", "worker", "--concurrency", "2",
                "--celery-hostname", f"edge-worker-{i}@%h", "--skip-serve-logs",
            ]
        for component, argv in commands.items():
            if self.ctx.running_pid(self._pid_name(component)):
                continue
            self.ctx.spawn(self._pid_name(component), argv, env=env, inherit_env=False)
        self.wait_healthy()

    def reset(self) -> None:
        """Stop, then forget every run: a fresh metadata DB and no task logs."""
        import shutil

        self.stop()
        if self.sql_alchemy_conn:
            from devstack import scale

            if not self.sql_alchemy_conn.startswith(scale.sql_alchemy_conn("")):
                raise StackError(f"{self.name}: reset handles SQLite and the stack's own Postgres, "
                                 f"not {self.sql_alchemy_conn}")
            scale.database(self.sql_alchemy_conn.rsplit("/", 1)[1], fresh=True)
        else:
            (self.home / "airflow.db").unlink(missing_ok=True)
        shutil.rmtree(self.home / "logs", ignore_errors=True)

    def kill(self, component: str) -> int:
        """SIGKILL one component and everything it started (a crash, not a shutdown). Returns its pid."""
        import signal

        pid = self.ctx.running_pid(self._pid_name(component))
        if pid is None:
            raise StackError(f"{self.name}: {component} is not running")
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:  # our child: reap it, or it lingers as a zombie
                    break
            except ChildProcessError:  # another process's child: gone once its pid is
                if not self.ctx.running_pid(self._pid_name(component)):
                    break
            time.sleep(0.1)
        return pid

    def stop(self) -> list[str]:
        stopped = []
        for component in [f"worker-{i}" for i in range(self.workers)] + list(reversed(COMPONENTS)):
            if self.ctx.stop(self._pid_name(component)):
                stopped.append(component)
        return stopped

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/api/v2/monitor/health", timeout=3) as resp:
                body = json.loads(resp.read())
        except (OSError, ValueError):
            return False
        return body.get("metadatabase", {}).get("status") == "healthy" and body.get(
            "scheduler", {}
        ).get("status") == "healthy"

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy():
                return
            for component in COMPONENTS:
                if not self.ctx.running_pid(self._pid_name(component)):
                    log = self.ctx.log_file(self._pid_name(component))
                    tail = log.read_text()[-3000:] if log.exists() else ""
                    raise StackError(f"{self.name}: {component} exited during start-up; log tail:\n{tail}")
            time.sleep(1)
        raise StackError(f"{self.name}: API at {self.base_url} not healthy after {timeout:.0f}s")

    # -- connections ---------------------------------------------------------------------------

    @staticmethod
    def stack_connections() -> dict[str, dict]:
        """The stack's connections (conn id -> JSON form), as stack.env defines them."""
        stack_env = read_stack_env()
        return {k[len("AIRFLOW_CONN_"):].lower(): json.loads(v) for k, v in stack_env.items()
                if k.startswith("AIRFLOW_CONN_")}

    def import_connections(self) -> None:
        """Write the stack's connections into the metadata DB (``airflow connections import``)."""
        path = self.home / "connections.import.json"
        path.write_text(json.dumps(self.stack_connections()))
        path.chmod(0o600)
        try:
            self.airflow("connections", "import", "--overwrite", str(path))
        finally:
            path.unlink(missing_ok=True)

    def put_connection(self, conn_id: str, conn: dict | None) -> None:
        """Replace a connection through the REST API, as a person editing it in the UI; None deletes it."""
        try:
            self.api("DELETE", f"/connections/{conn_id}")
        except StackError as exc:
            if "404" not in str(exc):
                raise
        if conn is None:
            return
        body = {"connection_id": conn_id, "conn_type": conn["conn_type"]}
        for key in ("host", "login", "password", "port", "schema", "description"):
            if conn.get(key) is not None:
                body[key] = conn[key]
        if conn.get("extra") is not None:
            extra = conn["extra"]
            body["extra"] = extra if isinstance(extra, str) else json.dumps(extra)
        self.api("POST", "/connections", body)

    def restore_connection(self, conn_id: str) -> None:
        self.put_connection(conn_id, self.stack_connections()[conn_id])

    # -- REST API ------------------------------------------------------------------------------

    def token(self) -> str:
        """A JWT for the admin user, cached for a few minutes (the API's default expiry is longer)."""
        cached = getattr(self, "_token", None)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        body = json.dumps({"username": ADMIN_USER, "password": self.admin_password}).encode()
        req = urllib.request.Request(
            f"{self.base_url}/auth/token", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            token = json.loads(resp.read())["access_token"]
        self._token = (token, time.monotonic() + 300)
        return token

    def api(self, method: str, path: str, body: dict | None = None, *, raw: bool = False,
            attempts: int = 6):
        """One REST call. A 500 "Database error" is sent again (up to ``attempts`` times, pausing longer
        each time), as a person would click again: Postgres aborts one side of a deadlock between the API
        server and the scheduler (e.g. marking a run failed while the scheduler updates it), and the
        aborted transaction changed nothing. A busy run met three such deadlocks in a row (2 s apart) in a
        fresh-clone `make test`."""
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(1, attempts + 1):
            req = urllib.request.Request(
                f"{self.base_url}/api/v2{path}",
                data=data,
                method=method,
                headers={"Authorization": f"Bearer {self.token()}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    payload = resp.read()
                break
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:1000].decode("utf-8", errors="replace")
                if exc.code == 500 and "Database error" in detail and attempt < attempts:
                    time.sleep(1.0 * attempt)
                    continue
                raise StackError(f"Airflow API {method} {path} -> {exc.code}: {detail}") from exc
        if raw:
            return payload.decode()
        return json.loads(payload) if payload else None

    def wait_dag_parsed(self, dag_id: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                dag = self.api("GET", f"/dags/{dag_id}")
                if dag and not dag.get("has_import_errors"):
                    if dag.get("is_paused"):
                        self.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})
                    return
            except StackError as exc:
                last = str(exc)
            errors = self.api("GET", "/importErrors")
            if errors.get("total_entries"):
                raise StackError(f"DAG import errors: {json.dumps(errors['import_errors'])[:3000]}")
            time.sleep(2)
        raise StackError(f"DAG {dag_id} not parsed after {timeout:.0f}s ({last})")

    def trigger(self, dag_id: str, *, partition_key: str | None = None, conf: dict | None = None,
                run_id: str | None = None) -> dict:
        body: dict = {"logical_date": None, "conf": conf or {}}
        if partition_key:
            body["partition_key"] = partition_key
        if run_id:
            body["dag_run_id"] = run_id
        return self.api("POST", f"/dags/{dag_id}/dagRuns", body)

    def wait_run(self, dag_id: str, run_id: str, *, timeout: float = 900) -> dict:
        deadline = time.monotonic() + timeout
        quoted = urllib.request.quote(run_id, safe="")
        while time.monotonic() < deadline:
            run = self.api("GET", f"/dags/{dag_id}/dagRuns/{quoted}")
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(2)
        raise StackError(f"run {dag_id}/{run_id} not finished after {timeout:.0f}s")

    def wait_asset_triggered_run(self, dag_id: str, partition_key: str, *, after: str,
                                 timeout: float = 300) -> dict:
        """The first run of ``dag_id`` an asset event created for ``partition_key`` at or after ``after``
        (ISO time), once it has finished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.api("GET", f"/dags/{dag_id}/dagRuns?order_by=run_after&limit=100"
                                   f"&run_after_gte={urllib.request.quote(after, safe='')}")["dag_runs"]
            found = [r for r in runs
                     if r.get("run_type") == "asset_triggered" and r.get("partition_key") == partition_key]
            if found:
                return self.wait_run(dag_id, found[0]["dag_run_id"], timeout=max(deadline - time.monotonic(), 1))
            time.sleep(2)
        raise StackError(f"no asset-triggered run of {dag_id} for partition {partition_key} after {timeout:.0f}s")

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.api("PATCH", f"/dags/{dag_id}", {"is_paused": paused})

    def set_edge_vm_slots(self, slots: int) -> int:
        """Give the edge_vm pool ``slots`` (deferred tasks still counted) through the REST API, as an
        operator would; returns the slots it had."""
        before = self.api("GET", f"/pools/{EDGE_VM_POOL}")
        self.api("PATCH", f"/pools/{EDGE_VM_POOL}?update_mask=slots",
                 {"pool": EDGE_VM_POOL, "slots": slots, "include_deferred": True})
        return before["slots"]

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict]:
        quoted = urllib.request.quote(run_id, safe="")
        tis = self.api("GET", f"/dags/{dag_id}/dagRuns/{quoted}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti for ti in tis}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
        quoted = urllib.request.quote(run_id, safe="")
        entry = self.api(
            "GET", f"/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/xcomEntries/{key}"
        )
        return entry["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        quoted = urllib.request.quote(run_id, safe="")
        content = self.api(
            "GET",
            f"/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/logs/{try_number}?full_content=true",
        )
        lines = []
        for item in content.get("content", []):
            if not isinstance(item, dict):
                lines.append(str(item))
                continue
            lines.append(str(item.get("event", "")))
            for error in item.get("error_detail") or []:
                lines.append(f"{error.get('exc_type')}: {error.get('exc_value')}")
        return "\n".join(lines)
