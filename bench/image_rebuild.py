"""image_rebuild: the model image's second build and second push, when only the model changed.

On the devstack (dockerd, base image, registry): trains two models with include/training/train.py in the
base image. Each round builds the serving image for model A with no layer cache (the first build of a
new scoring-app version), then for model B with the cache (what every retrain does). Then both images
are pushed to a new repository of the stack registry, and the bytes the second push added are read from
the registry's own storage (blob files that were not there before the push).

Targets: worst round's rebuild / first build <= 0.2; bytes added by the second push <= model size + 1 MiB.
Writes bench/results/image_rebuild.json.

    .venv/bin/python bench/image_rebuild.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

from results import REPO, Check, load_stack_env, write_result

MIB = 2**20


def registry_blobs() -> dict[str, int]:
    """Every blob the stack registry stores (digest path -> bytes), from its data directory."""
    root = REPO / ".devstack" / "registry" / "data" / "docker" / "registry" / "v2" / "blobs"
    return {str(p.parent.relative_to(root)): p.stat().st_size for p in root.glob("sha256/*/*/data")}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    env = load_stack_env()

    import docker

    from edge_training.hooks.container_image import DEFAULT_SERVING_DIR, ContainerImageHook, prepare_context
    from edge_training.hooks.image_identity import image_labels, model_labels
    from tests.integration.model_fixtures import train_model

    client = docker.DockerClient(base_url=env["EDGE_DOCKER_HOST"], version="auto")
    base_image = env["EDGE_BASE_IMAGE"]
    hook = ContainerImageHook()
    rounds, pushes = [], []
    with tempfile.TemporaryDirectory(prefix="bench-image-") as tmp_name:
        tmp = Path(tmp_name)
        models = {seed: train_model(client, base_image, tmp, seed=seed) for seed in (0, 1)}
        for round_no in range(1, args.rounds + 1):
            reports = {}
            for seed, nocache in ((0, True), (1, False)):
                labels = model_labels(model_name="bench-model", model_version=str(seed + 1),
                                      data_fingerprint="bench" + "0" * 11, job_name=f"bench-job-{seed}",
                                      created=dt.datetime.now(dt.timezone.utc).isoformat())
                context = prepare_context(serving_dir=DEFAULT_SERVING_DIR, model_dir=models[seed],
                                          dest=tmp / f"ctx-{round_no}-{seed}",
                                          labels=image_labels(labels, base_image=base_image))
                reports[seed] = hook.build(context_dir=context, image=f"bench/model-image:{seed}",
                                           base_image=base_image, nocache=nocache)
            first, second = reports[0], reports[1]
            rounds.append({"round": round_no, "first_s": round(first.seconds, 3), "second_s": round(second.seconds, 3),
                           "ratio": round(second.seconds / first.seconds, 4),
                           "cached_steps": f"{len(second.cached_steps)}/{len(second.steps)}"})
            print(f"round {round_no}: {rounds[-1]}")

        repository = f"{env['EDGE_REGISTRY']}/bench-image-rebuild-{dt.datetime.now(dt.timezone.utc):%Y%m%d%H%M%S}"
        auth = {"username": env["EDGE_REGISTRY_USER"], "password": env["EDGE_REGISTRY_PASSWORD"]}
        for seed in (0, 1):
            before = registry_blobs()
            client.api.tag(f"bench/model-image:{seed}", repository, tag=str(seed + 1))
            started = time.monotonic()
            for item in client.api.push(repository, tag=str(seed + 1), auth_config=auth, stream=True, decode=True):
                if "error" in item:
                    raise SystemExit(f"push of {repository}:{seed + 1} failed: {item['error']}")
            added = {k: v for k, v in registry_blobs().items() if k not in before}
            pushes.append({"model": seed + 1, "seconds": round(time.monotonic() - started, 3),
                           "blobs_added": len(added), "bytes_added": sum(added.values()),
                           "model_bytes": folder_bytes(models[seed])})
            client.images.remove(f"{repository}:{seed + 1}")
            print(f"push {seed + 1}: {pushes[-1]}")
    for tag in ("bench/model-image:0", "bench/model-image:1"):
        try:
            client.images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass

    second_push = pushes[1]
    document = write_result("image_rebuild", [
        Check(f"rebuild with only the model changed / first build, worst of {len(rounds)} rounds",
              max(r["ratio"] for r in rounds), 0.2, "ratio"),
        Check("bytes the second push added to the registry (limit: the model's size + 1 MiB)",
              second_push["bytes_added"] / MIB, second_push["model_bytes"] / MIB + 1.0, "MiB"),
    ], {"rounds": rounds, "pushes": pushes})
    return 0 if document["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
