"""The image hook against Docker on the edge VM over ssh:// (the stack's sshd, key login, pinned host key)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import docker
import pytest

from edge_training.exceptions import HostKeyMismatchError
from edge_training.hooks.container_image import DEFAULT_SERVING_DIR, ContainerImageHook, prepare_context
from edge_training.hooks.image_identity import image_labels, model_labels
from tests.integration.model_fixtures import train_model

OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBvO8Il9Yx5G3nVNs4n5QyJ5mZl3C7m2dSx0fD4fQk2e"


def ssh_conn(env: dict[str, str], host_key: str) -> str:
    return json.dumps({
        "conn_type": "generic",
        "host": f"ssh://{env['EDGE_VM_USER']}@{env['EDGE_VM_HOST']}:{env['EDGE_VM_PORT']}",
        "extra": {"key_file": env["EDGE_VM_KEY_FILE"], "host_key": host_key, "network_mode": "host"},
    })


@pytest.fixture(scope="module")
def model_dir(stack_env, tmp_path_factory) -> Path:
    client = docker.DockerClient(base_url=stack_env["EDGE_DOCKER_HOST"], version="auto")
    return train_model(client, stack_env["EDGE_BASE_IMAGE"], tmp_path_factory.mktemp("ssh"), seed=0)


#: A label value Dockerfile syntax would otherwise change: quotes, a variable, a backslash.
SOURCE = 'https://git.example/"edge"/$HOME\\x'


def test_build_and_smoke_test_over_ssh(stack_env, model_dir, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_DOCKER_EDGE_SSH", ssh_conn(stack_env, stack_env["EDGE_VM_HOST_KEY"]))
    image = "it-ssh-model-image:1"
    with ContainerImageHook(docker_conn_id="docker_edge_ssh") as hook, tempfile.TemporaryDirectory() as tmp:
        assert hook.docker_client.api.base_url == "http+docker://ssh"
        labels = model_labels(model_name="it-ssh", model_version="1", data_fingerprint="0123456789ab", job_name="j")
        context = prepare_context(serving_dir=DEFAULT_SERVING_DIR, model_dir=model_dir, dest=Path(tmp) / "ctx",
                                  labels=image_labels(labels, base_image=stack_env["EDGE_BASE_IMAGE"], source=SOURCE))
        report = hook.build(context_dir=context, image=image, base_image=stack_env["EDGE_BASE_IMAGE"])
        try:
            built_labels = hook.local_image(image).labels
            assert built_labels["org.edge-training.model.name"] == "it-ssh"
            assert built_labels["org.opencontainers.image.source"] == SOURCE  # quotes and $ kept literally
            result = hook.smoke_test(image)
            assert result["rows"] == 3 and len(result["predictions"]) == 3
            # The model's identity travels in its own layer (model/identity.json), not in build steps.
            assert result["health"]["model"]["name"] == "it-ssh" and result["health"]["model"]["version"] == "1"
        finally:
            hook.remove_image(image)
    assert report.image_id


def test_a_different_host_key_is_refused(stack_env, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_DOCKER_EDGE_SSH", ssh_conn(stack_env, OTHER_KEY))
    hook = ContainerImageHook(docker_conn_id="docker_edge_ssh")
    with pytest.raises(HostKeyMismatchError, match="presented a host key different from the pinned one"):
        hook.docker_client
