"""The package's own logger for the HTTP logging of the Azure clients it creates, and the SDK notice filter.

azure-core's ``HttpLoggingPolicy`` logs every request and response (URL, method, a header block) at
INFO; in a task log that buries the job's own lines under one block per poll or per blob page. This
package does not change the level of azure-core's logger (or any other library's): every Azure
client it builds gets ``logger=HTTP_LOGGER`` (``client_logging_kwargs()``), which azure-core hands to
that client's ``HttpLoggingPolicy``. ``HTTP_LOGGER`` is ``edge_training.azure.http`` at WARNING unless
the deployment's logging config already set a level for it (set it to INFO there to see the requests).

Where the kwarg reaches (checked against azure-core 1.41, azure-storage-blob 12.31, azure-identity
1.27, azure-ai-ml 1.35; the unit tests in tests/unit/test_azure_logging.py check it):

- ``BlobServiceClient`` (sync and aio) and the container/blob clients it hands out, which share its
  pipeline's policies;
- azure-identity's credentials (their token pipelines; ``DefaultAzureCredential`` passes it on to the
  credentials in its chain);
- ``MLClient``: its generated service clients, including the run-history and dataplane clients the
  job operations build later from the same kwargs.

Where it does not, and is left at azure-core's default logger (so a deployment logging the azure
loggers at INFO sees these requests): the ARM ``ResourceManagementClient`` MLClient builds for
deployment preflight (no kwargs passed on; this package never calls it), and the blob/datalake
clients azure-ai-ml builds itself for a code snapshot upload and an output download (built from an
account URL and a credential only). Those are a bounded number of requests per upload or
download, not per poll; the only other way to quiet them would be to change azure-core's own
logger, which is the deployment's call, not this package's.

The SDKs' own one-line INFO messages (azure-identity's "get_token succeeded", azure-ai-ml's
"Downloading artifact") are left alone: they are one line per token or per download.
"""

from __future__ import annotations

import logging
from typing import Any

from edge_training.hooks import azureml_sdk_private as sdk_private

HTTP_LOGGER_NAME = "edge_training.azure.http"
#: The logger the HTTP logging policy of every Azure client this package builds writes to.
HTTP_LOGGER = logging.getLogger(HTTP_LOGGER_NAME)
if HTTP_LOGGER.level == logging.NOTSET:
    # This package's own logger: quiet by default, unless the deployment's logging config said otherwise.
    HTTP_LOGGER.setLevel(logging.WARNING)


def client_logging_kwargs() -> dict[str, Any]:
    """Keyword arguments for an azure-core based client (or credential) so its HTTP logging uses ``HTTP_LOGGER``."""
    return {"logger": HTTP_LOGGER}


class ExperimentalNoticeFilter(logging.Filter):
    """Drops azure-ai-ml's "Class X: This is an experimental class, ..." notices, and nothing else.

    The SDK prints one for each experimental class or method it instantiates or calls, including its own
    internal schema classes, so they land in the task log as warnings that ask nothing of an operator.
    The SDK has no switch for them; only its logger's records can be filtered.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return sdk_private.EXPERIMENTAL_NOTICE_TEXT not in str(record.msg)


_EXPERIMENTAL_NOTICE_FILTER = ExperimentalNoticeFilter()


def quiet_experimental_notices() -> None:
    """Attach the notice filter to azure-ai-ml's experimental-notice logger (once: repeated calls add nothing).

    Called by the AML hook when it builds its client or an SDK job/model object, not at import: importing
    this package changes no other library's logging. The logger's level is left as it is.
    """
    logging.getLogger(sdk_private.EXPERIMENTAL_NOTICE_LOGGER).addFilter(_EXPERIMENTAL_NOTICE_FILTER)
