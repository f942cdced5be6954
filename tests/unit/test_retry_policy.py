"""Retries by exception type: refused credentials and invalid requests fail a task at once, throttling and
transient service errors back off, anything else takes the task's standard retries.

The table is checked on the exceptions the SDKs and the package raise. Its effect is checked through
Airflow's own task runner (``inprocess_airflow``): the DAG's ``submit_training``, on the real
``AzureMLHook`` whose identity provider refuses the secret, fails on its first try although retries
remain, with the SDK's original error; throttled, it is up for retry with the task's own backoff.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import RetryAction
from airflow.sdk.exceptions import AirflowFailException
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)

from edge_training import exceptions as errors
from edge_training.hooks.azureml import AzureMLHook
from edge_training.operators import azureml as azureml_operators
from edge_training.operators.retry_policy import EDGE_RETRY_POLICY, EdgeRetryPolicy
from tests.unit.inprocess_airflow import InMemoryExecutionAPI

REPO = Path(__file__).resolve().parents[2]
RUN_ID = "manual__2026-11-10T08:00:00+00:00"
AADSTS = ("Authentication failed: AADSTS7000215: Invalid client secret provided. Ensure the secret being sent "
          "in the request is the client secret value, not the client secret ID")


class _Response:
    """The parts of an azure-core HTTP response an ``HttpResponseError`` reads."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status_code, self.reason, self.headers = status, "", headers or {}
        self.content_type = "application/json"

    def text(self, encoding: str | None = None) -> str:
        return ""

    def body(self) -> bytes:
        return b""


def http_error(status: int, message: str = "", **headers: str) -> HttpResponseError:
    return HttpResponseError(message=message or f"HTTP {status}", response=_Response(status, headers))


class WorkspaceRefusingTheSecret(AzureMLHook):
    """The real hook on a workspace whose identity provider refuses the connection's secret: the SDK's
    first call raises ClientAuthenticationError, as azure-identity does with AADSTS7000215."""

    def get_conn(self):
        raise ClientAuthenticationError(message=AADSTS)


class ThrottlingWorkspace(AzureMLHook):
    """The real hook on a workspace that answers 429 with Retry-After (the hook turns that into
    AzureMLTransientError)."""

    def get_conn(self):
        def throttled(*_, **__):
            raise http_error(429, "Too Many Requests", **{"Retry-After": "7"})

        return type("MLClient", (), {"jobs": type("Jobs", (), {"get": staticmethod(throttled)})()})()


@pytest.fixture(scope="module")
def dag():
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags["edge_training"]


@pytest.fixture(autouse=True)
def alerts_to_the_log(monkeypatch):
    monkeypatch.delenv("EDGE_ALERT_TARGET", raising=False)


def a_run() -> InMemoryExecutionAPI:
    """A run of 2026-11-10 whose validate_partition has pushed its outputs."""
    api = InMemoryExecutionAPI(dag_id="edge_training", run_id=RUN_ID, partition_key="2026-11-10T00:00:00")
    api.push("validate_partition", "fingerprint", "sha256-9f2c4e1ab37d0c55e2")
    uri = "azureml://datastores/stackhub_data/paths/telemetry/date=2026-11-10/"
    api.push("validate_partition", "data_uri", uri)
    api.push("validate_partition", "job_inputs", {"data": {"type": "uri_folder", "path": uri}})
    api.push("validate_partition", "data_days", "2026-11-10")
    api.push("validate_partition", "missing_days", "")
    return api


# --- the effect, through Airflow's task runner -------------------------------------------------------
def test_a_refused_secret_fails_submit_training_at_once_with_the_sdks_own_error(dag, monkeypatch):
    monkeypatch.setattr(azureml_operators, "AzureMLHook", WorkspaceRefusingTheSecret)
    api = a_run()

    outcome = api.run(dag.get_task("submit_training"), try_number=1)

    assert api.max_tries == 2  # two retries were left: the policy, not the count, failed it
    assert outcome.state == "failed" and outcome.reported["state"] == "failed"
    assert type(outcome.error) is ClientAuthenticationError  # not wrapped: the log line is the SDK's own
    assert str(outcome.error) == AADSTS


def test_throttling_leaves_submit_training_up_for_retry_with_the_tasks_backoff(dag, monkeypatch):
    monkeypatch.setattr(azureml_operators, "AzureMLHook", ThrottlingWorkspace)

    outcome = a_run().run(dag.get_task("submit_training"), try_number=1)

    assert outcome.state == "up_for_retry"
    assert isinstance(outcome.error, errors.AzureMLTransientError) and "HTTP 429" in str(outcome.error)
    assert "throttled" in outcome.reported["retry_reason"]
    # No delay of the policy's own: the scheduler waits the task's exponential backoff.
    assert outcome.reported["retry_delay_seconds"] is None
    task = dag.get_task("submit_training")
    assert (task.retry_delay, task.retry_exponential_backoff, task.max_retry_delay) == (
        timedelta(seconds=30), 2.0, timedelta(minutes=10))


def test_without_the_policy_the_same_refusal_would_spend_its_retries(dag, monkeypatch):
    """What the fault battery saw before the policy: a wrong AML secret left submit_training up_for_retry."""
    monkeypatch.setattr(azureml_operators, "AzureMLHook", WorkspaceRefusingTheSecret)
    task = dag.get_task("submit_training")
    monkeypatch.setattr(task, "retry_policy", None)

    assert a_run().run(task, try_number=1).state == "up_for_retry"


def test_every_task_of_the_dag_carries_the_policy(dag):
    assert {t.task_id for t in dag.tasks if t.retry_policy is not EDGE_RETRY_POLICY} == set()


# --- the table ---------------------------------------------------------------------------------------
def _raised_from(outer: BaseException, cause: BaseException) -> BaseException:
    try:
        raise outer from cause
    except BaseException as err:  # noqa: BLE001
        return err


@pytest.mark.parametrize(
    ("exception", "action"),
    [
        (ClientAuthenticationError(message=AADSTS), RetryAction.FAIL),
        (http_error(401), RetryAction.FAIL),
        (http_error(403, "AuthorizationFailed: no role assignment on the workspace"), RetryAction.FAIL),
        (http_error(400, "UserError: environment 'edge-training-base:9' is invalid"), RetryAction.FAIL),
        (_raised_from(errors.ModelRegistrationError("Registering AML model failed"),
                      ClientAuthenticationError(message=AADSTS)), RetryAction.FAIL),
        # azure-identity's report of a token endpoint it could not reach, or that answered 503: down, not refusing.
        (_raised_from(ClientAuthenticationError(message="Authentication failed: Connection refused"),
                      ServiceRequestError("Failed to establish a new connection: [Errno 111]")), RetryAction.RETRY),
        (ClientAuthenticationError(message="Authentication failed: 503", response=_Response(503)), RetryAction.RETRY),
        (errors.AzureMLTransientError("AML answered HTTP 429", status_code=429, retry_after_s=7), RetryAction.RETRY),
        (http_error(503), RetryAction.RETRY),
        (http_error(429), RetryAction.RETRY),
        (ServiceRequestError("Connection refused"), RetryAction.RETRY),
        (ConnectionResetError(104, "Connection reset by peer"), RetryAction.RETRY),
        (TimeoutError("timed out"), RetryAction.RETRY),
        (errors.EdgeVMNotReadyError("edge VM is not ready: 1 check(s) failed: ssh"), RetryAction.RETRY),
        (ResourceNotFoundError(message="compute 'edge-vm' not found"), RetryAction.DEFAULT),
        (errors.AzureMLJobFailedError("AML job failed"), RetryAction.DEFAULT),
        (errors.RegistryPushError("registry did not accept the push"), RetryAction.DEFAULT),
        (ValueError("something else"), RetryAction.DEFAULT),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_the_table(exception, action):
    decision = EDGE_RETRY_POLICY.evaluate(exception, try_number=1, max_tries=3)
    assert decision.action is action
    if action is not RetryAction.DEFAULT:
        assert decision.reason  # logged by the task runner beside the decision


@pytest.mark.parametrize(
    "error",
    [errors.StackHubAuthError, errors.RegistryAuthError, errors.EdgeVMAuthError, errors.HostKeyMismatchError,
     errors.AzureMLConnectionError, errors.SchemaDriftError, errors.PartitionIncompleteError,
     errors.LocalityPolicyError],
)
def test_the_packages_credential_and_data_errors_fail_by_themselves(error):
    """Airflow fails an AirflowFailException before asking a policy; the policy's table lists them too."""
    assert issubclass(error, AirflowFailException)
    assert EDGE_RETRY_POLICY.evaluate(error("x"), 1, 3).action is RetryAction.FAIL


@pytest.mark.parametrize("error", [errors.EdgeVMNotReadyError, errors.AzureMLTransientError, errors.RegistryPushError,
                                   errors.AzureMLJobFailedError, errors.ContainerImageError])
def test_errors_a_retry_may_cure_are_not_fail_exceptions(error):
    assert not issubclass(error, AirflowFailException)


def test_the_policy_serializes_to_itself():
    data = EDGE_RETRY_POLICY.serialize()
    again = EdgeRetryPolicy.deserialize(data)
    assert again.serialize() == data
