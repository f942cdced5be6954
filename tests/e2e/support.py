"""Helpers for the tests that drive the DAG through a real Airflow on the edge stack (e2e, faults)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import threading
import time
import urllib.error
import urllib.request

from pathlib import Path

from devstack.airflow_local import ADMIN_USER, LocalAirflow
from devstack.demo import partition_key

DAG_ID = "edge_training"
MODEL_NAME = "equipment-failure"
REPO = Path(__file__).resolve().parents[2]


def log_in(browser, airflow: LocalAirflow, user: str = ADMIN_USER):
    """A new browser page logged into the Airflow UI as ``user`` (through the login form)."""
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(f"{airflow.base_url}/", wait_until="networkidle")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", airflow.password(user))
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: "/auth/login" not in url, timeout=30_000)
    return page


def screenshot(page, name: str) -> None:
    """Into .devstack/screenshots, and into docs/ with EDGE_UPDATE_SCREENSHOTS=1 (how docs/*.png are made)."""
    out = REPO / ".devstack" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out / name))
    if os.environ.get("EDGE_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(out / name, REPO / "docs" / name)


def run_to_completion(airflow: LocalAirflow, date: str, *, conf: dict | None = None,
                      timeout: float = 1200) -> tuple[str, dict, dict]:
    run_id = f"e2e__{date}__{int(time.time() * 1000)}"
    airflow.trigger(DAG_ID, partition_key=partition_key(date), run_id=run_id, conf=conf)
    run = airflow.wait_run(DAG_ID, run_id, timeout=timeout)
    return run_id, run, airflow.task_instances(DAG_ID, run_id)


def openlineage_task_events(airflow: LocalAirflow, run_id: str, *, until_complete: set[str] = frozenset(),
                            timeout: float = 120) -> list[dict]:
    """The OpenLineage events of a DAG run's tasks, as the provider's file transport wrote them
    (tests/conftest.py), once every task in ``until_complete`` has its COMPLETE event."""
    from devstack.lineage_files import run_events
    from tests.conftest import OPENLINEAGE_DIR

    return run_events(airflow.home / OPENLINEAGE_DIR, run_id, until_complete=until_complete, timeout=timeout)


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

    def labels(self, repository: str, reference: str) -> dict[str, str]:
        """The image's labels, from its config blob (what `docker inspect` shows after a pull)."""
        with self._open(f"/v2/{repository}/manifests/{reference}") as resp:
            config = json.loads(resp.read())["config"]["digest"]
        with self._open(f"/v2/{repository}/blobs/{config}") as resp:
            return json.loads(resp.read()).get("config", {}).get("Labels") or {}


def clear_production_marks(model_name: str = MODEL_NAME) -> list[str]:
    """Take the production mark (``stage``, ``serving_url``) off every version of the model in the AML double:
    the tests' gates compare against "no production model" (a `make demo` before `make test` deploys one)."""
    from edge_training.hooks.azureml import AzureMLHook

    cleared = []
    with AzureMLHook(azureml_conn_id="azureml_default") as aml:
        for model in aml.list_model_versions(model_name):
            if (model.tags or {}).get("stage") == "production":
                aml.update_model_tags(model_name, str(model.version), {}, remove=["stage", "serving_url"])
                cleared.append(str(model.version))
    return cleared


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


def backfill_runs(airflow, keys: set[str]) -> dict[str, dict]:
    runs = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns?limit=100&order_by=-run_after")["dag_runs"]
    found: dict[str, dict] = {}
    for run in runs:
        if run.get("partition_key") in keys and run["run_type"] == "backfill":
            found.setdefault(run["partition_key"], run)
    return found


def wait_backfill(airflow, keys: set[str], timeout: float = 1500) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = backfill_runs(airflow, keys)
        if set(runs) == keys and all(r["state"] in ("success", "failed") for r in runs.values()):
            return runs
        time.sleep(5)
    raise AssertionError(f"backfill runs for {sorted(keys)} not finished: {backfill_runs(airflow, keys)}")


def wait_backfills_closed(airflow, timeout: float = 300) -> None:
    """The scheduler marks a backfill completed a little after its last run ends; only then may the
    next backfill for the DAG start (one running backfill per DAG)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        backfills = airflow.api("GET", f"/backfills?dag_id={DAG_ID}")["backfills"]
        if all(b.get("completed_at") for b in backfills):
            return
        time.sleep(3)
    raise AssertionError(f"backfills of {DAG_ID} not completed: {backfills}")


class VMLoadSampler(threading.Thread):
    """Samples, every half second, the AML double's jobs in flight and the job containers on the VM."""

    def __init__(self, admin, docker_host: str) -> None:
        import docker

        super().__init__(daemon=True)
        self.admin = admin
        self.docker = docker.DockerClient(base_url=docker_host, version="auto")
        self.samples: list[tuple[float, int, int]] = []
        self.errors: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                jobs = self.admin.jobs_in_flight()
                containers = len(self.docker.containers.list(filters={"label": "azureml.job"}))
                self.samples.append((time.time(), jobs, containers))
            except Exception as exc:  # noqa: BLE001 - a missed sample is reported, not fatal
                self.errors.append(repr(exc))
            self._stop_event.wait(0.5)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)
        self.docker.close()
