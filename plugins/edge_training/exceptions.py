"""Domain exceptions. Messages name the object, what was expected and what was found."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException


class EdgeTrainingError(AirflowException):
    """Base of every error raised by the edge training package."""


# Edge VM (SSH)
class EdgeVMError(EdgeTrainingError):
    """The edge VM cannot be reached or is not fit to run a training."""


class HostKeyMismatchError(EdgeVMError):
    """The edge VM presented a host key different from the pinned one."""


class EdgeVMNotReadyError(EdgeVMError):
    """One or more readiness checks failed."""


# Stack Hub blob storage
class StackHubError(EdgeTrainingError):
    """A Stack Hub blob storage call or validation failed."""


class LocalityPolicyError(StackHubError):
    """The storage endpoint is not inside the configured Stack Hub domain."""


class InvalidPartitionKeyError(StackHubError):
    """A partition key would escape its prefix or is malformed."""


class PartitionIncompleteError(StackHubError):
    """The partition is missing, lacks its marker, or has empty data files."""


class SchemaDriftError(StackHubError):
    """A data file's header does not match the expected columns."""


# Azure ML
class AzureMLError(EdgeTrainingError):
    """An Azure ML call failed or a job ended badly."""


class AzureMLJobFailedError(AzureMLError):
    """The Azure ML job ended Failed, Canceled or NotResponding."""


class AzureMLJobTimeoutError(AzureMLError):
    """The Azure ML job did not finish within its timeout and was canceled."""


class ModelRegistrationError(AzureMLError):
    """A model version could not be registered or found."""


# Container image
class ContainerImageError(EdgeTrainingError):
    """An image build, smoke test or push failed."""


class SmokeTestError(ContainerImageError):
    """The built image did not answer /health or /score as expected."""


class RegistryAuthError(ContainerImageError):
    """The registry refused the credentials."""


class RegistryPushError(ContainerImageError):
    """The registry did not accept the push, or its digest does not match."""
