"""Security: no secret the stack generated shows up anywhere a person or a registry can read; services
refuse unauthenticated calls; the stack's secrets are its own. Runs after the other battery cases, so the
scan covers every run they made.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from devstack.aml import config as aml_config
from devstack.base import StackError
from tests.e2e.support import DAG_ID, MODEL_NAME, stackhub_container
from tests.faults.battery import BATTERY, REPO, jobs_of, quoted

KIND = "security"
STATE = REPO / ".devstack"
# Azurite's and the storage emulator's published development key: a real account must never use it.
EMULATOR_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
OLD_FIXED_AML_SECRET = "edge-devstack-sp-secret"


def pem_body_lines(path: Path) -> list[str]:
    """The base64 lines of a PEM/OpenSSH private key: any one of them in the open is a leak."""
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("-----") and len(line.strip()) >= 32]


def generated_secrets() -> dict[str, list[str]]:
    """Every secret the stack generated, each with the forms it could appear in."""
    found: dict[str, list[str]] = {}
    for name, value in json.loads((STATE / "secrets.json").read_text()).items():
        found[name] = sorted({value, urllib.parse.quote(value, safe=""), json.dumps(value)[1:-1]})
    for name, path in {"ssh client private key": STATE / "ssh" / "edge_vm_key",
                       "ssh host private key": STATE / "ssh" / "ssh_host_ed25519_key",
                       "CA private key": STATE / "pki" / "ca.key",
                       "TLS server private key": STATE / "pki" / "server.key"}.items():
        if path.exists():
            found[name] = pem_body_lines(path)
    return found


def hits(text: str, secrets: dict[str, list[str]], where: str) -> list[str]:
    return [f"{name} in {where}" for name, forms in secrets.items() if any(f and f in text for f in forms)]


def task_log_files(airflow, run_id: str, task_id: str, attempt: int) -> list[Path]:
    folder = airflow.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
    return sorted(folder.glob(f"attempt={attempt}.log*"))


def airflow_surfaces(airflow) -> dict[str, str]:
    """Task logs (every try, through the API and every log file of the Airflow, triggerer's included), XCom
    values and rendered templates of every run of the DAG."""
    texts: dict[str, str] = {}
    runs = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns?limit=500")["dag_runs"]
    for run in runs:
        run_id = quoted(run["dag_run_id"])
        for ti in airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]:
            where = f"{run['dag_run_id']}/{ti['task_id']}"
            texts[f"rendered templates of {where}"] = json.dumps(ti.get("rendered_fields") or {})
            for attempt in range(1, (ti.get("try_number") or 0) + 1):
                try:
                    texts[f"task log of {where} try {attempt}"] = airflow.task_log(DAG_ID, run["dag_run_id"],
                                                                                   ti["task_id"], attempt)
                except StackError as err:
                    # Seen for an earlier try of a task whose process the worker-kill case SIGKILLed, and for
                    # try 1 of a deferred task: the API answers 404 "TaskInstance not found" while the try's
                    # log file exists; that file is read below, with the rest.
                    cause = err.__cause__
                    not_found = isinstance(cause, urllib.error.HTTPError) and cause.code == 404
                    if not not_found or not task_log_files(airflow, run["dag_run_id"], ti["task_id"], attempt):
                        raise
            entries = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{ti['task_id']}"
                                         "/xcomEntries")["xcom_entries"]
            for entry in entries:
                value = airflow.xcom(DAG_ID, run["dag_run_id"], ti["task_id"], entry["key"])
                texts[f"XCom {entry['key']} of {where}"] = json.dumps(value)
    for path in sorted((airflow.home / "logs").rglob("*.log")):
        texts[f"log file {path.relative_to(airflow.home)}"] = path.read_text(errors="replace")
    return texts


def double_surfaces() -> dict[str, str]:
    """The AML double's stored jobs: spec (what was submitted) and runtime."""
    with sqlite3.connect(STATE / "aml" / "aml.sqlite") as db:
        return {f"AML job {name}": f"{spec}\n{runtime}" for name, spec, runtime
                in db.execute("SELECT name, spec, runtime FROM jobs")}


def image_surfaces(stack_env) -> dict[str, str]:
    """Labels, environment and layer history of every model image on the VM's Docker."""
    import docker

    client = docker.DockerClient(base_url=stack_env["EDGE_DOCKER_HOST"], version="auto")
    try:
        texts = {}
        for image in client.images.list(name=f"{stack_env['EDGE_REGISTRY']}/{MODEL_NAME}"):
            config = image.attrs.get("Config") or {}
            history = [step.get("CreatedBy", "") for step in image.history()]
            texts[f"image {image.short_id} {image.tags[:1]}"] = json.dumps(
                {"labels": config.get("Labels"), "env": config.get("Env"), "history": history})
        return texts
    finally:
        client.close()


def test_no_generated_secret_appears_in_logs_xcoms_templates_job_specs_or_images(alone, airflow, battery, stack_env):
    secrets = generated_secrets()
    assert {"aml_client_secret", "registry_password", "ssh client private key"} <= set(secrets), sorted(secrets)
    surfaces = {**airflow_surfaces(airflow), **double_surfaces(), **image_surfaces(stack_env)}
    images = sum(1 for k in surfaces if k.startswith("image "))
    found = [h for where, text in surfaces.items() for h in hits(text, secrets, where)]
    BATTERY.leaked_secrets += len(found)
    passed = not found and images > 0 and len(surfaces) > 100
    battery.record("generated secrets in task logs, XComs, rendered templates, AML job specs, image config",
                   KIND, f"zero hits for all {len(secrets)} generated secrets",
                   f"{len(found)} hits in {len(surfaces)} places scanned ({images} images)"
                   + (f": {found[:3]}" if found else ""), passed)
    assert passed, (found[:10], len(surfaces), images)


def http_status(url: str, ca_file: str, form: dict | None = None) -> int:
    """The status of a GET (or a form POST) made with no credentials beyond ``form``."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if form is not None else "GET")
    try:
        with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=ca_file), timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_aml_service_principal_secret_is_generated_per_stack(battery, stack_env):
    secret = json.loads(stack_env["AIRFLOW_CONN_AZUREML_DEFAULT"])["extra"]["client_secret"]
    stored = json.loads((STATE / "secrets.json").read_text())["aml_client_secret"]
    token_url = f"{stack_env['EDGE_AML_ENDPOINT']}/{aml_config.TENANT}/oauth2/v2.0/token"
    form = {"grant_type": "client_credentials", "client_id": aml_config.CLIENT_ID,
            "scope": f"{stack_env['EDGE_AML_ENDPOINT']}/.default"}
    with_generated = http_status(token_url, stack_env["EDGE_CA_FILE"], {**form, "client_secret": secret})
    with_old = http_status(token_url, stack_env["EDGE_CA_FILE"], {**form, "client_secret": OLD_FIXED_AML_SECRET})
    passed = secret == stored and len(secret) >= 32 and with_generated == 200 and with_old == 401
    battery.record("the AML service principal's secret", KIND, "generated per stack; the old fixed one refused",
                   f"connection secret is the generated one: {secret == stored}; token with it {with_generated}, "
                   f"with the old fixed string {with_old}", passed)
    assert passed


def test_services_refuse_unauthenticated_calls_and_stack_hub_keys_are_not_the_emulators(battery, stack_env):
    registry = http_status(f"https://{stack_env['EDGE_REGISTRY']}/v2/_catalog", stack_env["EDGE_CA_FILE"])
    workspace = (f"{stack_env['EDGE_AML_ENDPOINT']}/subscriptions/{aml_config.SUBSCRIPTION}/resourceGroups/"
                 f"{aml_config.RESOURCE_GROUP}/providers/Microsoft.MachineLearningServices/workspaces/"
                 f"{aml_config.WORKSPACE}/jobs?api-version=2024-04-01")
    aml = http_status(workspace, stack_env["EDGE_CA_FILE"])
    container = stackhub_container(stack_env)
    anonymous = http_status(f"{container.url}?restype=container&comp=list", stack_env["EDGE_CA_FILE"])
    keys = [part.split("=", 1)[1] for conn in (stack_env["EDGE_STACKHUB_CONNECTION_STRING"],
                                                stack_env["EDGE_AMLSTORE_CONNECTION_STRING"])
            for part in conn.split(";") if part.startswith("AccountKey=")]
    emulator = [k for k in keys if k == EMULATOR_KEY or base64.b64decode(k) == base64.b64decode(EMULATOR_KEY)]
    passed = registry == 401 and aml == 401 and anonymous in (401, 403, 404) and len(keys) == 2 and not emulator
    battery.record("unauthenticated calls; storage keys", KIND,
                   "registry and AML double answer 401; Stack Hub refuses anonymous listing; no emulator key",
                   f"registry {registry}; AML double {aml}; anonymous Stack Hub listing {anonymous}; "
                   f"emulator key in use: {bool(emulator)}", passed)
    assert passed


def test_training_outputs_hold_no_data_rows(battery, stack_env):
    """The model, metrics, card and plot of a battery job contain no row or device of its partition."""
    from edge_training.hooks.azureml import AzureMLHook

    hook = AzureMLHook(azureml_conn_id="azureml_default")
    try:
        completed = [(d, j) for d in sorted(BATTERY.dates) for j in jobs_of(hook.get_conn(), d, BATTERY.started)
                     if str(getattr(j.status, "value", j.status)) == "Completed"]
        if not completed:
            pytest.fail("no battery job completed, so there are no outputs to check")
        date, job = completed[0]
        with tempfile.TemporaryDirectory() as tmp:
            folder = hook.download_job_output(job.name, "model", tmp)
            outputs = {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    finally:
        hook.close()
    container = stackhub_container(stack_env)
    rows: list[str] = []
    for blob in container.list_blobs(name_starts_with=f"telemetry/date={date}/"):
        if blob.name.endswith(".csv"):
            rows += container.download_blob(blob.name).readall().decode().splitlines()[1:]
    devices = {row.split(",", 1)[0] for row in rows if row}
    leaked_rows = [r for r in rows[:500] if r and any(r.encode() in data for data in outputs.values())]
    leaked_devices = sorted(d for d in devices if any(d.encode() in data for data in outputs.values()))
    passed = bool(outputs) and bool(rows) and not leaked_rows and not leaked_devices
    battery.record("training job outputs", KIND, "no data row and no device id of the partition in any output",
                   f"job {job.name}: {len(outputs)} output files ({', '.join(sorted(outputs))}); "
                   f"{len(leaked_rows)} rows, {len(leaked_devices)} device ids found", passed)
    assert passed, (sorted(outputs), leaked_rows[:3], leaked_devices[:3])
