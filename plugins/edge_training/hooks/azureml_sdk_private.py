"""Every use of azure-ai-ml (and azure-core) private, underscore APIs, in one place.

The hook needs a few things the SDK does not expose publicly: the run-history details of a job (log
URLs, the job's own error), a download of a datastore URI, and the HTTP sessions to close. Each
function below names the private API it touches and why no public one does, so an SDK upgrade that
moves them is fixed here and nowhere else. Nothing here imports azure-ai-ml at module import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.ai.ml import MLClient

#: Private module ``azure.ai.ml._utils._experimental``: its logger prints "Class X: This is an
#: experimental class, ..." (or "Method X: ...") once per experimental class or method the SDK uses,
#: including its own internal schema classes. No public switch turns it off.
EXPERIMENTAL_NOTICE_LOGGER = "azure.ai.ml._utils._experimental"
#: Text both such notices contain (private constants ``EXPERIMENTAL_CLASS_MESSAGE`` and
#: ``EXPERIMENTAL_METHOD_MESSAGE`` of ``azure.ai.ml.constants._common``).
EXPERIMENTAL_NOTICE_TEXT = "This is an experimental "

#: Private attributes of ``MLClient._jobs`` (``JobOperations``) holding the lazily built run-history
#: and dataplane operation wrappers; each wraps a generated service client in ``._operation._client``.
_JOB_OPERATION_CLIENTS = (
    "_runs_operations_client",
    "_dataset_dataplane_operations_client",
    "_model_dataplane_operations_client",
)


def get_run_details(client: MLClient, name: str) -> Any:
    """Run-history details of job ``name``: ``log_files`` (name -> SAS URL), ``error``, start/end times.

    Private API: ``MLClient.jobs._runs_operations.get_run_details``. The public ``jobs.get`` returns
    neither the log file URLs nor the run's error; ``jobs.stream`` uses this same call internally but
    only prints the whole log to stdout, with no offset.
    """
    return client.jobs._runs_operations.get_run_details(name)


def download_datastore_uri(client: MLClient, uri: str, destination: str) -> None:
    """Download the files under an ``azureml://[subscriptions/.../]datastores/...`` URI into ``destination``.

    Private API: ``azure.ai.ml._artifacts._artifact_utilities.download_artifact_from_aml_uri`` (with the
    public ``client.datastores``, whose own credentials read the datastore). Here the hook already
    holds the output's datastore URI (the path the job reports for it); the public ``jobs.download``
    looks a named output up again through run history, and no public call downloads a given URI.
    """
    from azure.ai.ml._artifacts._artifact_utilities import download_artifact_from_aml_uri

    download_artifact_from_aml_uri(uri, destination, client.datastores)


def mlclient_http_closables(client: MLClient) -> list[Any]:
    """Objects holding the MLClient's HTTP sessions, to ``close()`` (entries may be None).

    Private API: generated service clients found in ``vars(client)`` by their ``_client``/``_config``
    attributes; ``client._jobs.<_JOB_OPERATION_CLIENTS>._operation._client`` (the job operations build
    their run-history/dataplane clients lazily); ``client._requests_pipeline._transport``. MLClient
    has no public ``close()`` and is not a context manager, so without these each hook would leak
    its HTTP sessions.
    """
    closables = [v for v in vars(client).values() if hasattr(v, "_client") and hasattr(v, "_config")]
    jobs = getattr(client, "_jobs", None)
    for attr in _JOB_OPERATION_CLIENTS:
        operation_group = getattr(getattr(jobs, attr, None), "_operation", None)
        if operation_group is not None:
            closables.append(getattr(operation_group, "_client", None))
    requests_pipeline = getattr(client, "_requests_pipeline", None)
    closables.append(getattr(requests_pipeline, "_transport", None))
    return closables


def pipeline_transport(pipeline: Any) -> Any:
    """The transport (HTTP session) of an azure-core ``Pipeline``, to ``close()``; None if it has none.

    Private API: ``azure.core.pipeline.Pipeline._transport``. A Pipeline closes its transport only
    when used as a context manager, which the hook's log reader, kept open across polls, is not.
    """
    return getattr(pipeline, "_transport", None)
