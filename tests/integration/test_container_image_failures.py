"""Model image failures on the stack: a broken scoring app or model fails the smoke test and nothing
reaches the registry; a registry refusing the credentials gives a clear RegistryAuthError."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import docker
import pytest

from edge_training.exceptions import ContainerImageError, RegistryAuthError, SmokeTestError
from edge_training.hooks.container_image import DEFAULT_SERVING_DIR, ContainerImageHook
from edge_training.hooks.image_identity import LABEL_PREFIX
from edge_training.operators.container_image import ModelImageBuildOperator
from tests.integration.model_fixtures import registry_digest, train_model

FINGERPRINT = "9c1e2f3a4b5d6e7f8091a2b3c4d5e6f7"


@pytest.fixture(scope="module")
def client(stack_env) -> docker.DockerClient:
    client = docker.DockerClient(base_url=stack_env["EDGE_DOCKER_HOST"], version="auto")
    client.images.get(stack_env["EDGE_BASE_IMAGE"])
    return client


@pytest.fixture(scope="module")
def model_dir(client, stack_env, tmp_path_factory) -> Path:
    return train_model(client, stack_env["EDGE_BASE_IMAGE"], tmp_path_factory.mktemp("m"), seed=0)


def build_op(env, name: str, model_dir: Path, **kwargs) -> ModelImageBuildOperator:
    return ModelImageBuildOperator(
        task_id="build_image", model_name=name, model_version="1", data_fingerprint=FINGERPRINT,
        job_name=f"job-{name}", model_dir=str(model_dir), base_image=env["EDGE_BASE_IMAGE"],
        registry_ca_bundle=env["EDGE_REGISTRY_CA_FILE"], smoke_timeout=30, **kwargs,
    )


def assert_nothing_left(client, env, name: str) -> None:
    assert registry_digest(env, name, "1") is None
    local = [t for image in client.images.list() for t in image.tags if f"/{name}:" in t]
    assert local == [], "a failed smoke test must leave no pushable local tag"
    assert not client.containers.list(all=True, filters={"label": f"{LABEL_PREFIX}smoke-test=1"})


def test_scoring_app_answering_too_few_predictions_fails_and_nothing_is_pushed(stack_env, client, model_dir,
                                                                                tmp_path):
    serving = tmp_path / "serving"
    shutil.copytree(DEFAULT_SERVING_DIR, serving, ignore=shutil.ignore_patterns("__pycache__"))
    app = (serving / "score.py").read_text()
    broken = app.replace('result: dict[str, Any] = {"predictions": predictions}',
                         'result: dict[str, Any] = {"predictions": predictions[:-1]}')
    assert broken != app
    (serving / "score.py").write_text(broken)
    name = f"it-broken-{uuid.uuid4().hex[:8]}"
    with pytest.raises(SmokeTestError, match="expected 3 predictions for 3 rows, found 2"):
        build_op(stack_env, name, model_dir, serving_dir=str(serving)).execute({})
    assert_nothing_left(client, stack_env, name)


def test_model_the_app_cannot_load_fails_with_the_container_log(stack_env, client, model_dir, tmp_path):
    bad = tmp_path / "bad-model"
    bad.mkdir()
    (bad / "model.joblib").write_bytes(b"this is not a pickle")
    (bad / "metrics.json").write_text((model_dir / "metrics.json").read_text())
    name = f"it-badmodel-{uuid.uuid4().hex[:8]}"
    with pytest.raises(SmokeTestError) as err:
        build_op(stack_env, name, bad).execute({})
    message = str(err.value)
    assert f"smoke test of {stack_env['EDGE_REGISTRY']}/{name}:1" in message
    assert "the scoring app exited with code 1 before answering /health" in message, message
    assert "last log lines" in message and "cannot load the model /opt/model/model.joblib" in message, message
    assert_nothing_left(client, stack_env, name)


def test_model_trained_with_another_sklearn_is_refused_by_the_app(stack_env, client, model_dir, tmp_path):
    other = tmp_path / "other-sklearn"
    shutil.copytree(model_dir, other)
    metrics = json.loads((other / "metrics.json").read_text())
    metrics["sklearn_version"] = "0.24.2"
    (other / "metrics.json").write_text(json.dumps(metrics))
    name = f"it-version-{uuid.uuid4().hex[:8]}"
    with pytest.raises(SmokeTestError, match="trained with scikit-learn 0.24.2, this image has 1.2"):
        build_op(stack_env, name, other).execute({})
    assert_nothing_left(client, stack_env, name)


@pytest.fixture
def bad_auth_conn(stack_env, monkeypatch) -> tuple[str, str]:
    password = "wrong-" + uuid.uuid4().hex
    conn = json.loads(stack_env["AIRFLOW_CONN_ACR_DEFAULT"])
    conn["password"] = password
    monkeypatch.setenv("AIRFLOW_CONN_ACR_BADAUTH", json.dumps(conn))
    return "acr_badauth", password


def test_registry_refusing_auth_stops_the_build_with_a_clear_error(stack_env, model_dir, bad_auth_conn):
    conn_id, password = bad_auth_conn
    with pytest.raises(RegistryAuthError) as err:
        build_op(stack_env, "it-auth", model_dir, registry_conn_id=conn_id).execute({})
    message = str(err.value)
    assert f"registry {stack_env['EDGE_REGISTRY']} refused the credentials of user " \
           f"'{stack_env['EDGE_REGISTRY_USER']}'" in message
    assert "login and password" in message and password not in message


def test_push_with_refused_auth_is_a_registry_auth_error(stack_env, client, bad_auth_conn):
    """The same refusal seen by dockerd's push (the error arrives in the push stream)."""
    conn_id, password = bad_auth_conn
    name = f"it-authpush-{uuid.uuid4().hex[:8]}"
    ref = f"{stack_env['EDGE_REGISTRY']}/{name}"
    client.images.get(stack_env["EDGE_BASE_IMAGE"]).tag(ref, "1")
    try:
        hook = ContainerImageHook(registry_conn_id=conn_id, registry_ca_bundle=stack_env["EDGE_REGISTRY_CA_FILE"])
        with pytest.raises(RegistryAuthError, match=f"refused the push of {ref}:1") as err:
            hook.push(ref, "1")
        assert password not in str(err.value)
    finally:
        client.images.remove(f"{ref}:1")
    assert registry_digest(stack_env, name, "1") is None


def test_registry_ca_comes_from_the_connection_extra_and_its_absence_is_named(stack_env, monkeypatch):
    conn = json.loads(stack_env["AIRFLOW_CONN_ACR_DEFAULT"])
    monkeypatch.setenv("AIRFLOW_CONN_ACR_WITHCA", json.dumps({**conn, "extra": {"ca_bundle": stack_env["EDGE_REGISTRY_CA_FILE"]}}))
    monkeypatch.setenv("AIRFLOW_CONN_ACR_NOCA", json.dumps({**conn, "extra": {}}))
    # Only the machine's own trust store: other code in this process may have pointed requests at a
    # bundle that includes the stack CA (azure-ai-ml's storage clients need that).
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    with ContainerImageHook(registry_conn_id="acr_withca") as hook:
        hook.registry.check_auth()
        assert hook.registry.get_manifest("it-does-not-exist", "1") is None
    with ContainerImageHook(registry_conn_id="acr_noca") as hook:
        with pytest.raises(ContainerImageError, match="TLS verification failed .*extra 'ca_bundle'"):
            hook.registry.check_auth()
