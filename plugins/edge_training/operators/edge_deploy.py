"""Deploy a registered model version's image on the edge VM and mark it as production in Azure ML.

Only a version the training gate let through (tag ``gate_passed=True``, written by register_model) and
whose image is in the registry (tag ``image``, written by push_image) is deployed. After the switch the
version gets the production tags and every other version loses them, so the next training's gate
compares against what really serves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import BaseOperator

from edge_training.exceptions import InvalidInputError
from edge_training.hooks.edge_serving import DeploymentError, EdgeServingHook
from edge_training.hooks.smoke_test import SMOKE_CHECK_TAG, recorded_request
from edge_training.operators.arguments import flag, identifier

#: Tags a version must carry to be deployed, and their values.
GATE_TAG = "gate_passed"
IMAGE_TAG = "image"
#: The tags that mark the serving version (what the gate's production_tag policy reads).
PRODUCTION_TAG = {"stage": "production"}


class ModelNotDeployableError(DeploymentError, InvalidInputError):
    """The version asked for is not one this project may deploy (no gate pass, no image)."""


def deployment_target(params: Mapping[str, Any], events: Any) -> dict[str, str]:
    """Which version to deploy: the ``model_version`` param (a manual run, or a rollback), else the newest
    triggering event of the model asset (its extra names the model and the version)."""
    if params.get("model_version"):
        return {"model_name": str(params["model_name"]), "model_version": str(params["model_version"]),
                "source": "param"}
    found = [event for asset_events in (events or {}).values() for event in asset_events]
    found = [e for e in found if (e.extra or {}).get("model_version")]
    if not found:
        raise InvalidInputError(
            "edge_deploy: expected the model_version param or a model asset event naming a model_version, "
            "found neither (trigger with {\"model_version\": \"<version>\"} to deploy by hand)"
        )
    newest = max(found, key=lambda e: e.timestamp)
    return {"model_name": str(newest.extra.get("model_name") or params["model_name"]),
            "model_version": str(newest.extra["model_version"]),
            "source": f"asset event of {newest.source_dag_id}/{newest.source_run_id}"}


class EdgeDeployApprovalOperator(ApprovalOperator):
    """Airflow's human-in-the-loop approval, asked only when ``required`` renders true.

    :param required: ask for approval (templated, e.g. a DAG param); false: pass straight through.
    """

    template_fields: Sequence[str] = (*ApprovalOperator.template_fields, "required")

    def __init__(self, *, required: Any = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.required = required

    def execute(self, context: Any) -> Any:
        if not flag(self, "required", self.required):
            self.log.info("No approval required for this deploy (require_approval is off)")
            return None
        return super().execute(context)


class EdgeDeployModelOperator(BaseOperator):
    """Serve a model version on the edge VM behind its stable address, then move the production mark to it.

    Reruns are idempotent: the version that already serves is left alone (and its marks made right).
    A failed smoke test leaves the serving version in place and fails the task with the reason.

    Returns ``{model_name, model_version, image, serving_url, container, previous_version, changed,
    production_marked, unmarked}``.

    :param model_name: the AML model (templated).
    :param model_version: the version to serve (templated).
    :param serving_port: the stable port on the VM; the two after it hold the blue and green slots (templated).
    :param proxy_image: image on the VM that runs the stable address's proxy (needs python3) (templated).
    :param smoke_timeout: seconds the new container has to answer /health.
    :param drain_seconds: how long the old container keeps answering requests already sent to it.
    :param production_tag: tags that mark the serving version; None: ``{"stage": "production"}``.
    :param azureml_conn_id: the AML workspace.
    :param docker_conn_id: the edge VM's Docker.
    :param registry_conn_id: the registry the VM pulls from (its credentials log the VM in).
    :param registry_ca_bundle: CA file for the registry's TLS; None: the registry connection's extra.
    :param network_mode: network mode of the scoring containers; None: the docker connection's extra.
    """

    template_fields: Sequence[str] = ("model_name", "model_version", "serving_port", "proxy_image")
    ui_color = "#fde9d9"

    def __init__(
        self,
        *,
        model_name: str,
        model_version: str,
        serving_port: Any = 30170,
        proxy_image: str = "edge-training-base:bookworm",
        smoke_timeout: float = 60.0,
        drain_seconds: float = 2.0,
        production_tag: Mapping[str, str] | None = None,
        azureml_conn_id: str = "azureml_default",
        docker_conn_id: str = "docker_edge",
        registry_conn_id: str = "acr_default",
        registry_ca_bundle: str | None = None,
        network_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.model_version = model_version
        self.serving_port = serving_port
        self.proxy_image = proxy_image
        self.smoke_timeout = smoke_timeout
        self.drain_seconds = drain_seconds
        self.production_tag = dict(production_tag or PRODUCTION_TAG)
        self.azureml_conn_id = azureml_conn_id
        self.docker_conn_id = docker_conn_id
        self.registry_conn_id = registry_conn_id
        self.registry_ca_bundle = registry_ca_bundle
        self.network_mode = network_mode

    @cached_property
    def hook(self) -> EdgeServingHook:
        return EdgeServingHook(docker_conn_id=self.docker_conn_id, registry_conn_id=self.registry_conn_id,
                               registry_ca_bundle=self.registry_ca_bundle, network_mode=self.network_mode)

    def _serving_port(self) -> int:
        if isinstance(self.serving_port, bool) or not str(self.serving_port).isdigit() or not (
            1 <= int(self.serving_port) <= 65533
        ):
            raise InvalidInputError(
                f"{self.task_id}: serving_port must be a TCP port (1-65533, the next two hold the slots), "
                f"found {self.serving_port!r}"
            )
        return int(self.serving_port)

    def execute(self, context: Any) -> dict[str, Any]:
        from edge_training.hooks.azureml import AzureMLHook

        name = identifier(self, "model_name", self.model_name)
        version = identifier(self, "model_version", self.model_version)
        port = self._serving_port()
        with AzureMLHook(azureml_conn_id=self.azureml_conn_id) as aml:
            tags = dict(aml.get_model(name, version).tags or {})
            if str(tags.get(GATE_TAG)) != "True":
                raise ModelNotDeployableError(
                    f"model {name} version {version}: expected tag {GATE_TAG}=True (the training gate let it "
                    f"through), found {tags.get(GATE_TAG)!r}; only a model whose gate passed is deployed"
                )
            image = tags.get(IMAGE_TAG)
            if not image:
                raise ModelNotDeployableError(
                    f"model {name} version {version}: expected tag {IMAGE_TAG} (the pushed image by digest, "
                    f"written by push_image), found tags {sorted(tags)}"
                )
            request, record = recorded_request(tags.get(SMOKE_CHECK_TAG))
            if record is None:
                self.log.warning("Model %s:%s has no %s tag: the smoke test checks the answer's shape only",
                                 name, version, SMOKE_CHECK_TAG)
            with self.hook as hook:
                served = hook.deploy(model_name=name, version=version, image_ref=image, serving_port=port,
                                     proxy_image=self.proxy_image, request=request, record=record,
                                     smoke_timeout=self.smoke_timeout, drain_seconds=self.drain_seconds)
            unmarked = self._mark_production(aml, name, version, served["serving_url"])
        return {"model_name": name, "model_version": version, "image": image, **served,
                "production_marked": True, "unmarked": unmarked, "answer_checked": record is not None}

    def _mark_production(self, aml: Any, name: str, version: str, url: str) -> list[str]:
        """Production tags onto ``version``, off every other version; returns the versions unmarked."""
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
        current = dict(aml.get_model(name, version).tags or {})
        if any(current.get(k) != v for k, v in self.production_tag.items()) or current.get("serving_url") != url:
            aml.update_model_tags(name, version, {**self.production_tag, "serving_url": url, "deployed_at": now})
        unmarked = []
        for other in aml.list_model_versions(name):
            other_tags = other.tags or {}
            marked = all(other_tags.get(k) == v for k, v in self.production_tag.items())
            if str(other.version) != str(version) and marked:
                aml.update_model_tags(name, str(other.version), {"retired_at": now},
                                      remove=[*self.production_tag, "serving_url"])
                unmarked.append(str(other.version))
        self.log.info("Model %s:%s marked %s; unmarked %s", name, version, self.production_tag, unmarked or "none")
        return unmarked
