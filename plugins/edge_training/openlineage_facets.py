"""OpenLineage for the training runs: the datasets the operators report, and the AML job's parent run.

The Airflow OpenLineage provider (``apache-airflow-providers-openlineage``) emits a START and a
COMPLETE (or FAIL) event for every task. Three operators add what their task read or made, through
``get_openlineage_facets_on_complete``; the pure builders here turn each operator's own result (its
XCom) into ``openlineage.client`` datasets, so the operators stay thin and the naming lives in one place:

==========================  =====================================================  ==============================
dataset                     namespace                                              name
==========================  =====================================================  ==============================
Stack Hub partition (in)    ``wasbs://{container}@{account host}``                 the partition folder, e.g.
                                                                                   ``telemetry/date=2026-11-20``
AML model version (out)     ``azureml://subscriptions/{id}/resourcegroups/{group}  ``models/{name}/versions/{v}``
                            /workspaces/{workspace}``
model image (out)           ``oci://{registry host[:port]}``                       ``{repository}@{digest}``
==========================  =====================================================  ==============================

The partition follows OpenLineage's naming for Azure Blob Storage (WASBS: the container and the
account's blob host; the object key as the name), with the Stack Hub account's own host. AML and
container images have no OpenLineage convention: the model's namespace is the workspace as AML's
long-form URIs write it (``azureml://subscriptions/.../resourcegroups/.../workspaces/...``, as in its
datastore paths), and the image's namespace and name joined are the OCI reference that pulls it
(``oci://`` as Helm and ORAS write registry references). Every dataset carries the standard ``version``
facet: the partition's data fingerprint, the model version, the image digest; the partition also carries
``edgeTraining_partition`` (what the fingerprint covers), the model ``datasetType`` MODEL.

The AML job gets ``OPENLINEAGE_PARENT_*`` variables (:func:`parent_run_env`) so that lineage the job
emits itself can name the Airflow task run that submitted it as its parent.

This module imports the OpenLineage client at import time: the operators import it only inside the
methods the provider calls (and the submit operator, which goes without the variables when the import
fails), so the DAG parses and runs without the provider. Not to be confused with
:mod:`edge_training.lineage` (the git commit the code runs from, in tags and labels).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attr
from openlineage.client.event_v2 import InputDataset, OutputDataset
from openlineage.client.facet_v2 import DatasetFacet, dataset_type_dataset, dataset_version_dataset

from edge_training.hooks.stackhub_fingerprint import FINGERPRINT_VERSION

#: Key of the custom partition facet (custom facets carry a prefix of their producer's name).
PARTITION_FACET = "edgeTraining_partition"
#: The custom facet's schema: the project publishes no schema host, so a URN names it.
PARTITION_FACET_SCHEMA = "urn:edge-training:openlineage:PartitionDatasetFacet:1-0-0"
#: Environment variables a new AML job gets (see parent_run_env).
PARENT_ENV_KEYS = (
    "OPENLINEAGE_PARENT_ID",
    "OPENLINEAGE_PARENT_JOB_NAMESPACE",
    "OPENLINEAGE_PARENT_JOB_NAME",
    "OPENLINEAGE_PARENT_RUN_ID",
    "OPENLINEAGE_ROOT_PARENT_ID",
)


@attr.define
class PartitionDatasetFacet(DatasetFacet):
    """What a Stack Hub partition's data fingerprint covers, as ``validate_partition`` found it."""

    fingerprint: str
    """SHA-256 over the sorted (name, size, Content-MD5 or ETag) of the data files (hex)."""
    fingerprintFormat: str = FINGERPRINT_VERSION  # noqa: N815 - OpenLineage facets use camelCase
    partitionDate: str | None = attr.field(default=None)  # noqa: N815
    fileCount: int | None = attr.field(default=None)  # noqa: N815
    sizeBytes: int | None = attr.field(default=None)  # noqa: N815
    manifest: str | None = attr.field(default=None)
    """The manifest blob written beside the data (same container), if any."""
    dataUri: str | None = attr.field(default=None)  # noqa: N815
    """The ``azureml://datastores/...`` URI through which the training job reads the partition."""

    _additional_skip_redact: ClassVar[list[str]] = [
        "fingerprint", "fingerprintFormat", "partitionDate", "fileCount", "sizeBytes", "manifest", "dataUri",
    ]

    @staticmethod
    def _get_schema() -> str:
        return PARTITION_FACET_SCHEMA


# --- naming ------------------------------------------------------------------------------------------
def partition_name(summary: Mapping[str, Any]) -> tuple[str, str]:
    """(namespace, name) of a Stack Hub partition: ``wasbs://{container}@{account host}``, the folder."""
    folder = str(summary["prefix"]).strip("/") or "/"
    return f"wasbs://{summary['container']}@{summary['account_host']}", folder


def model_version_name(model: Mapping[str, Any]) -> tuple[str, str]:
    """(namespace, name) of an AML model version: the workspace URI, ``models/{name}/versions/{version}``."""
    return str(model["workspace"]), f"models/{model['name']}/versions/{model['version']}"


def image_name(image: Mapping[str, Any]) -> tuple[str, str]:
    """(namespace, name) of a pushed image: ``oci://{registry}``, ``{repository}@{digest}``.

    ``image`` is what ModelImagePushOperator returns: ``image`` is ``{registry}/{repository}@{digest}``
    (the registry is the reference's first component, as the operator wrote it).
    """
    reference, digest = str(image["image"]), str(image["digest"])
    if not reference.endswith(f"@{digest}") or "/" not in reference:
        raise ValueError(f"image reference {reference!r}: expected <registry>/<repository>@{digest}")
    registry, repository = reference[: -len(digest) - 1].split("/", 1)
    return f"oci://{registry}", f"{repository}@{digest}"


# --- datasets ----------------------------------------------------------------------------------------
def partition_dataset(summary: Mapping[str, Any]) -> InputDataset:
    """The partition ``validate_partition`` summarised, as an input, with its fingerprint."""
    namespace, name = partition_name(summary)
    fingerprint = str(summary["fingerprint"])
    return InputDataset(
        namespace=namespace,
        name=name,
        facets={
            "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=fingerprint),
            PARTITION_FACET: PartitionDatasetFacet(
                fingerprint=fingerprint,
                partitionDate=summary.get("partition_date"),
                fileCount=summary.get("file_count"),
                sizeBytes=summary.get("bytes"),
                manifest=summary.get("manifest"),
                dataUri=summary.get("data_uri"),
            ),
        },
    )


def window_datasets(summary: Mapping[str, Any]) -> list[InputDataset]:
    """Each day a validated training window used (its ``partitions``), as inputs; a summary without
    them is one partition."""
    return [partition_dataset(day) for day in (summary.get("partitions") or [summary])]


def model_version_dataset(model: Mapping[str, Any]) -> OutputDataset:
    """The model version ``register_model`` registered (or found), as an output."""
    namespace, name = model_version_name(model)
    return OutputDataset(
        namespace=namespace,
        name=name,
        facets={
            "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=str(model["version"])),
            "datasetType": dataset_type_dataset.DatasetTypeDatasetFacet(datasetType="MODEL"),
        },
    )


def image_dataset(image: Mapping[str, Any]) -> OutputDataset:
    """The image ``push_image`` pushed (or found), by digest, as an output."""
    namespace, name = image_name(image)
    return OutputDataset(
        namespace=namespace,
        name=name,
        facets={"version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=str(image["digest"]))},
    )


# --- what each operator reports ----------------------------------------------------------------------
def _lineage(inputs: list[InputDataset] | None = None, outputs: list[OutputDataset] | None = None) -> Any:
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage(inputs=inputs or [], outputs=outputs or [])


def partition_lineage(summary: Mapping[str, Any] | None) -> Any:
    """StackHubPartitionOperator: the partition, or each day of its window, in (nothing without a result)."""
    return _lineage(inputs=window_datasets(summary) if summary else [])


def model_version_lineage(model: Mapping[str, Any] | None, *, training_data: Any = None) -> Any:
    """AzureMLRegisterModelOperator: the model version out; the days it was trained on in, if known."""
    inputs = window_datasets(training_data) if isinstance(training_data, Mapping) else []
    return _lineage(inputs=inputs, outputs=[model_version_dataset(model)] if model else [])


def image_lineage(image: Mapping[str, Any] | None) -> Any:
    """ModelImagePushOperator: the image out."""
    return _lineage(outputs=[image_dataset(image)] if image else [])


# --- the AML job's parent ----------------------------------------------------------------------------
def parent_run_env(task_instance: Any, operator: Any) -> dict[str, str]:
    """The OpenLineage identifiers of the task run submitting an AML job, as the job's environment.

    ``OPENLINEAGE_PARENT_ID`` (``{namespace}/{job name}/{run id}``) and ``OPENLINEAGE_ROOT_PARENT_ID``
    (the DAG run, same form) are what OpenLineage's integrations read to set a ParentRunFacet (dbt-ol
    does); the parent's three parts are given apart too. They come from the provider's own macros
    (``lineage_parent_id`` and the like), so they are the ids of the events the provider emits for this
    task. The run id is the try's: a retry that re-attaches to the job submits nothing, so the job keeps
    the ids of the try that created it (the root, the DAG run, is the same for every try).

    Empty when the provider is disabled (``[openlineage] disabled``, or no transport configured) or
    its emission policy leaves this task out: the ids would name runs no backend ever hears of.
    ``OPENLINEAGE_NAMESPACE`` is not set: the OpenLineage clients read it as the namespace of the job's
    *own* events, which are the job's, not Airflow's.
    """
    from airflow.providers.openlineage import conf
    from airflow.providers.openlineage.plugins import macros

    if conf.is_disabled():
        return {}
    try:
        from airflow.providers.openlineage.utils.emission_policy import resolve_task_emission_policy
    except ImportError:  # an older provider: no per-task policy
        pass
    else:
        if not resolve_task_emission_policy(
            operator=operator, dag_id=task_instance.dag_id, task_id=task_instance.task_id
        ).emit:
            return {}
    namespace = macros.lineage_job_namespace()
    job_name = macros.lineage_job_name(task_instance)
    run_id = macros.lineage_run_id(task_instance)
    return {
        "OPENLINEAGE_PARENT_ID": f"{namespace}/{job_name}/{run_id}",
        "OPENLINEAGE_PARENT_JOB_NAMESPACE": namespace,
        "OPENLINEAGE_PARENT_JOB_NAME": job_name,
        "OPENLINEAGE_PARENT_RUN_ID": run_id,
        "OPENLINEAGE_ROOT_PARENT_ID": macros.lineage_root_parent_id(task_instance),
    }
