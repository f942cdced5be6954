"""docker-compose.yaml: valid for Compose, every Airflow service sees the code and the connections."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from devstack.airflow_local import SCHEDULER_SETTINGS
from devstack.compose_init import CONNECTION_IDS, init

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = {
    "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-worker",
    "airflow-triggerer", "airflow-init",
}
EDGE_SERVICES = {"stack-init", "azurite", "edge-vm", "registry", "aml-double"}


def _compose_command() -> list[str]:
    """`docker compose` when the plugin exists, else Debian's docker-compose (installed by stack-up)."""
    if shutil.which("docker") and subprocess.run(
        ["docker", "compose", "version"], capture_output=True
    ).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor `docker-compose` is installed; `make stack-up` installs it")


@pytest.fixture(scope="module")
def compose_config() -> dict:
    proc = subprocess.run(
        [*_compose_command(), "-f", str(REPO / "docker-compose.yaml"), "config"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert proc.returncode == 0, f"compose config rejected docker-compose.yaml: {proc.stderr}"
    return yaml.safe_load(proc.stdout)


def test_compose_has_the_airflow_3_shape_and_the_edge_stack(compose_config):
    services = set(compose_config["services"])
    assert AIRFLOW_SERVICES | EDGE_SERVICES | {"postgres", "redis"} <= services


@pytest.mark.parametrize("service", sorted(AIRFLOW_SERVICES))
def test_every_airflow_service_mounts_the_code_and_gets_the_connections(compose_config, service):
    spec = compose_config["services"][service]
    targets = {}
    for volume in spec["volumes"]:
        if isinstance(volume, dict):
            targets[volume["target"]] = volume["source"]
        else:
            source, target = volume.split(":")[:2]
            targets[target] = source
    for folder in ("dags", "plugins", "include"):
        target = f"/opt/airflow/{folder}"
        assert target in targets, f"{service} does not mount {folder}/ at {target}"
        assert Path(targets[target]).name == folder
    env = spec["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__SECRETS__BACKEND"] == "airflow.secrets.local_filesystem.LocalFilesystemBackend"
    backend = json.loads(env["AIRFLOW__SECRETS__BACKEND_KWARGS"])
    assert backend["connections_file_path"].startswith("/opt/devstack-secrets/")
    assert "/opt/devstack-secrets" in targets, f"{service} does not mount the stack's secrets volume"


def test_stack_init_writes_every_connection_the_dag_uses(tmp_path):
    connections = init(tmp_path)
    assert set(connections) == set(CONNECTION_IDS)
    written = json.loads((tmp_path / "connections.json").read_text())
    assert written == connections
    # A second run keeps the generated secrets (idempotent), so running containers keep working.
    again = init(tmp_path)
    assert again["acr_default"]["password"] == connections["acr_default"]["password"]
    assert again["edge_vm_ssh"]["extra"]["host_key"] == connections["edge_vm_ssh"]["extra"]["host_key"]
    dag_source = (REPO / "dags" / "edge_training.py").read_text()
    for conn_id in CONNECTION_IDS:
        assert f'"{conn_id}"' in dag_source, f"the DAG does not use connection {conn_id}"


def test_compose_creates_the_edge_vm_pool_counting_deferred_tasks(compose_config):
    """Read airflow-init's commands with Airflow's own CLI parser: the edge_vm pool must count deferred
    trainings (the scheduler-level effect is tested by test_backfill_with_a_missing_partition_then_reprocess_failed
    in tests/e2e/test_edge_training_dag.py)."""
    import shlex

    from airflow.cli.cli_parser import get_parser

    script = compose_config["services"]["airflow-init"]["command"][-1]
    pools = {}
    for line in script.splitlines():
        words = shlex.split(line)
        if words[:3] == ["airflow", "pools", "set"]:
            args = get_parser().parse_args(words[1:])
            pools[args.pool] = (int(args.slots), args.include_deferred)
    assert pools["edge_vm"] == (2, True), pools
    assert pools["edge_model_registry"][0] == 1, pools


def test_compose_schedules_as_the_local_stack(compose_config):
    """The scheduler settings bench/overhead.py measures on the local stack hold in the compose deployment."""
    env = compose_config["services"]["airflow-scheduler"]["environment"]
    assert {name: env.get(name) for name in SCHEDULER_SETTINGS} == SCHEDULER_SETTINGS
