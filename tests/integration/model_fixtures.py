"""Helpers for tests that train real models in the stack's base image (shared by the training and image tests).

The data is synthetic with the stack's columns (devstack/STACK.md). Feature values carry six decimals
and device ids a run-specific token, so any copy of the data in an output is recognisable.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import docker
import requests

REPO = Path(__file__).resolve().parents[2]
TRAINING_DIR = REPO / "include" / "training"
COLUMNS = ["device_id", "timestamp", "temperature_c", "vibration_mm_s", "pressure_kpa", "rpm",
           "runtime_hours", "failure"]
NUMERIC = COLUMNS[2:7]


def write_partition(folder: Path, *, rows: int = 1200, parts: int = 3, seed: int = 0,
                    date: str = "2026-11-10", token: str = "zq") -> list[list[str]]:
    """Write CSV parts, a _SUCCESS marker and a manifest; return the rows written (as strings)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data: list[list[str]] = []
    for i in range(rows):
        temperature = rng.gauss(70, 8)
        vibration = abs(rng.gauss(4, 1.5))
        pressure = rng.gauss(101, 3)
        rpm = rng.gauss(1500, 200)
        runtime = rng.uniform(0, 20000)
        risk = 0.12 * (temperature - 75) + 0.9 * (vibration - 5) + 0.00015 * (runtime - 12000)
        failure = int(1 / (1 + math.exp(-risk)) > rng.random())
        data.append([
            f"dev-{token}-{i % 37:04d}", f"{date}T{(i // 60) % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}Z",
            f"{temperature:.6f}", f"{vibration:.6f}", f"{pressure:.6f}", f"{rpm:.6f}", f"{runtime:.6f}",
            str(failure),
        ])
    chunk = math.ceil(rows / parts)
    for p in range(parts):
        lines = [",".join(COLUMNS)] + [",".join(r) for r in data[p * chunk:(p + 1) * chunk]]
        (folder / f"part-{p:05d}.csv").write_text("\n".join(lines) + "\n")
    (folder / "_SUCCESS").write_text("")
    (folder / f"date={date}_manifest.json").write_text(json.dumps({"rows": rows, "parts": parts}))
    return data


def run_training(client: docker.DockerClient, base_image: str, data_dir: Path, out_dir: Path,
                 *args: str, training_dir: Path = TRAINING_DIR) -> tuple[int, str]:
    """Run include/training/train.py in the base image (no network); (exit code, combined output)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    container = client.containers.create(
        base_image,
        ["python3", "/opt/training/train.py", "--data", "/data", "--output", "/output", *args],
        volumes={str(training_dir): {"bind": "/opt/training", "mode": "ro"},
                 str(data_dir): {"bind": "/data", "mode": "ro"},
                 str(out_dir): {"bind": "/output", "mode": "rw"}},
        network_mode="none", labels={"org.edge-training.test": "train.py"},
    )
    try:
        container.start()
        status = container.wait(timeout=300)
        logs = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
    finally:
        container.remove(force=True)
    return status["StatusCode"], logs


def train_model(client: docker.DockerClient, base_image: str, tmp: Path, *, seed: int = 0,
                token: str = "zq") -> Path:
    """A model folder from a real training run; raises with the script's output if it fails."""
    data = tmp / f"data-{seed}"
    out = tmp / f"model-{seed}"
    write_partition(data, seed=seed, token=token)
    code, logs = run_training(client, base_image, data, out, "--seed", str(seed))
    if code != 0:
        raise AssertionError(f"train.py failed with exit code {code}:\n{logs}")
    return out


def registry_get(env: dict[str, str], path: str, **headers: str) -> requests.Response:
    """GET on the stack registry's API with the stack's credentials and CA (independent of the hook)."""
    return requests.get(f"https://{env['EDGE_REGISTRY']}{path}", headers=headers, timeout=30,
                        auth=(env["EDGE_REGISTRY_USER"], env["EDGE_REGISTRY_PASSWORD"]),
                        verify=env["EDGE_REGISTRY_CA_FILE"])


def registry_digest(env: dict[str, str], repository: str, tag: str) -> str | None:
    """The digest the registry serves for a tag, None when the repository or tag does not exist."""
    accept = ", ".join((
        "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"))
    response = registry_get(env, f"/v2/{repository}/manifests/{tag}", Accept=accept)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return response.headers["Docker-Content-Digest"]


def remove_local_images(client: docker.DockerClient, registry: str, repositories: list[str]) -> None:
    """Drop the local tags a test made (the registry keeps what was pushed)."""
    prefixes = tuple(f"{registry}/{r}:" for r in repositories) + tuple(f"{registry}/{r}@" for r in repositories)
    for image in client.images.list():
        for ref in image.tags + image.attrs.get("RepoDigests", []):
            if ref.startswith(prefixes):
                try:
                    client.images.remove(ref, force=True)
                except docker.errors.NotFound:
                    pass
