"""Build the model image (with a smoke test) and push it to the registry, idempotently.

The image tag is derived from the model version and the data fingerprint, and the image carries the
model's identity in labels. A tag that already holds an image with the same model labels is neither
rebuilt nor pushed again: a retry, a cleared task or a re-run backfill returns the existing digest.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator

from edge_training import lineage
from edge_training.assets import MODEL_URI_PREFIX, emit_model_event, partition_of
from edge_training.exceptions import ContainerImageError
from edge_training.hooks.container_image import DEFAULT_SERVING_DIR, ContainerImageHook, prepare_context
from edge_training.hooks.smoke_test import SMOKE_CHECK_TAG, smoke_check_tag
from edge_training.hooks.image_identity import (
    IDENTITY_LABELS,
    LABEL_PREFIX,
    image_labels,
    image_tags,
    model_labels,
    repository_name,
)
from edge_training.links.container_image import ContainerImageLink, image_url
from edge_training.operators.arguments import identifier, mapping

#: What ModelImageBuildOperator returns and ModelImagePushOperator needs of it.
BUILD_RESULT_KEYS = ("repository", "repository_ref", "tags", "labels", "reused")


def _identity(labels: dict[str, str]) -> dict[str, str]:
    return {f"{LABEL_PREFIX}{k}": labels[f"{LABEL_PREFIX}{k}"] for k in IDENTITY_LABELS}


class ModelImageBuildOperator(BaseOperator):
    """Build the scoring image for one model version and smoke-test it. Pushes nothing.

    The build context is ``serving_dir`` (include/serving: Dockerfile and scoring app) plus the model:
    ``model_dir`` on the worker, or, when it is not given, the ``model_output`` of AML job ``job_name``
    downloaded through ``azureml_conn_id``. It first reaches the Docker host and logs in to the registry
    (a bad connection fails here, named, even when nothing needs building). Then the registry is asked
    whether the version tag already holds this model; if so the build is skipped and the existing
    digest returned.

    Returns (XCom) a dict for ModelImagePushOperator: registry, repository, tags, labels, reused, and
    either the existing digest (reused) or the local image id and build report.

    :param model_name: AML model name; also the repository's unless ``repository`` is given (templated).
    :param model_version: the model version: the image's first tag, and a label (templated).
    :param data_fingerprint: fingerprint of the training data: the ``fp-<12 characters>`` tag, and a
        label (templated).
    :param job_name: AML job that trained the model: a label, and where the model comes from without
        ``model_dir`` (templated).
    :param partition: partition the model was trained on, for the labels (templated).
    :param data_days: the days the model learnt from, comma-separated, for the labels (templated).
    :param model_dir: folder on the worker holding the model; None: download ``model_output`` (templated).
    :param azureml_conn_id: AML connection the model is downloaded through; needed without ``model_dir``.
    :param model_output: the job output holding the model.
    :param repository: registry repository; None: derived from ``model_name`` (templated).
    :param base_image: image with the model's libraries (the training base image) (templated).
    :param serving_dir: Dockerfile and scoring app; None: the project's ``include/serving`` (templated).
    :param git_commit: commit for the labels; None: ``EDGE_TRAINING_GIT_COMMIT``, else the checkout's
        ``HEAD`` (templated).
    :param source: the image's ``org.opencontainers.image.source`` label (e.g. the repository URL).
    :param docker_conn_id: connection of the Docker host that builds and smoke-tests the image.
    :param registry_conn_id: connection of the registry (server, user, password).
    :param registry_ca_bundle: CA file for the registry's TLS; None: the registry connection's extra
        ``ca_bundle``, else the system's CAs (templated).
    :param network_mode: overrides the docker connection's ``network_mode`` extra (templated).
    :param smoke_rows: rows POSTed to /score in the smoke test; default: three synthetic rows built
        from the feature names the app reports (templated).
    :param smoke_timeout: seconds the smoke test waits for the scoring app's /health to answer.
    :param nocache: build without Docker's layer cache.
    """

    template_fields: Sequence[str] = (
        "model_name", "model_version", "data_fingerprint", "job_name", "partition", "data_days", "model_dir",
        "repository", "base_image", "serving_dir", "git_commit", "registry_ca_bundle", "network_mode",
        "smoke_rows",
    )

    def __init__(
        self,
        *,
        model_name: str,
        model_version: str,
        data_fingerprint: str,
        job_name: str,
        partition: str = "",
        data_days: str = "",
        model_dir: str | None = None,
        azureml_conn_id: str | None = None,
        model_output: str = "model",
        repository: str | None = None,
        base_image: str = "edge-training-base:bookworm",
        serving_dir: str | None = None,
        git_commit: str | None = None,
        source: str = "",
        docker_conn_id: str = "docker_edge",
        registry_conn_id: str = "acr_default",
        registry_ca_bundle: str | None = None,
        network_mode: str | None = None,
        smoke_rows: list[Any] | None = None,
        smoke_timeout: float = 60.0,
        nocache: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.model_version = model_version
        self.data_fingerprint = data_fingerprint
        self.job_name = job_name
        self.partition = partition
        self.data_days = data_days
        self.model_dir = model_dir
        self.azureml_conn_id = azureml_conn_id
        self.model_output = model_output
        self.repository = repository
        self.base_image = base_image
        self.serving_dir = serving_dir
        self.git_commit = git_commit
        self.source = source
        self.docker_conn_id = docker_conn_id
        self.registry_conn_id = registry_conn_id
        self.registry_ca_bundle = registry_ca_bundle
        self.network_mode = network_mode
        self.smoke_rows = smoke_rows
        self.smoke_timeout = smoke_timeout
        self.nocache = nocache

    def _model_folder(self, tmp: Path) -> Path:
        if self.model_dir:
            return Path(self.model_dir)
        if not self.azureml_conn_id:
            raise ContainerImageError(
                f"model image for {self.model_name}:{self.model_version}: expected model_dir or "
                "azureml_conn_id (to download the job's model output), found neither"
            )
        from edge_training.hooks.azureml import AzureMLHook

        with AzureMLHook(azureml_conn_id=self.azureml_conn_id) as aml:
            return aml.download_job_output(self.job_name, self.model_output, tmp / "download")

    @cached_property
    def hook(self) -> ContainerImageHook:
        return ContainerImageHook(
            docker_conn_id=self.docker_conn_id, registry_conn_id=self.registry_conn_id,
            registry_ca_bundle=self.registry_ca_bundle, network_mode=self.network_mode,
        )

    def execute(self, context: Any) -> dict[str, Any]:
        with self.hook as hook:
            hook.check_connections()
            return self._execute(hook)

    def _execute(self, hook: ContainerImageHook) -> dict[str, Any]:
        for name in ("model_name", "model_version", "data_fingerprint", "job_name", "partition", "data_days"):
            setattr(self, name, identifier(self, name, getattr(self, name)))
        if self.git_commit is not None:
            self.git_commit = identifier(self, "git_commit", self.git_commit)
        serving_dir = Path(self.serving_dir) if self.serving_dir else DEFAULT_SERVING_DIR
        repository = self.repository or repository_name(self.model_name)
        tags = image_tags(self.model_version, self.data_fingerprint)
        registry = hook.registry_host
        repository_ref = f"{registry}/{repository}"
        created = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        labels = model_labels(
            model_name=self.model_name, model_version=self.model_version,
            data_fingerprint=self.data_fingerprint, job_name=self.job_name, partition=self.partition,
            data_days=self.data_days,
            git_commit=self.git_commit or lineage.git_commit(), created=created,
        )
        result: dict[str, Any] = {
            "registry": registry,
            "repository": repository,
            "repository_ref": repository_ref,
            "tags": tags,
            "labels": _identity(labels),
            "model_name": self.model_name,
            "model_version": str(self.model_version),
        }

        existing = hook.find_existing(repository, tags[0], labels)
        if existing is not None:
            self.log.info("%s:%s already holds model %s:%s (%s); not rebuilding", repository_ref, tags[0],
                          self.model_name, self.model_version, existing.digest)
            return {**result, "reused": True, "digest": existing.digest,
                    "image": f"{repository_ref}@{existing.digest}"}

        local = f"{repository_ref}:{tags[0]}"
        with tempfile.TemporaryDirectory(prefix="model-image-") as tmp:
            context_dir = prepare_context(
                serving_dir=serving_dir, model_dir=self._model_folder(Path(tmp)), dest=Path(tmp) / "context",
                labels=image_labels(labels, base_image=self.base_image, source=self.source),
            )
            report = hook.build(context_dir=context_dir, image=local, base_image=self.base_image, nocache=self.nocache)
        for tag in tags[1:]:
            hook.tag(report.image_id, repository_ref, tag)
        try:
            smoke = hook.smoke_test(local, rows=self.smoke_rows, timeout=self.smoke_timeout)
        except Exception:
            # Leave nothing behind that a later push could pick up.
            for tag in tags:
                hook.remove_image(f"{repository_ref}:{tag}")
            raise
        return {
            **result,
            "reused": False,
            "image_id": report.image_id,
            "build": report.summary(),
            # The known request and the answer this image gave: edge_deploy asks the deployed container the
            # same and expects the same answer (push_image keeps it on the model version, tag smoke_check).
            "smoke_test": {"rows": smoke["rows"], "seconds": smoke["seconds"], "request": smoke.get("request"),
                           "predictions": smoke.get("predictions"), "probabilities": smoke.get("probabilities")},
        }


class ModelImagePushOperator(BaseOperator):
    """Push the image ModelImageBuildOperator built, verify the registry's digest, record the reference.

    Pushes every tag (``<version>`` and ``fp-<fingerprint>``), reading the push stream for errors, then
    checks that the registry's manifest digest for each tag equals the pushed digest. An image the
    build found already in the registry is not pushed again (a missing fingerprint tag is re-pointed
    at it). With ``azureml_conn_id`` the reference ``registry/repository@digest`` is written to the
    model version's tag ``model_tag``.

    Returns (XCom): {"image": "registry/repo@sha256:...", "tags": [...], "digest": ..., "reused": bool}.
    With the OpenLineage provider, the image (by digest) is the task's output dataset.

    :param build_result: the build operator's return value (e.g. ``build_task.output``) (templated, a dict).
    :param docker_conn_id: connection of the Docker host holding the built image.
    :param registry_conn_id: connection of the registry; it must be the one the image was built for.
    :param registry_ca_bundle: CA file for the registry's TLS; None: the registry connection's extra
        ``ca_bundle``, else the system's CAs (templated).
    :param azureml_conn_id: AML connection through which the reference is written to the model
        version; None: nothing is written.
    :param model_tag: the model version's tag that receives the reference (templated).
    :param image_link_template: URL for the extra link, with {registry}, {repository} and {digest};
        None: the registry's manifest URL for the digest (templated).
    """

    template_fields: Sequence[str] = ("build_result", "registry_ca_bundle", "model_tag", "image_link_template")
    operator_extra_links = (ContainerImageLink(),)

    def __init__(
        self,
        *,
        build_result: dict[str, Any],
        docker_conn_id: str = "docker_edge",
        registry_conn_id: str = "acr_default",
        registry_ca_bundle: str | None = None,
        azureml_conn_id: str | None = None,
        model_tag: str = "image",
        image_link_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.build_result = build_result
        self.docker_conn_id = docker_conn_id
        self.registry_conn_id = registry_conn_id
        self.registry_ca_bundle = registry_ca_bundle
        self.azureml_conn_id = azureml_conn_id
        self.model_tag = model_tag
        self.image_link_template = image_link_template

    def _build(self) -> dict[str, Any]:
        """The build's result; given as a literal dict, its text was rendered natively (a version label
        "3" became 3), so tags and labels are taken back as text."""
        build = dict(mapping(self, "build_result", self.build_result, keys=BUILD_RESULT_KEYS))
        build["tags"] = [identifier(self, "build_result.tags", tag) for tag in build["tags"]]
        build["labels"] = {k: identifier(self, f"build_result.labels[{k}]", v) for k, v in build["labels"].items()}
        return build

    def execute(self, context: Any) -> dict[str, Any]:
        build = self._build()
        with self.hook as hook:
            return self._execute(context, build, hook)

    @cached_property
    def hook(self) -> ContainerImageHook:
        return ContainerImageHook(docker_conn_id=self.docker_conn_id, registry_conn_id=self.registry_conn_id,
                                  registry_ca_bundle=self.registry_ca_bundle)

    def _execute(self, context: Any, build: dict[str, Any], hook: ContainerImageHook) -> dict[str, Any]:
        repository, repository_ref, tags = build["repository"], build["repository_ref"], build["tags"]
        if repository_ref != f"{hook.registry_host}/{repository}":
            raise ContainerImageError(
                f"image {repository_ref} was built for another registry than connection "
                f"{self.registry_conn_id!r} ({hook.registry_host})"
            )

        existing = hook.find_existing(repository, tags[0], build["labels"])
        if existing is not None:
            digest, reused = existing.digest, True
            self.log.info("%s:%s already holds this model (%s); not pushing", repository_ref, tags[0], digest)
            for tag in tags[1:]:
                # A push cut short after the version tag: add the missing tag. An existing fp- tag is
                # left alone (a newer model trained on the same data may hold it).
                hook.ensure_tag(repository, tag, digest, only_if_missing=True)
        else:
            if build["reused"]:
                raise ContainerImageError(
                    f"{repository_ref}:{tags[0]} held this model when the image was built but is gone "
                    "now; clear the build task to rebuild"
                )
            local = f"{repository_ref}:{tags[0]}"
            if (found := hook.local_image_id(local)) != build["image_id"]:
                raise ContainerImageError(
                    f"local image {local} is {found}, expected {build['image_id']} (the smoke-tested build); "
                    "clear the build task to rebuild"
                )
            hook.registry.check_auth()
            digests = {tag: hook.push(repository_ref, tag) for tag in tags}
            if len(set(digests.values())) != 1:
                raise ContainerImageError(f"tags of {repository_ref} were pushed with different digests: {digests}")
            digest, reused = digests[tags[0]], False
            for tag in tags:
                hook.verify_digest(repository, tag, digest)
            self.log.info("Registry digest of %s verified: %s", ", ".join(tags), digest)

        image = f"{repository_ref}@{digest}"
        ContainerImageLink.persist(context, image_url(hook.registry_host, repository, digest,
                                                      template=self.image_link_template))
        if self.azureml_conn_id:
            from edge_training.hooks.azureml import AzureMLHook

            model_tags = {self.model_tag: image}
            if (check := smoke_check_tag(build.get("smoke_test"))) is not None:
                model_tags[SMOKE_CHECK_TAG] = check
            with AzureMLHook(azureml_conn_id=self.azureml_conn_id) as aml:
                aml.update_model_tags(build["model_name"], build["model_version"], model_tags)
            self.log.info("Tagged AML model %s:%s with %s", build["model_name"], build["model_version"],
                          ", ".join(model_tags))
        self._result = {
            "image": image,
            "tags": [f"{repository_ref}:{t}" for t in tags],
            "digest": digest,
            "reused": reused,
        }
        # The model is shippable now: registered, its image in the registry. edge_deploy listens.
        model_name, model_version = str(build["model_name"]), str(build["model_version"])
        emit_model_event(context, self.outlets, model_name, {
            "model_name": model_name,
            "model_version": model_version,
            "model_uri": f"{MODEL_URI_PREFIX}{model_name}/versions/{model_version}",
            "image": image,
            "digest": digest,
            "partition_key": partition_of(context),
            "data_fingerprint": build["labels"].get(f"{LABEL_PREFIX}data.fingerprint"),
            "job_name": build["labels"].get(f"{LABEL_PREFIX}job.name"),
        })
        return self._result

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """For the OpenLineage provider: the pushed image, named by its digest, as the output."""
        from edge_training.openlineage_facets import image_lineage

        return image_lineage(getattr(self, "_result", None) or task_instance.xcom_pull(task_ids=self.task_id))
