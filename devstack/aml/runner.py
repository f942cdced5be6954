"""Runs command jobs on an attached virtualmachine compute, the way AML does on an attached VM.

Per job, one thread: SSH to the compute (pinned host key, never auto-added), stage the code snapshot, the
stack CA and the job runtime (runjob.py) into a work dir on the VM, start one docker container of the
environment's image (host networking), then poll the container's status file and copy std_log.txt as it
grows, so run history serves it while the job runs. Cancel stops and removes the container.
"""

from __future__ import annotations

import io
import json
import logging
import posixpath
import re
import shlex
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paramiko

from devstack.aml import config

log = logging.getLogger("aml-double.runner")

TERMINAL = {"Completed", "Failed", "Canceled", "NotResponding", "Paused"}
#: How the double runs a job: "container" (docker on the VM, as AML does) or "host" (a plain process on
#: the VM, for load tests: devstack/aml/host_jobs.py).
JOB_MODES = ("container", "host")
RUNJOB = Path(__file__).with_name("runjob.py")
DATASTORE_URI = re.compile(
    r"^azureml://(?:subscriptions/[^/]+/resource[gG]roups/[^/]+/(?:providers/[^/]+/)?workspaces/[^/]+/)?"
    r"datastores/(?P<ds>[^/]+)/paths/(?P<path>.*)$")
JOB_OUTPUT_URI = re.compile(r"^azureml://jobs/(?P<job>[^/]+)/outputs/(?P<out>[^/]+)(?P<rest>/.*)?$")
REF = re.compile(r"\$\{\{\s*(inputs|outputs)\.([A-Za-z0-9_]+)\s*\}\}")


ISO_DURATION = re.compile(r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
                          r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$")


def parse_duration(value: str | None) -> float | None:
    """Seconds in an ISO 8601 duration such as the SDK's limits.timeout ('PT1M30S'); None when absent."""
    if not value:
        return None
    m = ISO_DURATION.match(value)
    if not m:
        raise JobError(f"limits.timeout: expected an ISO 8601 duration like 'PT1H30M'; got {value!r}")
    parts = {k: float(v) for k, v in m.groupdict().items() if v}
    return parts.get("d", 0) * 86400 + parts.get("h", 0) * 3600 + parts.get("m", 0) * 60 + parts.get("s", 0)


class JobError(Exception):
    """The job cannot run; the message becomes the job's error."""


def load_private_key(data: str) -> paramiko.PKey:
    errors = []
    for cls in (paramiko.Ed25519Key, paramiko.RSAKey, paramiko.ECDSAKey):
        try:
            return cls.from_private_key(io.StringIO(data))
        except Exception as exc:  # noqa: BLE001 - try the next key type
            errors.append(f"{cls.__name__}: {exc}")
    raise JobError("the compute's SSH private key could not be read (" + "; ".join(errors) + ")")


class JobRunner:
    def __init__(self, *, store: Any, state_dir: Path, storage: Any, known_hosts: str | None, ca_file: str | None,
                 vm_dns_suffix: str = "local.azurestack.external", poll_interval: float = 0.2,
                 max_jobs_per_compute: int = 4, job_mode: str = "container") -> None:
        self.store = store
        self.state_dir = state_dir
        self.storage = storage
        self.known_hosts = known_hosts
        self.ca_file = ca_file
        self.vm_dns_suffix = vm_dns_suffix
        self.poll_interval = poll_interval
        self._threads: dict[str, threading.Thread] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.max_jobs_per_compute = max_jobs_per_compute
        self._compute_slots: dict[str, threading.BoundedSemaphore] = {}
        if job_mode not in JOB_MODES:
            raise ValueError(f"job mode must be one of {', '.join(JOB_MODES)}; got {job_mode!r}")
        self.job_mode = job_mode
        # "host": every job runs as a plain process on its VM (devstack/aml/host_jobs.py), for load tests.
        self.host_jobs = None
        if job_mode == "host":
            from devstack.aml.host_jobs import HostJobs

            self.host_jobs = HostJobs(self)

    # ------------------------------------------------------------------ API used by the app
    def log_path(self, name: str) -> Path:
        return self.state_dir / "logs" / name / "user_logs" / "std_log.txt"

    def active_count(self) -> int:
        with self._lock:
            threads = sum(1 for t in self._threads.values() if t.is_alive())
        return threads + (self.host_jobs.active_count() if self.host_jobs is not None else 0)

    def submit(self, name: str) -> None:
        self._set(name, "Queued")
        if self.host_jobs is not None:
            self.host_jobs.submit(name)
            return
        self._start_thread(name, reattach=False)

    def cancel(self, name: str) -> None:
        if self.host_jobs is not None and self.host_jobs.cancel(name):
            job = self.store.get_job(name)
            if job is not None and job["status"] not in TERMINAL:
                self.store.update_job(name, status="CancelRequested", cancel_requested=time.time())
            return
        with self._lock:
            event = self._cancel.setdefault(name, threading.Event())
            alive = name in self._threads and self._threads[name].is_alive()
        job = self.store.get_job(name)
        if job is None or job["status"] in TERMINAL:
            return
        self.store.update_job(name, status="CancelRequested", cancel_requested=time.time())
        event.set()
        if not alive:
            # Nothing is watching the job (e.g. it never started): cancel it here.
            self._finish(name, "Canceled", error=None)

    def recover(self) -> None:
        """After a restart: re-attach to jobs whose container was started; restart the others' preparation."""
        for job in self.store.list_jobs():
            if job["status"] in TERMINAL:
                continue
            name = job["name"]
            if job["runtime"].get("mode") == "host" or (self.host_jobs is not None
                                                        and not job["runtime"].get("container")):
                self._recover_host_job(job)
                continue
            if job["status"] == "CancelRequested":
                self._cancel.setdefault(name, threading.Event()).set()
            if job["runtime"].get("container"):
                log.info("job %s: re-attaching to container %s", name, job["runtime"]["container"])
                self._history(name, "reattached")
                self._start_thread(name, reattach=True)
            else:
                log.info("job %s: the double restarted before its container started; preparing again", name)
                self._start_thread(name, reattach=False)

    def _recover_host_job(self, job: dict) -> None:
        name = job["name"]
        if self.host_jobs is None:
            self._finish(name, "Failed", error="the AML double restarted in container mode; this job ran in "
                                               "host mode (--job-mode host) and is no longer followed")
            return
        if job["runtime"].get("host_pid"):
            log.info("job %s: re-attaching to its process %s on the VM", name, job["runtime"]["host_pid"])
            self._history(name, "reattached")
            try:
                self.host_jobs.reattach(name, job["runtime"])
            except JobError as exc:
                self._finish(name, "Failed", error=str(exc))
                return
            if job["status"] == "CancelRequested":
                self.host_jobs.cancel(name)
        elif job["status"] == "CancelRequested":
            self._finish(name, "Canceled", error=None)
        else:
            self.host_jobs.submit(name)

    # ------------------------------------------------------------------ state helpers
    def _start_thread(self, name: str, *, reattach: bool) -> None:
        with self._lock:
            self._cancel.setdefault(name, threading.Event())
            thread = threading.Thread(target=self._run, args=(name, reattach), name=f"job-{name}", daemon=True)
            self._threads[name] = thread
        thread.start()

    def _history(self, name: str, status: str) -> None:
        job = self.store.get_job(name)
        hist = list(job["runtime"].get("history") or [])
        hist.append([status, time.time()])
        self.store.update_job(name, history=hist)

    def _set(self, name: str, status: str, **runtime: Any) -> None:
        job = self.store.get_job(name)
        if job is None or job["status"] in TERMINAL:
            return
        if job["status"] == "CancelRequested" and status not in TERMINAL:
            return
        if job["status"] != status:
            hist = list(job["runtime"].get("history") or [])
            hist.append([status, time.time()])
            runtime["history"] = hist
        self.store.update_job(name, status=status, **runtime)

    def _finish(self, name: str, status: str, *, error: str | None, exit_code: int | None = None) -> None:
        job = self.store.get_job(name)
        if job is None or job["status"] in TERMINAL:
            return
        hist = list(job["runtime"].get("history") or [])
        hist.append([status, time.time()])
        self.store.update_job(name, status=status, error=error, exit_code=exit_code, end=time.time(),
                              history=hist)
        log.info("job %s: %s%s", name, status, f" ({error[:200]})" if error else "")

    # ------------------------------------------------------------------ resolution
    def _asset(self, kind: str, arm_id: str) -> tuple[str, str, dict]:
        m = re.search(rf"/{kind}s/([^/]+)/versions/([^/]+)$", arm_id or "")
        if not m:
            raise JobError(f"expected a {kind} version ARM id (…/{kind}s/<name>/versions/<v>); got {arm_id!r}")
        rec = self.store.get_asset(kind, m.group(1), m.group(2))
        if rec is None:
            raise JobError(f"{kind} {m.group(1)}:{m.group(2)} is not registered in workspace {config.WORKSPACE}")
        return m.group(1), m.group(2), rec["body"].get("properties") or {}

    def _datastore(self, name: str) -> dict:
        rec = self.store.get_asset("datastore", name)
        if rec is None:
            raise JobError(f"datastore {name!r} is not registered in workspace {config.WORKSPACE}")
        props = rec["body"]["properties"]
        key = ((props.get("credentials") or {}).get("secrets") or {}).get("key")
        if not key:
            raise JobError(f"datastore {name!r} has no account key: the job runtime reads it with shared key")
        endpoint = props.get("endpoint") or "core.windows.net"
        return {"account": props["accountName"], "key": key, "container": props["containerName"],
                "endpoint": f"{props.get('protocol') or 'https'}://{props['accountName']}.blob.{endpoint}"}

    def _storage_location(self, uri: str) -> tuple[str, str]:
        """(datastore, path) for an azureml:// input URI."""
        m = DATASTORE_URI.match(uri)
        if m:
            return m.group("ds"), m.group("path")
        m = JOB_OUTPUT_URI.match(uri)
        if m:
            return config.DEFAULT_DATASTORE, f"azureml/{m.group('job')}/{m.group('out')}{m.group('rest') or '/'}"
        raise JobError(f"input URI {uri!r}: this stack reads inputs from azureml://datastores/<name>/paths/<path> "
                       "or azureml://jobs/<job>/outputs/<name>")

    def plan(self, name: str) -> dict:
        """Everything the job needs, resolved from the store before anything touches the VM."""
        job = self.store.get_job(name)
        spec = job["spec"]
        compute_name = (spec.get("computeId") or "").rstrip("/").rsplit("/", 1)[-1]
        if not compute_name:
            raise JobError(f"job {name!r} names no compute (computeId is empty)")
        compute = self.store.get_asset("compute", compute_name)
        if compute is None:
            raise JobError(f"compute {compute_name!r} is not attached to workspace {config.WORKSPACE}")
        cprops = compute["body"].get("properties") or {}
        if cprops.get("computeType") == "Kubernetes":
            raise JobError(f"compute {compute_name!r} is a Kubernetes compute, and this stack has no Kubernetes "
                           "cluster: jobs run only on the virtualmachine compute "
                           f"({config.COMPUTE!r})")
        inner = cprops.get("properties") or {}
        account = inner.get("administratorAccount") or {}
        vm_name = (cprops.get("resourceId") or "").rstrip("/").rsplit("/", 1)[-1]
        host = inner.get("address") or (f"{vm_name.lower()}.{self.vm_dns_suffix}" if vm_name else "")
        if not host:
            raise JobError(f"compute {compute_name!r} has neither an address nor a VM resource id")
        ssh = {"host": host, "port": int(inner.get("sshPort") or 22), "user": account.get("username"),
               "key": account.get("privateKeyData"), "password": account.get("password")}

        env_name, env_version, env_props = self._asset("environment", spec.get("environmentId") or "")
        image = env_props.get("image")
        if not image:
            raise JobError(f"environment {env_name}:{env_version} has no image; this stack runs docker images "
                           "that exist on the VM's docker")

        code = None
        if spec.get("codeId"):
            code_name, code_version, code_props = self._asset("code", spec["codeId"])
            uri = code_props.get("codeUri") or ""
            parts = urlsplit(uri)
            segments = parts.path.lstrip("/").split("/", 1)
            code = {"container": segments[0], "prefix": segments[1] if len(segments) > 1 else "",
                    "name": f"{code_name}:{code_version}"}

        inputs_rt: dict[str, dict] = {}
        values: dict[str, str] = {}
        env: dict[str, str] = {}
        for in_name, inp in (spec.get("inputs") or {}).items():
            kind = inp.get("jobInputType")
            if kind == "literal":
                values[f"inputs.{in_name}"] = str(inp.get("value"))
                continue
            if kind not in {"uri_folder", "uri_file", "custom_model", "mlflow_model"}:
                raise JobError(f"input {in_name!r}: this stack supports uri_folder, uri_file, models and literals; "
                               f"got {kind!r}")
            ds_name, path = self._storage_location(inp.get("uri") or "")
            ds = self._datastore(ds_name)
            dest = f"/azureml-job/inputs/{in_name}"
            ftype = "uri_file" if kind == "uri_file" else "uri_folder"
            inputs_rt[in_name] = {**ds, "path": path, "dest": dest, "type": ftype}
            local = posixpath.join(dest, posixpath.basename(path.rstrip("/"))) if ftype == "uri_file" else dest
            values[f"inputs.{in_name}"] = local
            env[f"AZURE_ML_INPUT_{in_name}"] = local

        workspace_store = self._datastore(config.DEFAULT_DATASTORE)
        outputs_rt: dict[str, dict] = {}
        for out_name, out in (spec.get("outputs") or {}).items():
            if not out:
                continue
            kind = out.get("jobOutputType")
            if kind not in {"uri_folder", "uri_file", "custom_model", "mlflow_model"}:
                raise JobError(f"output {out_name!r}: this stack supports uri_folder, uri_file and model outputs; "
                               f"got {kind!r}")
            if out.get("uri"):
                ds_name, path = self._storage_location(out["uri"])
                target = {**self._datastore(ds_name), "path": path}
            else:
                target = {**workspace_store, "path": f"azureml/{name}/{out_name}/"}
            outputs_rt[out_name] = target
            values[f"outputs.{out_name}"] = f"/azureml-job/outputs/{out_name}"
            env[f"AZURE_ML_OUTPUT_{out_name}"] = f"/azureml-job/outputs/{out_name}"

        command = spec.get("command") or ""
        missing = sorted({f"{m.group(1)}.{m.group(2)}" for m in REF.finditer(command)} - set(values))
        if missing:
            raise JobError(f"the command references {', '.join('${{' + m + '}}' for m in missing)}, which the job "
                           "does not declare")
        command = REF.sub(lambda m: values[f"{m.group(1)}.{m.group(2)}"], command)
        hold_s = int((job.get("runtime") or {}).get("hold_s") or 0)
        if hold_s > 0:
            # The "slow_job" fault: the job's container first works for hold_s seconds, a log line a second.
            command = (f"for i in $(seq 1 {hold_s}); do echo \"edge-fault: slow job, second $i of {hold_s}\"; "
                       f"sleep 1; done; {command}")
        epilogue = (job.get("runtime") or {}).get("epilogue")
        if epilogue:
            # The "job_epilogue" fault: after the job's own command succeeds, a command that edits its outputs.
            command = f"{command} && ( {epilogue} )"

        artifacts = self._datastore(config.ARTIFACT_DATASTORE)
        env.update({
            "AZUREML_RUN_ID": name, "AZUREML_ARM_SUBSCRIPTION": config.SUBSCRIPTION,
            "AZUREML_ARM_RESOURCEGROUP": config.RESOURCE_GROUP, "AZUREML_ARM_WORKSPACE_NAME": config.WORKSPACE,
            "AZUREML_EXPERIMENT_NAME": spec.get("experimentName") or "Default",
            "AZUREML_COMPUTE_NAME": compute_name, "PYTHONUNBUFFERED": "1", "HOME": "/tmp",
        })
        env.update({k: str(v) for k, v in (spec.get("environmentVariables") or {}).items()})
        return {
            "compute": compute_name,
            "timeout": parse_duration((spec.get("limits") or {}).get("timeout")),
            "ssh": ssh, "image": image, "code": code, "command": command, "env": env,
            "inputs": inputs_rt, "outputs": outputs_rt,
            "logs": {"container": artifacts["container"], "path": f"ExperimentRun/dcid.{name}/user_logs/std_log.txt"},
        }

    # ------------------------------------------------------------------ SSH
    def connect(self, ssh: dict) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        if not self.known_hosts or not Path(self.known_hosts).exists():
            raise JobError(f"no known_hosts file to pin the VM's host key (EDGE_VM_KNOWN_HOSTS={self.known_hosts!r})")
        client.load_host_keys(self.known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        kwargs: dict[str, Any] = {"hostname": ssh["host"], "port": ssh["port"], "username": ssh["user"],
                                  "timeout": 10, "banner_timeout": 10, "auth_timeout": 10,
                                  "allow_agent": False, "look_for_keys": False}
        if ssh.get("key"):
            kwargs["pkey"] = load_private_key(ssh["key"])
        else:
            kwargs["password"] = ssh.get("password")
        try:
            client.connect(**kwargs)
        except paramiko.SSHException as exc:
            raise JobError(f"SSH to {ssh['user']}@{ssh['host']}:{ssh['port']} failed: {exc}") from exc
        except OSError as exc:
            raise JobError(f"SSH to {ssh['host']}:{ssh['port']} failed: {exc}") from exc
        return client

    @staticmethod
    def run(client: paramiko.SSHClient, command: str, *, check: bool = True, timeout: float = 60) -> str:
        _stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
        out = stdout.read().decode("utf-8", "replace")
        err = stderr.read().decode("utf-8", "replace")
        rc = stdout.channel.recv_exit_status()
        if check and rc != 0:
            raise JobError(f"on the VM, `{command[:120]}` exited with {rc}: {(err or out).strip()[:500]}")
        return out

    # ------------------------------------------------------------------ the job thread
    def _run(self, name: str, reattach: bool) -> None:
        try:
            self._run_inner(name, reattach)
        except JobError as exc:
            self._finish(name, "Failed", error=str(exc))
        except Exception as exc:  # noqa: BLE001 - never leave a job without a terminal state
            log.exception("job %s crashed", name)
            self._finish(name, "Failed", error=f"the AML double failed running the job: {exc!r}")

    def _run_inner(self, name: str, reattach: bool) -> None:
        cancel = self._cancel[name]
        job = self.store.get_job(name)
        if job is None or job["status"] in TERMINAL:
            return
        plan = self.plan(name)
        slots = self._slots(plan["compute"])
        # A job waits in Queued for a free slot on its compute (re-attached jobs already hold theirs).
        while not slots.acquire(timeout=0.2):
            if cancel.is_set():
                self._finish(name, "Canceled", error=None)
                return
        try:
            if cancel.is_set():
                self._finish(name, "Canceled", error=None)
                return
            if not reattach:
                self._set(name, "Preparing", start=None)
            client = self.connect(plan["ssh"])
            try:
                if reattach:
                    workdir, container = job["runtime"]["workdir"], job["runtime"]["container"]
                else:
                    workdir, container = self._stage_and_start(client, name, plan, cancel)
                    if container is None:
                        return
                self._monitor(client, name, workdir, container, cancel, reattach=reattach,
                              timeout=plan["timeout"])
            except Exception:
                # The work dir holds the job's storage keys until the runtime reads them: never leave it behind.
                self._cleanup(client, name)
                raise
            finally:
                client.close()
        finally:
            slots.release()

    def _cleanup(self, client: paramiko.SSHClient, name: str) -> None:
        q = shlex.quote
        try:
            self.run(client, f"docker rm -f {q(f'azureml-{name}'[:120])} >/dev/null 2>&1; "
                             f"rm -rf \"$HOME/azureml-jobs/\"{q(name)}", check=False, timeout=30)
        except Exception as exc:  # noqa: BLE001 - best effort; the job's own error is what matters
            log.warning("job %s: cleanup on the VM failed: %s", name, exc)

    def _slots(self, compute: str) -> threading.BoundedSemaphore:
        with self._lock:
            if compute not in self._compute_slots:
                self._compute_slots[compute] = threading.BoundedSemaphore(self.max_jobs_per_compute)
            return self._compute_slots[compute]

    def _stage_and_start(self, client: paramiko.SSHClient, name: str, plan: dict,
                         cancel: threading.Event) -> tuple[str, str | None]:
        home = self.run(client, "echo $HOME").strip()
        uid_gid = self.run(client, "echo $(id -u):$(id -g)").strip()
        workdir = f"{home}/azureml-jobs/{name}"
        container = f"azureml-{name}"[:120]
        q = shlex.quote
        self.run(client, f"docker rm -f {q(container)} >/dev/null 2>&1; rm -rf {q(workdir)}; "
                         f"mkdir -p {q(workdir)}/.azureml {q(workdir)}/code {q(workdir)}/user_logs "
                         f"{q(workdir)}/outputs {q(workdir)}/inputs && chmod 700 {q(workdir)}/.azureml")
        sftp = client.open_sftp()
        try:
            if plan["code"]:
                self._stage_code(sftp, plan["code"], f"{workdir}/code")
            sftp.putfo(io.BytesIO(RUNJOB.read_bytes()), f"{workdir}/.azureml/runjob.py")
            if self.ca_file:
                sftp.putfo(io.BytesIO(Path(self.ca_file).read_bytes()), f"{workdir}/.azureml/ca.crt")
            payload = json.dumps({"command": plan["command"], "env": plan["env"], "inputs": plan["inputs"],
                                  "outputs": plan["outputs"]}).encode()
            with sftp.open(f"{workdir}/.azureml/job.json", "wb") as fh:
                fh.chmod(0o600)
                fh.write(payload)
        finally:
            sftp.close()
        image = plan["image"]
        if self.run(client, f"docker image inspect {q(image)} >/dev/null 2>&1 && echo yes || echo no",
                    check=False).strip() != "yes":
            raise JobError(f"environment image {image!r} does not exist on the VM's docker "
                           f"({plan['ssh']['host']}); build or load it there first")
        if cancel.is_set():
            self.run(client, f"rm -rf {q(workdir)}", check=False)
            self._finish(name, "Canceled", error=None)
            return workdir, None
        # Recorded before `docker run`, so a restart in between finds the container (or its absence).
        self.store.update_job(name, workdir=workdir, container=container)
        self.run(client, " ".join([
            "docker run -d", f"--name {q(container)}", f"--label azureml.job={q(name)}", "--network host",
            f"--user {uid_gid}", f"-v {q(workdir)}:/azureml-job", "-w /azureml-job/code",
            q(image), "python3 -u /azureml-job/.azureml/runjob.py",
        ]))
        return workdir, container

    def _stage_code(self, sftp: paramiko.SFTPClient, code: dict, dest: str) -> None:
        storage = self.storage
        if storage is None:
            raise JobError(f"code {code['name']}: the double has no workspace storage to read the snapshot from")
        prefix = code["prefix"].rstrip("/")
        blobs = storage.list_blobs(code["container"], prefix + "/" if prefix else "")
        if not blobs:
            raise JobError(f"code {code['name']}: no snapshot blobs under {code['container']}/{prefix}")
        made: set[str] = set()
        for blob_name, _size in blobs:
            rel = blob_name[len(prefix) + 1:] if prefix else blob_name
            if not rel or rel.endswith("/"):
                continue
            target = posixpath.join(dest, rel)
            parent = posixpath.dirname(target)
            if parent not in made:
                self._sftp_makedirs(sftp, parent)
                made.add(parent)
            sftp.putfo(io.BytesIO(storage.read_blob(code["container"], blob_name)), target)

    @staticmethod
    def _sftp_makedirs(sftp: paramiko.SFTPClient, path: str) -> None:
        parts = path.strip("/").split("/")
        current = ""
        for part in parts:
            current += "/" + part
            try:
                sftp.stat(current)
            except FileNotFoundError:
                sftp.mkdir(current)

    def _monitor(self, client: paramiko.SSHClient, name: str, workdir: str, container: str,
                 cancel: threading.Event, *, reattach: bool, timeout: float | None = None) -> None:
        q = shlex.quote
        sftp = client.open_sftp()
        local_log = self.log_path(name)
        local_log.parent.mkdir(parents=True, exist_ok=True)
        offset = local_log.stat().st_size if (reattach and local_log.exists()) else 0
        if not reattach:
            local_log.write_bytes(b"")
        phase_status = {"Preparing": "Preparing", "Running": "Running", "Finalizing": "Finalizing"}
        last_container_check = time.monotonic()
        status: dict = {}
        canceled_at: float | None = None
        timed_out: float | None = None
        published: float | None = None
        published_size = -1
        try:
            while True:
                try:
                    with sftp.open(f"{workdir}/.azureml/status.json", "r") as fh:
                        status = json.loads(fh.read() or b"{}")
                except (FileNotFoundError, ValueError):
                    pass
                new_offset = self._copy_log(sftp, f"{workdir}/user_logs/std_log.txt", local_log, offset)
                if new_offset != offset or published is None:
                    offset = new_offset
                    if published is None or time.monotonic() - published > 1.0:
                        self._publish_log(name, local_log)
                        published = time.monotonic()
                        published_size = offset
                phase = status.get("phase")
                if phase == "Done":
                    break
                if phase in phase_status:
                    extra = {}
                    if phase == "Running":
                        extra = {"start": status.get("start"), "command_start": status.get("start")}
                    elif phase == "Finalizing":
                        extra = {"command_end": status.get("end")}
                    self._set(name, phase_status[phase], **extra)
                started = status.get("start")
                if timeout and started and timed_out is None and time.time() - started > timeout:
                    timed_out = time.monotonic()
                    log.info("job %s: over its limits.timeout of %ss; stopping it", name, timeout)
                    self.run(client, f"docker stop -t 5 {q(container)} >/dev/null 2>&1", check=False, timeout=30)
                    continue
                if cancel.is_set() and canceled_at is None:
                    canceled_at = time.monotonic()
                    self.run(client, f"docker stop -t 5 {q(container)} >/dev/null 2>&1", check=False, timeout=30)
                    continue
                if canceled_at is not None or timed_out is not None or time.monotonic() - last_container_check > 2.0:
                    last_container_check = time.monotonic()
                    state = self.run(client, f"docker inspect -f '{{{{.State.Status}}}} {{{{.State.ExitCode}}}}' "
                                             f"{q(container)} 2>/dev/null || echo gone", check=False).strip()
                    if not state.startswith("running") and not state.startswith("created"):
                        # Re-read the status file once: the container may have just written Done.
                        try:
                            with sftp.open(f"{workdir}/.azureml/status.json", "r") as fh:
                                status = json.loads(fh.read() or b"{}")
                        except (FileNotFoundError, ValueError):
                            pass
                        if status.get("phase") != "Done":
                            status = {"phase": "Done", "exit_code": None, "canceled": canceled_at is not None,
                                      "error": None if canceled_at is not None else
                                      f"the job's container {container} stopped ({state}) without finishing "
                                      "its run"}
                        break
                time.sleep(self.poll_interval)
            offset = self._copy_log(sftp, f"{workdir}/user_logs/std_log.txt", local_log, offset)
        finally:
            sftp.close()
        if offset != published_size:
            self._publish_log(name, local_log)
        self.run(client, f"docker rm -f {q(container)} >/dev/null 2>&1; rm -rf {q(workdir)}", check=False)
        if status.get("start"):
            self.store.update_job(name, command_start=status.get("start"), command_end=status.get("end"))
        if timed_out is not None and not cancel.is_set():
            self._finish(name, "Failed", exit_code=status.get("exit_code"),
                         error=f"The job exceeded its limits.timeout of {timeout:g} s and was stopped.")
        elif status.get("canceled") or cancel.is_set():
            self._finish(name, "Canceled", error=None, exit_code=status.get("exit_code"))
        elif status.get("exit_code") == 0 and not status.get("error"):
            self._finish(name, "Completed", error=None, exit_code=0)
        else:
            self._finish(name, "Failed", error=status.get("error") or "the job failed",
                         exit_code=status.get("exit_code"))

    def _publish_log(self, name: str, local_log: Path) -> None:
        """Write the log so far to the artifact store, where jobs.stream and jobs.download read it."""
        if self.storage is None:
            return
        try:
            self.storage.write_blob(config.ARTIFACT_CONTAINER,
                                    f"ExperimentRun/dcid.{name}/user_logs/std_log.txt", local_log.read_bytes())
        except Exception as exc:  # noqa: BLE001 - the job goes on; the next publish retries
            log.warning("job %s: publishing std_log.txt failed: %s", name, exc)

    @staticmethod
    def _copy_log(sftp: paramiko.SFTPClient, remote: str, local: Path, offset: int) -> int:
        try:
            with sftp.open(remote, "r") as fh:
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:
            return offset
        if data:
            with open(local, "ab") as out:
                out.write(data)
            offset += len(data)
        return offset
