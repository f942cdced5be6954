"""Domain exceptions. Messages name the object, what was expected and what was found."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException, AirflowFailException


class EdgeTrainingError(AirflowException):
    """Base of every error raised by the edge training package."""


class InvalidInputError(EdgeTrainingError, AirflowFailException):
    """Bad input, data or trust: a retry cannot cure it, so the task fails at once without retries."""


class OperatorArgumentError(InvalidInputError, TypeError):
    """An operator argument of the wrong type once rendered (text where a flag or number belongs)."""


# Edge VM (SSH)
class EdgeVMError(EdgeTrainingError):
    """The edge VM cannot be reached or is not fit to run a training."""


class HostKeyMismatchError(EdgeVMError, InvalidInputError):
    """The edge VM presented a host key different from the pinned one."""


class EdgeVMAuthError(EdgeVMError, InvalidInputError):
    """The VM refused the connection's key, or the connection turns host key checking off: only a fixed
    connection cures it, so the task fails at once."""


class EdgeVMNotReadyError(EdgeVMError):
    """One or more readiness checks failed."""


# Stack Hub blob storage
class StackHubError(EdgeTrainingError):
    """A Stack Hub blob storage call or validation failed."""


class LocalityPolicyError(StackHubError, InvalidInputError):
    """The storage endpoint is not inside the configured Stack Hub domain."""


class InvalidPartitionKeyError(StackHubError, InvalidInputError):
    """A partition key would escape its prefix or is malformed."""


class PartitionIncompleteError(StackHubError, InvalidInputError):
    """The partition is missing, lacks its marker, or has empty data files."""


class PartitionMissingError(PartitionIncompleteError):
    """No blob at all under the partition's prefix: the day has no data (yet)."""


class WindowIncompleteError(PartitionIncompleteError):
    """A training window has fewer usable days than ``min_days`` asks for; the message names each gap."""


class SchemaDriftError(StackHubError, InvalidInputError):
    """A data file's header does not match the expected columns."""


class StackHubAuthError(StackHubError, InvalidInputError):
    """The account refused the connection's credentials: retrying with the same key cannot help."""


# Azure ML
class AzureMLError(EdgeTrainingError):
    """An Azure ML call failed or a job ended badly."""


class AzureMLConnectionError(AzureMLError, InvalidInputError):
    """The azureml connection is missing a field or holds an invalid value (not retried: the same
    connection is read again)."""


class AzureMLTransientError(AzureMLError):
    """A call that a retry may cure (no answer, HTTP 408/429/5xx); carries the server's Retry-After."""

    def __init__(self, message: str, *, status_code: int | None = None, retry_after_s: float | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.retry_after_s = retry_after_s


class EvaluationGateError(AzureMLError, InvalidInputError):
    """The quality gate cannot compare: a metric is missing or not a number, in the new model or the
    baseline. The same output gives the same answer, so it fails at once instead of retrying."""


class ModelOutputError(AzureMLError, InvalidInputError):
    """A finished job's output lacks a file the next step needs, or holds it unreadable (not retried)."""


class AzureMLJobExistsError(AzureMLError):
    """AML refused to create a job while one of that name exists (HTTP 409, or 400): another run submitted
    it between this run's look and its request. The caller looks again and follows that job."""


class AzureMLJobFailedError(AzureMLError):
    """The Azure ML job ended Failed, Canceled or NotResponding."""


class AzureMLJobTimeoutError(AzureMLError):
    """The Azure ML job did not finish within its timeout and was canceled."""


class ModelRegistrationError(AzureMLError):
    """A model version could not be registered or found."""


# Container image
class ContainerImageError(EdgeTrainingError):
    """An image build, smoke test or push failed."""


class SmokeTestError(ContainerImageError, InvalidInputError):
    """The built image did not answer /health or /score as expected."""


class RegistryAuthError(ContainerImageError, InvalidInputError):
    """The registry refused the credentials."""


class RegistryPushError(ContainerImageError):
    """The registry did not accept the push, or its digest does not match."""


# Alerts
class AlertDeliveryError(EdgeTrainingError):
    """An alert could not be sent to EDGE_ALERT_TARGET (its text is in the log instead)."""
