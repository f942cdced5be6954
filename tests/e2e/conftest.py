"""e2e fixtures: a real Airflow (scheduler, dag-processor, triggerer, API server) on the edge stack."""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.error
import urllib.request

import pytest

from devstack.airflow_local import LocalAirflow
from devstack.demo import partition_key

DAG_ID = "edge_training"
MODEL_NAME = "equipment-failure"


@pytest.fixture(scope="session")
def airflow(stack_env) -> LocalAirflow:
    """LocalExecutor + SQLite, on its own home and port so a running `make demo` is left alone."""
    instance = LocalAirflow(name="airflow-e2e", port=47181)
    instance.reset()  # runs from an earlier session would change what a backfill creates
    instance.start()
    try:
        instance.wait_dag_parsed(DAG_ID)
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def ml_client(stack_env):
    """The real azure-ai-ml client on the stack's AML double (through the project's hook).

    Per test: an open hook holds the SDK's process-wide cloud setting, which later tests expect
    to find restored once every hook is closed.
    """
    from edge_training.hooks.azureml import AzureMLHook

    hook = AzureMLHook(azureml_conn_id="azureml_default")
    try:
        yield hook.get_conn()
    finally:
        hook.close()


def run_to_completion(airflow: LocalAirflow, date: str, *, conf: dict | None = None,
                      timeout: float = 1200) -> tuple[str, dict, dict]:
    run_id = f"e2e__{date}__{int(time.time() * 1000)}"
    airflow.trigger(DAG_ID, partition_key=partition_key(date), run_id=run_id, conf=conf)
    run = airflow.wait_run(DAG_ID, run_id, timeout=timeout)
    return run_id, run, airflow.task_instances(DAG_ID, run_id)


class Registry:
    """Reads the registry's own API (Docker Registry HTTP API v2) with the stack's CA and creds."""

    ACCEPT = ", ".join([
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    ])

    def __init__(self, env: dict[str, str]):
        self.base = f"https://{env['EDGE_REGISTRY']}"
        self.ssl = ssl.create_default_context(cafile=env["EDGE_REGISTRY_CA_FILE"])
        creds = f"{env['EDGE_REGISTRY_USER']}:{env['EDGE_REGISTRY_PASSWORD']}".encode()
        self.auth = "Basic " + base64.b64encode(creds).decode()

    def _open(self, path: str, method: str = "GET"):
        req = urllib.request.Request(self.base + path, method=method,
                                     headers={"Authorization": self.auth, "Accept": self.ACCEPT})
        return urllib.request.urlopen(req, context=self.ssl, timeout=30)

    def tags(self, repository: str) -> list[str]:
        try:
            with self._open(f"/v2/{repository}/tags/list") as resp:
                return json.loads(resp.read()).get("tags") or []
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return []
            raise

    def digest(self, repository: str, reference: str) -> str:
        with self._open(f"/v2/{repository}/manifests/{reference}", method="HEAD") as resp:
            return resp.headers["Docker-Content-Digest"]


@pytest.fixture(scope="session")
def registry(stack_env) -> Registry:
    return Registry(stack_env)


def stackhub_container(env: dict[str, str]):
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(
        env["EDGE_STACKHUB_CONNECTION_STRING"], api_version="2019-07-07",
        connection_verify=env["EDGE_CA_FILE"],
    )
    return service.get_container_client(env.get("EDGE_STACKHUB_CONTAINER", "training"))


def jobs_for_partition(ml_client, date: str) -> list:
    """Every AML job in the workspace tagged with this partition date."""
    return [job for job in ml_client.jobs.list() if (job.tags or {}).get("partition") == date]


def model_versions_for_partition(ml_client, date: str) -> list:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        versions = list(ml_client.models.list(name=MODEL_NAME))
    except ResourceNotFoundError:
        return []
    return [m for m in versions if (m.tags or {}).get("partition") == date]
