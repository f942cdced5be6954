"""Model image on the stack: build (dockerd), smoke test, push to the TLS registry, digest verified.

Each test run uses its own model name, so the registry's repositories from earlier runs never make a
test pass by accident.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import docker
import pytest

from edge_training.exceptions import ContainerImageError
from edge_training.hooks.container_image import ContainerImageHook
from edge_training.hooks.image_identity import LABEL_PREFIX
from edge_training.hooks.registry_client import MANIFEST_TYPES
from edge_training.operators.container_image import ModelImageBuildOperator, ModelImagePushOperator
from tests.integration.model_fixtures import registry_digest, registry_get, remove_local_images, train_model

FINGERPRINT = "sha256:" + "3f9a0c1d2e4b" + "0" * 52


class RecordingTI:
    """The bit of a task instance the push operator uses: XCom pushes (for the extra link)."""

    def __init__(self) -> None:
        self.xcom: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcom[key] = value


@pytest.fixture(scope="module")
def env(stack_env):
    return stack_env


@pytest.fixture(scope="module")
def client(env) -> docker.DockerClient:
    client = docker.DockerClient(base_url=env["EDGE_DOCKER_HOST"], version="auto")
    client.images.get(env["EDGE_BASE_IMAGE"])
    return client


@pytest.fixture(scope="module")
def models(client, env, tmp_path_factory) -> dict[int, Path]:
    tmp = tmp_path_factory.mktemp("models")
    return {seed: train_model(client, env["EDGE_BASE_IMAGE"], tmp, seed=seed) for seed in (0, 1)}


@pytest.fixture(scope="module")
def model_name(client, env):
    name = f"it-failure-{uuid.uuid4().hex[:8]}"
    yield name
    remove_local_images(client, env["EDGE_REGISTRY"], [name, name.replace("it-failure-", "it-retry-")])


def build_op(env, model_name: str, model_dir: Path, version: str, **kwargs) -> ModelImageBuildOperator:
    return ModelImageBuildOperator(
        task_id="build_image", model_name=model_name, model_version=version, data_fingerprint=FINGERPRINT,
        job_name=f"edge-training-{model_name}-v{version}", partition="2026-11-10", model_dir=str(model_dir),
        base_image=env["EDGE_BASE_IMAGE"], registry_ca_bundle=env["EDGE_REGISTRY_CA_FILE"],
        git_commit="0123456789abcdef0123456789abcdef01234567", **kwargs,
    )


def push_op(env, build: dict, **kwargs) -> ModelImagePushOperator:
    return ModelImagePushOperator(task_id="push_image", build_result=build,
                                  registry_ca_bundle=env["EDGE_REGISTRY_CA_FILE"], **kwargs)


def smoke_containers(client) -> list:
    return client.containers.list(all=True, filters={"label": f"{LABEL_PREFIX}smoke-test=1"})


@pytest.fixture(scope="module")
def first(env, models, model_name):
    """Version 1: built, smoke-tested and pushed once for the module."""
    build = build_op(env, model_name, models[0], "1").execute({})
    ti = RecordingTI()
    pushed = push_op(env, build).execute({"ti": ti})
    return build, pushed, ti


def test_build_smoke_push_and_registry_digest_matches(env, client, first, model_name):
    build, pushed, ti = first
    registry = env["EDGE_REGISTRY"]
    assert build["reused"] is False and build["smoke_test"]["rows"] == 3
    assert pushed["reused"] is False
    assert pushed["tags"] == [f"{registry}/{model_name}:1", f"{registry}/{model_name}:fp-3f9a0c1d2e4b"]
    assert pushed["image"] == f"{registry}/{model_name}@{pushed['digest']}"
    # The registry itself, asked independently, resolves both tags to the pushed digest.
    assert registry_digest(env, model_name, "1") == pushed["digest"]
    assert registry_digest(env, model_name, "fp-3f9a0c1d2e4b") == pushed["digest"]
    assert ti.xcom["container_image_url"] == f"https://{registry}/v2/{model_name}/manifests/{pushed['digest']}"
    assert not smoke_containers(client)


def test_pushed_image_carries_the_model_labels(env, first, model_name):
    _, pushed, _ = first
    manifest = registry_get(env, f"/v2/{model_name}/manifests/{pushed['digest']}",
                            Accept=", ".join(MANIFEST_TYPES)).json()
    config = registry_get(env, f"/v2/{model_name}/blobs/{manifest['config']['digest']}").json()
    labels = config["config"]["Labels"]
    assert labels[f"{LABEL_PREFIX}model.name"] == model_name
    assert labels[f"{LABEL_PREFIX}model.version"] == "1"
    assert labels[f"{LABEL_PREFIX}data.fingerprint"] == FINGERPRINT
    assert labels[f"{LABEL_PREFIX}job.name"] == f"edge-training-{model_name}-v1"
    assert labels[f"{LABEL_PREFIX}partition"] == "2026-11-10"
    assert labels["org.opencontainers.image.revision"] == "0123456789abcdef0123456789abcdef01234567"
    assert labels["org.opencontainers.image.version"] == "1"
    assert labels["org.opencontainers.image.created"].endswith("Z")
    assert labels["org.opencontainers.image.base.name"] == env["EDGE_BASE_IMAGE"]


def test_second_run_reuses_the_image(env, first, model_name, models):
    _, pushed, _ = first
    build = build_op(env, model_name, models[0], "1").execute({})
    assert build["reused"] is True and build["digest"] == pushed["digest"] and "image_id" not in build
    again = push_op(env, build).execute({"ti": RecordingTI()})
    assert again == {**pushed, "reused": True}


def test_rebuild_with_only_a_new_model_reuses_every_other_layer(env, client, first, model_name, models):
    _, pushed_v1, _ = first
    build_v2 = build_op(env, model_name, models[1], "2").execute({})
    assert build_v2["reused"] is False
    # From the build output: every step after FROM and before the model's COPY came from the cache.
    steps = build_v2["build"]["steps"]
    model_step = next(s["number"] for s in steps if s["instruction"].startswith("COPY model/"))
    from_step = next(s["number"] for s in steps if s["instruction"].startswith("FROM "))
    before = [s for s in steps if from_step < s["number"] < model_step]
    assert len(before) >= 5 and all(s["cached"] for s in before), steps
    assert not steps[model_step - 1]["cached"]
    # After the model's layer only the labels of the build request: one step, no ARG or ENV steps.
    assert [s["instruction"].split()[0] for s in steps if s["number"] > model_step] == ["LABEL"], steps
    # From the images: v2 shares every layer with v1 (pulled from the registry) except the model's.
    layers_v1 = client.images.get(pushed_v1["image"]).attrs["RootFS"]["Layers"]
    layers_v2 = client.images.get(build_v2["image_id"]).attrs["RootFS"]["Layers"]
    assert layers_v2[:-1] == layers_v1[:-1]
    assert layers_v2[-1] != layers_v1[-1]
    pushed_v2 = push_op(env, build_v2).execute({"ti": RecordingTI()})
    assert registry_digest(env, model_name, "2") == pushed_v2["digest"] != pushed_v1["digest"]
    # Same data fingerprint: a fresh push moves the fp- tag to the newest model trained on it...
    assert registry_digest(env, model_name, "fp-3f9a0c1d2e4b") == pushed_v2["digest"]
    # ...and a re-run of version 1 leaves it there (a re-run changes nothing).
    again_v1 = push_op(env, build_op(env, model_name, models[0], "1").execute({})).execute({"ti": RecordingTI()})
    assert again_v1["reused"] is True and again_v1["digest"] == pushed_v1["digest"]
    assert registry_digest(env, model_name, "fp-3f9a0c1d2e4b") == pushed_v2["digest"]


def test_push_cut_short_after_the_version_tag_is_completed_on_retry(env, client, models, model_name):
    """The retry finds the version tag with this model, adds the missing fp- tag, pushes nothing."""
    name = model_name.replace("it-failure-", "it-retry-")
    build = build_op(env, name, models[0], "1").execute({})
    hook = ContainerImageHook(registry_ca_bundle=env["EDGE_REGISTRY_CA_FILE"])
    digest = hook.push(build["repository_ref"], "1")
    assert registry_digest(env, name, "fp-3f9a0c1d2e4b") is None
    result = push_op(env, build).execute({"ti": RecordingTI()})
    assert result["reused"] is True and result["digest"] == digest
    assert registry_digest(env, name, "fp-3f9a0c1d2e4b") == digest


def test_a_tag_holding_another_model_is_not_overwritten(env, first, model_name, models):
    op = build_op(env, model_name, models[1], "1")
    op.job_name = "some-other-job"
    with pytest.raises(ContainerImageError, match=r"already holds another model .*job.name: expected "
                                                  r"'some-other-job', found 'edge-training-"):
        op.execute({})


def test_pulled_by_digest_the_image_serves(env, client, first):
    """What is in the registry (not the local build) answers /score. Last: it drops the build cache."""
    _, pushed, _ = first
    for tag in pushed["tags"]:
        client.images.remove(tag, force=True)
    client.images.pull(pushed["image"], auth_config={"username": env["EDGE_REGISTRY_USER"],
                                                     "password": env["EDGE_REGISTRY_PASSWORD"]})
    hook = ContainerImageHook(registry_ca_bundle=env["EDGE_REGISTRY_CA_FILE"])
    rows = [{"temperature_c": 95.0, "vibration_mm_s": 9.5, "pressure_kpa": 101.0, "rpm": 1500.0,
             "runtime_hours": 19000.0, "device_id": "ignored"},
            {"temperature_c": 55.0, "vibration_mm_s": 1.0, "pressure_kpa": 101.0, "rpm": 1500.0,
             "runtime_hours": 100.0}]
    result = hook.smoke_test(pushed["image"], rows=rows)
    assert result["predictions"] == [1, 0]
