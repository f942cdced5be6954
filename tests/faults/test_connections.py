"""Bad connections, set through the REST API as a person would in the UI (the tests' Airflow keeps its
connections in the metadata DB), then restored. One at a time: every run reads the same connections.
Each gets a clear error naming what was expected and what was found, and no AML job where none should be.

The partition is trained once first, so the cases for the image connections (docker_edge, acr_default)
reach build_image within seconds: the rerun re-attaches to the finished job and its model version.
"""

from __future__ import annotations

import copy
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.faults.battery import (
    BATTERY,
    TRAINED_DATE,
    end_run,
    jobs_of,
    task_log,
    trigger,
    wait_task,
)

KIND = "bad_input"
DATE = TRAINED_DATE  # trained once (beside the bad-input cases); no case trains again
NO_DOCKER = "unix:///run/edge-training-no-docker.sock"


def generated_key(kind: str) -> tuple[str, str]:
    """A new key pair of ``kind`` (ed25519 or rsa): (private key path, public key line)."""
    folder = Path(tempfile.mkdtemp(prefix="faults-key-"))
    path = folder / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)
    return str(path), " ".join(path.with_suffix(".pub").read_text().split()[:2])


def set_extra(**values):
    def change(conn):
        conn["extra"].update(values)
    return change


def set_field(**values):
    def change(conn):
        conn.update(values)
    return change


def storage_endpoint(endpoint: str):
    def change(conn):
        parts = [p for p in conn["extra"]["connection_string"].split(";") if not p.startswith("EndpointSuffix=")]
        conn["extra"]["connection_string"] = ";".join(parts + [f"BlobEndpoint={endpoint}"])
    return change


def wrong_storage_key(conn):
    parts = [p if not p.startswith("AccountKey=") else "AccountKey=" + "QUJD" * 22 for p in
             conn["extra"]["connection_string"].split(";")]
    conn["extra"]["connection_string"] = ";".join(parts)


# name -> (conn id, change or None to delete, task that must fail, texts its log must hold)
CASES = {
    "edge_vm_ssh: a different host key": (
        "edge_vm_ssh", lambda: set_extra(host_key=generated_key("ed25519")[1]), "check_edge_vm",
        ["host key", "SHA256:"]),
    "edge_vm_ssh: a host key of another type": (
        "edge_vm_ssh", lambda: set_extra(host_key=generated_key("rsa")[1]), "check_edge_vm", ["host key", "ssh-rsa"]),
    "edge_vm_ssh: a key the VM does not accept": (
        "edge_vm_ssh", lambda: set_extra(key_file=generated_key("ed25519")[0]), "check_edge_vm", ["auth"]),
    "stackhub_blob: a public Azure endpoint": (
        "stackhub_blob", lambda: storage_endpoint("https://edgedata.blob.core.windows.net"), "check_edge_vm",
        ["public Azure cloud endpoint"]),
    "stackhub_blob: a look-alike endpoint": (
        "stackhub_blob", lambda: storage_endpoint("https://edgedata.blob.local.azurestack.external.example.net"),
        "check_edge_vm", ["outside the Stack Hub domain"]),
    "stackhub_blob: an endpoint carrying user info": (
        "stackhub_blob",
        lambda: storage_endpoint("https://user@a.blob.core.windows.net@edgedata.blob.local.azurestack.external:47101"),
        "check_edge_vm", ["carries user info"]),
    "stackhub_blob: a wrong account key": (
        "stackhub_blob", lambda: wrong_storage_key, "validate_partition", ["edgedata"]),
    "azureml_default: a wrong client secret": (
        "azureml_default", lambda: set_extra(client_secret="not-the-secret"), "submit_training",
        ["secret is wrong"]),
    "azureml_default: missing": ("azureml_default", None, "submit_training", ["azureml_default"]),
    "edge_vm_ssh: missing": ("edge_vm_ssh", None, "check_edge_vm", ["edge_vm_ssh"]),
    "stackhub_blob: missing": ("stackhub_blob", None, "check_edge_vm", ["stackhub_blob"]),
    "acr_default: a wrong password": (
        "acr_default", lambda: set_field(password="not-the-password"), "build_image",
        ["registry connection 'acr_default'", "refused the credentials", "HTTP 401"]),
    "acr_default: missing": ("acr_default", None, "build_image", ["acr_default"]),
    "docker_edge: a host where no Docker answers": (
        "docker_edge", lambda: set_field(host=NO_DOCKER), "build_image",
        ["connection 'docker_edge'", NO_DOCKER, "not reachable"]),
    "docker_edge: missing": ("docker_edge", None, "build_image", ["docker_edge"]),
}
CONN_IDS = sorted({conn_id for conn_id, *_ in CASES.values()})
#: Refused credentials, trust and locality errors fail on the first try (the retry policy, and the package's
#: AirflowFailException errors): a retry would meet the same. A missing connection or a Docker host that does
#: not answer is retried (a secrets backend or a daemon may come back).
FAIL_AT_ONCE = {name for name in CASES if not name.endswith(": missing") and "no Docker answers" not in name}


@pytest.fixture(scope="module", autouse=True)
def restored_connections(airflow, trained_partition):
    """Every case starts from DATE trained with good connections; all are restored after the cases."""
    trained_partition.wait(airflow)
    yield
    for conn_id in CONN_IDS:
        airflow.restore_connection(conn_id)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_connection_fails_clearly_without_a_job(alone, airflow, battery, ml_client, name):
    conn_id, make_change, task_id, must_say = CASES[name]
    jobs_before = {j.name for j in jobs_of(ml_client, DATE)}
    conn = None
    if make_change:
        conn = copy.deepcopy(airflow.stack_connections()[conn_id])
        make_change()(conn)
    airflow.put_connection(conn_id, conn)
    try:
        run_id = trigger(airflow, DATE)
        ti = wait_task(airflow, run_id, task_id, {"failed", "up_for_retry"}, timeout=300)
        log = task_log(airflow, run_id, task_id)
    finally:
        airflow.restore_connection(conn_id)
        end_run(airflow, run_id)
    new_jobs = {j.name for j in jobs_of(ml_client, DATE)} - jobs_before
    said = [t for t in must_say if t.lower() in log.lower()]
    errors = [line.strip() for line in log.splitlines() if "Error:" in line or "Error(" in line]
    at_once = name in FAIL_AT_ONCE
    passed = len(said) == len(must_say) and not new_jobs and (not at_once or ti["state"] == "failed")
    expected = f"{task_id} fails{' at once' if at_once else ''} naming {', '.join(must_say)}; no AML job"
    BATTERY.record(name, KIND, expected,
                   f"{task_id} {ti['state']} (try {ti['try_number']}); new jobs {len(new_jobs)}; "
                   f"error: {(errors[-1] if errors else 'none')[:170]}", passed)
    assert passed, (ti["state"], must_say, said, new_jobs, log[-3000:])
