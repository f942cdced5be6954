"""Docker on the stack and the ACR stand-in: a host-network build from the base image, a push over
TLS with htpasswd auth (digest checked in the registry), and 401 without credentials."""

from __future__ import annotations

import base64
import io
import json
import ssl
import urllib.error
import urllib.request
import uuid

import docker
import pytest


@pytest.fixture
def client(stack_env):
    c = docker.DockerClient(base_url=stack_env["EDGE_DOCKER_HOST"], version="auto", timeout=300)
    yield c
    c.close()


def _registry_get(stack_env, path: str, *, auth: bool, accept: str = "") -> tuple[int, dict, bytes]:
    req = urllib.request.Request(f"https://{stack_env['EDGE_REGISTRY']}{path}")
    if auth:
        token = base64.b64encode(
            f"{stack_env['EDGE_REGISTRY_USER']}:{stack_env['EDGE_REGISTRY_PASSWORD']}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    if accept:
        req.add_header("Accept", accept)
    ctx = ssl.create_default_context(cafile=stack_env["EDGE_REGISTRY_CA_FILE"])
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_registry_requires_credentials(stack_env):
    status, headers, _ = _registry_get(stack_env, "/v2/", auth=False)
    assert status == 401
    assert headers.get("Www-Authenticate", headers.get("WWW-Authenticate", "")).startswith("Basic")
    assert _registry_get(stack_env, "/v2/", auth=True)[0] == 200


def test_build_from_base_image_on_host_network_then_push_with_auth(client, stack_env):
    registry = stack_env["EDGE_REGISTRY"]
    tag = uuid.uuid4().hex[:10]
    repo = f"{registry}/stack-it/probe"
    dockerfile = (
        f"FROM {stack_env['EDGE_BASE_IMAGE']}\n"
        # The stack's names resolve inside a host-network build, and the training libraries import.
        "RUN getent hosts edgeacr.azsacr.local.azurestack.external | grep -q '^127.0.0.1' "
        "&& python3 -c 'import sklearn, pandas, matplotlib'\n"
        f"LABEL org.edge-training.test={tag}\n"
    )
    image, _ = client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=f"{repo}:{tag}",
                                   network_mode="host", rm=True)
    try:
        auth = {"username": stack_env["EDGE_REGISTRY_USER"], "password": stack_env["EDGE_REGISTRY_PASSWORD"]}
        events = list(client.api.push(repo, tag=tag, auth_config=auth, stream=True, decode=True))
        errors = [e for e in events if "error" in e]
        assert not errors, errors
        digests = [e["aux"]["Digest"] for e in events if "aux" in e and "Digest" in e.get("aux", {})]
        assert len(digests) == 1
        status, headers, body = _registry_get(
            stack_env, f"/v2/stack-it/probe/manifests/{tag}", auth=True,
            accept="application/vnd.docker.distribution.manifest.v2+json")
        assert status == 200
        assert headers["Docker-Content-Digest"] == digests[0]
        assert json.loads(body)["config"]["digest"] == image.id
        # The same manifest is not readable anonymously.
        assert _registry_get(stack_env, f"/v2/stack-it/probe/manifests/{tag}", auth=False)[0] == 401
    finally:
        client.images.remove(f"{repo}:{tag}", force=True)


def test_push_without_credentials_is_refused(client, stack_env):
    repo = f"{stack_env['EDGE_REGISTRY']}/stack-it/anonymous"
    tag = uuid.uuid4().hex[:10]
    client.images.get(stack_env["EDGE_BASE_IMAGE"]).tag(repo, tag)
    try:
        events = list(client.api.push(repo, tag=tag, auth_config={}, stream=True, decode=True))
    finally:
        client.images.remove(f"{repo}:{tag}")
    errors = [e["error"] for e in events if "error" in e]
    assert errors, f"push without credentials did not fail: {events[-3:]}"
    assert "basic auth" in errors[0] or "unauthorized" in errors[0].lower(), errors[0]


def test_container_on_host_network_reaches_the_stack(client, stack_env):
    script = (
        "import socket, ssl, urllib.request, urllib.error\n"
        f"ctx = ssl.create_default_context(cafile='/ca.crt')\n"
        "try:\n"
        f"    urllib.request.urlopen('https://{stack_env['EDGE_REGISTRY']}/v2/', context=ctx, timeout=5)\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code)\n"
    )
    out = client.containers.run(
        stack_env["EDGE_BASE_IMAGE"], ["python3", "-c", script], network_mode="host", remove=True,
        volumes={stack_env["EDGE_CA_FILE"]: {"bind": "/ca.crt", "mode": "ro"}})
    assert out.decode().strip() == "401"
