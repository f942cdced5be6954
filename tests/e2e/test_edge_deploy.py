"""edge_deploy end to end: a training run's model asset event deploys its model on the edge VM's Docker.

Runs after the other e2e modules (tests/e2e/conftest.py orders it), on the versions they trained: a rerun
of their one partition emits the event, the versions of their backfill are the "next" models. Every effect
is read at its source: the stable address on the VM (HTTP), the VM's Docker (containers), the AML double
(production tags) and Airflow's REST API (runs, states, XComs). The module leaves the DAG paused, no serving
container on the VM and no production tag in the registry, as it found them.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.e2e.support import MODEL_NAME, clear_production_marks, partition_key, run_to_completion

DEPLOY_DAG = "edge_deploy"
ONE_PARTITION = "2026-11-20"  # trained by test_edge_training_dag.py
SERVING_URL = "http://127.0.0.1:30170"  # the DAG's default serving_port, on the VM (loopback here)
SERVING_LABEL = "org.edge-training.serving.model"
APPROVAL_READING_SECONDS = 5


def health(timeout: float = 5) -> dict:
    with urllib.request.urlopen(SERVING_URL + "/health", timeout=timeout) as response:
        return json.loads(response.read())


def serving_version() -> str:
    return str(health()["model"]["version"])


def deploy_by_hand(airflow, version: str) -> tuple[str, dict, dict]:
    run_id = f"e2e_deploy__{version}__{int(time.time() * 1000)}"
    airflow.trigger(DEPLOY_DAG, run_id=run_id, conf={"model_version": version})
    run = airflow.wait_run(DEPLOY_DAG, run_id, timeout=600)
    return run_id, run, airflow.task_instances(DEPLOY_DAG, run_id)


def production_versions(ml_client) -> list[str]:
    return sorted(str(m.version) for m in ml_client.models.list(name=MODEL_NAME)
                  if (m.tags or {}).get("stage") == "production")


def trained_and_shipped(model) -> bool:
    """A version a training run registered (it names its job) whose gate passed and whose image was pushed."""
    tags = model.tags or {}
    return tags.get("gate_passed") == "True" and bool(tags.get("image")) and bool(tags.get("job_name"))


def serving_containers(docker_client) -> dict[str, str]:
    """name -> serving version label, for the model's containers on the VM (the proxy as 'proxy')."""
    found = docker_client.containers.list(all=True, filters={"label": f"{SERVING_LABEL}={MODEL_NAME}"})
    return {c.name: c.labels.get("org.edge-training.serving.version") or c.labels.get(
        "org.edge-training.serving.role") for c in found}


class Hammer(threading.Thread):
    """Asks the stable address for /health without pause; records every answer or error."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.answers: list[str] = []
        self.errors: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.answers.append(serving_version())
            except (OSError, urllib.error.URLError, ValueError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop_event.wait(0.02)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)


@pytest.fixture(scope="module")
def docker_client(stack_env):
    import docker

    client = docker.DockerClient(base_url=stack_env["EDGE_DOCKER_HOST"], version="auto")
    yield client
    client.close()


@pytest.fixture(scope="module")
def deploys(airflow, stack_env, docker_client):
    """edge_deploy unpaused for this module; afterwards paused again, its containers and tags removed."""
    # The VM's Docker keeps containers across stack restarts: start from a VM that serves nothing.
    for container in docker_client.containers.list(all=True, filters={"label": SERVING_LABEL}):
        container.remove(force=True)
    airflow.wait_dag_parsed(DEPLOY_DAG)  # unpauses it
    yield
    airflow.set_paused(DEPLOY_DAG, True)
    for container in docker_client.containers.list(all=True, filters={"label": SERVING_LABEL}):
        container.remove(force=True)
    clear_production_marks()


@pytest.fixture(scope="module")
def first_deploy(airflow, deploys):
    """A training run of ONE_PARTITION (a rerun: everything it makes exists already) and the edge_deploy run
    its model asset event started."""
    started = dt.datetime.now(dt.timezone.utc).isoformat()
    run_id, run, tis = run_to_completion(airflow, ONE_PARTITION)
    assert run["state"] == "success", {t: ti["state"] for t, ti in tis.items()}
    trained = airflow.xcom("edge_training", run_id, "register_model")
    deploy_run = airflow.wait_asset_triggered_run(DEPLOY_DAG, partition_key(ONE_PARTITION), after=started)
    return trained, deploy_run


def test_a_training_runs_model_asset_event_deploys_its_version_on_the_vm(airflow, ml_client, docker_client,
                                                                          first_deploy):
    trained, deploy_run = first_deploy
    run_id = deploy_run["dag_run_id"]
    states = {t: ti["state"] for t, ti in airflow.task_instances(DEPLOY_DAG, run_id).items()}
    assert deploy_run["state"] == "success", states
    assert states == {"choose_version": "success", "approve": "success", "deploy_model": "success",
                      "summary": "success"}
    version = trained["version"]
    assert airflow.xcom(DEPLOY_DAG, run_id, "choose_version")["model_version"] == version

    # The stable address answers with that version, and /score with the answer its image gave when built.
    assert serving_version() == version
    model = ml_client.models.get(name=MODEL_NAME, version=version)
    check = json.loads(model.tags["smoke_check"])
    rows = [dict(zip(check["features"], row)) for row in check["rows"]]
    request = urllib.request.Request(SERVING_URL + "/score", data=json.dumps({"rows": rows}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["predictions"] == check["predictions"]

    # The image on the VM is the registry's, by digest; the version is production in AML, alone.
    digest = model.tags["image"].split("@", 1)[1]
    containers = serving_containers(docker_client)
    assert sorted(containers.values()) == [version, "proxy"], containers
    (served,) = [c for c in docker_client.containers.list(filters={"label": SERVING_LABEL})
                 if c.labels.get("org.edge-training.serving.version") == version]
    assert any(d.endswith(digest) for d in served.image.attrs["RepoDigests"])
    assert production_versions(ml_client) == [version]
    summary = airflow.xcom(DEPLOY_DAG, run_id, "summary")
    assert summary["status"] == "serving" and summary["model_version"] == version
    assert summary["serving_url"].endswith(":30170")


def test_a_new_version_replaces_it_without_a_missed_request_and_moves_the_production_mark(
    airflow, ml_client, docker_client, first_deploy
):
    old = first_deploy[0]["version"]
    # Another shipped version (the backfill of test_edge_training_dag.py trained several): one a training
    # job made (not the broken image an earlier session of this clone registered by hand).
    new = next(str(m.version) for m in ml_client.models.list(name=MODEL_NAME)
               if str(m.version) != old and trained_and_shipped(m))
    hammer = Hammer()
    hammer.start()
    try:
        run_id, run, tis = deploy_by_hand(airflow, new)
    finally:
        hammer.stop()
    assert run["state"] == "success", {t: ti["state"] for t, ti in tis.items()}
    assert serving_version() == new
    # Every request during the deploy was answered, first by the old version, then by the new, never back.
    assert hammer.errors == [] and len(hammer.answers) > 20, (hammer.errors[:5], len(hammer.answers))
    switches = [i for i in range(1, len(hammer.answers)) if hammer.answers[i] != hammer.answers[i - 1]]
    assert hammer.answers[0] == old and hammer.answers[-1] == new and len(switches) == 1, switches
    assert sorted(serving_containers(docker_client).values()) == [new, "proxy"]
    assert production_versions(ml_client) == [new]
    assert airflow.xcom(DEPLOY_DAG, run_id, "deploy_model")["unmarked"] == [old]


def test_a_broken_image_fails_its_smoke_test_and_leaves_the_serving_version(
    airflow, ml_client, docker_client, stack_env, first_deploy
):
    """A version whose image cannot serve (its scoring app cannot load a model) is refused on the VM."""
    from azure.ai.ml.entities import Model

    serving = serving_version()
    good = ml_client.models.get(name=MODEL_NAME, version=serving)
    # The broken image: the good one with the model folder pointed nowhere, pushed to the registry.
    repository = f"{stack_env['EDGE_REGISTRY']}/{MODEL_NAME}"
    tag = f"broken-{int(time.time())}"
    dockerfile = f"FROM {good.tags['image']}\nENV MODEL_DIR=/nonexistent\n".encode()
    docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=f"{repository}:{tag}", network_mode="host",
                               rm=True)
    auth = {"username": stack_env["EDGE_REGISTRY_USER"], "password": stack_env["EDGE_REGISTRY_PASSWORD"]}
    for line in docker_client.api.push(repository, tag=tag, auth_config=auth, stream=True, decode=True):
        assert "error" not in line, line
    from tests.e2e.support import Registry

    digest = Registry(stack_env).digest(MODEL_NAME, tag)
    broken = ml_client.models.create_or_update(Model(
        name=MODEL_NAME, path=good.path, type="custom_model", description="e2e: an image that cannot serve",
        tags={"gate_passed": "True", "image": f"{repository}@{digest}", "smoke_check": good.tags["smoke_check"]},
    ))

    run_id, run, tis = deploy_by_hand(airflow, str(broken.version))
    assert run["state"] == "failed"
    assert tis["deploy_model"]["state"] == "failed" and tis["deploy_model"]["try_number"] == 1
    log = airflow.task_log(DEPLOY_DAG, run_id, "deploy_model", 1)
    assert "SmokeTestError" in log and "exited with code" in log, log[-2000:]
    assert serving_version() == serving
    assert sorted(serving_containers(docker_client).values()) == [serving, "proxy"]
    assert production_versions(ml_client) == [serving]


def test_a_rollback_by_hand_serves_the_previous_version_and_a_rerun_does_nothing(
    airflow, ml_client, docker_client, first_deploy
):
    previous = first_deploy[0]["version"]
    run_id, run, tis = deploy_by_hand(airflow, previous)
    assert run["state"] == "success", {t: ti["state"] for t, ti in tis.items()}
    assert serving_version() == previous
    assert production_versions(ml_client) == [previous]
    assert sorted(serving_containers(docker_client).values()) == [previous, "proxy"]
    container_id = next(c.id for c in docker_client.containers.list(filters={"label": SERVING_LABEL})
                        if c.labels.get("org.edge-training.serving.version") == previous)

    run_id, run, tis = deploy_by_hand(airflow, previous)
    assert run["state"] == "success"
    result = airflow.xcom(DEPLOY_DAG, run_id, "deploy_model")
    assert result["changed"] is False
    assert "already serves" in airflow.task_log(DEPLOY_DAG, run_id, "deploy_model", 1)
    assert [c.id for c in docker_client.containers.list(filters={"label": SERVING_LABEL})
            if c.labels.get("org.edge-training.serving.version") == previous] == [container_id]


def answer_approval(airflow, run_id: str, choice: str, timeout: float = 300) -> None:
    """Wait for the run's approve task to ask (Airflow 3.3 parks it in ``awaiting_input``), then answer as a
    person does from the Required actions page: through Airflow's REST API."""
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = airflow.task_instances(DEPLOY_DAG, run_id).get("approve", {}).get("state")
        if state == "awaiting_input":
            break
        assert state not in ("success", "failed", "skipped"), f"approve ended {state} without asking"
        time.sleep(1)
    assert state == "awaiting_input", f"approve never asked (state {state})"
    # The scheduler has taken in the parked workload's exit once it logs the task instance finished.
    finished = f"TaskInstance Finished: dag_id={DEPLOY_DAG}, task_id=approve, run_id={run_id},"
    scheduler_log = airflow.ctx.log_file(airflow._pid_name("scheduler"))
    while finished not in scheduler_log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the scheduler never logged the parked approve task"
        time.sleep(1)
    # A person reads the request first. Answered within the scheduler's loop that sees the task park,
    # Airflow 3.3.2 takes the parked workload's exit for an external kill and retries the task, which then
    # asks again (seen here: "finished with state success, but the task instance's state attribute is
    # queued", then UP_FOR_RETRY). Under load that loop came more than the reading time after the park,
    # hence the wait for its log line above.
    time.sleep(APPROVAL_READING_SECONDS)
    airflow.api("PATCH", f"/dags/{DEPLOY_DAG}/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails",
                {"chosen_options": [choice]})


def deploy_with_approval(airflow, version: str, choice: str) -> tuple[str, dict, dict[str, str]]:
    """A deploy of ``version`` by hand with require_approval on, answered ``choice``: (run id, run, task states)."""
    run_id = f"e2e_deploy__{choice.lower()}__{int(time.time() * 1000)}"
    airflow.trigger(DEPLOY_DAG, run_id=run_id, conf={"model_version": version, "require_approval": True})
    answer_approval(airflow, run_id, choice)
    run = airflow.wait_run(DEPLOY_DAG, run_id, timeout=300)
    return run_id, run, {t: ti["state"] for t, ti in airflow.task_instances(DEPLOY_DAG, run_id).items()}


def test_with_require_approval_a_rejection_deploys_nothing_and_an_approval_deploys(
    airflow, ml_client, docker_client, first_deploy
):
    serving = serving_version()
    containers = serving_containers(docker_client)
    other = next(str(m.version) for m in ml_client.models.list(name=MODEL_NAME)
                 if str(m.version) != serving and trained_and_shipped(m))

    run_id, run, states = deploy_with_approval(airflow, other, "Reject")
    assert states["approve"] == "success" and states["deploy_model"] == "skipped", states
    assert run["state"] == "success", states
    assert serving_version() == serving and serving_containers(docker_client) == containers
    assert production_versions(ml_client) == [serving]

    # Approved, the deploy runs (here for the version that serves: it changes nothing, and says so).
    run_id, run, states = deploy_with_approval(airflow, serving, "Approve")
    assert run["state"] == "success" and states["deploy_model"] == "success", states
    assert airflow.xcom(DEPLOY_DAG, run_id, "deploy_model")["changed"] is False
    assert serving_version() == serving
