"""Which failures fail the task at once and which back off: the one table, used as every task's ``retry_policy``.

Airflow 3.3 asks a task's ``retry_policy`` (in the worker) about each exception that fails a try, except
``AirflowFailException``, which fails the task at once by itself. The package's own data, trust and
credential errors subclass it already (``InvalidInputError``: Stack Hub's refused key, the registry's
refused password, the edge VM's refused key, schema drift...). This policy classifies what the SDKs raise
(azure-core, azure-ai-ml, requests, the socket layer) by exception type and HTTP status, without wrapping
it, so the task log keeps the original error line, e.g. ``ClientAuthenticationError: Authentication failed``.

A retry waits the task's own ``retry_delay``, growing by ``retry_exponential_backoff`` up to
``max_retry_delay`` (the DAG's ``default_args``): the policy decides whether, not when.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.sdk import RetryAction, RetryDecision, RetryPolicy

from edge_training.retry import TRANSIENT_HTTP_STATUSES

if TYPE_CHECKING:
    from airflow.sdk import Context


@dataclass(frozen=True)
class Rule:
    """Exceptions (by dotted class name, subclasses included) or HTTP statuses that get one action.

    Names, not classes: nothing is imported to build the table (azure-ai-ml takes seconds to import, and a
    DAG file is parsed often); an exception of a class never imported cannot be raised either.

    :param action: ``RetryAction.FAIL`` (no retry) or ``RetryAction.RETRY`` (retry with backoff).
    :param reason: why, logged with the decision ("Retry policy decision ... reason=...").
    :param exceptions: dotted names of exception classes (``module.QualName``).
    :param http_statuses: HTTP statuses of an azure-core ``HttpResponseError`` or a requests ``HTTPError``.
    """

    action: RetryAction
    reason: str
    exceptions: tuple[str, ...] = ()
    http_statuses: frozenset[int] = frozenset()

    def matches(self, exc: BaseException) -> bool:
        if self.exceptions and class_names(exc) & set(self.exceptions):
            return True
        return bool(self.http_statuses) and http_status(exc) in self.http_statuses


#: For each exception, the first rule that matches; across the chain of causes, the deepest exception
#: that a rule matches decides (see ``EdgeRetryPolicy.decide``).
RULES: tuple[Rule, ...] = (
    # An AirflowFailException fails before the policy is asked; listed so that one raised *from* it fails too.
    Rule(
        RetryAction.FAIL,
        "bad input, data, credentials or trust (the package's own errors): a retry meets the same",
        exceptions=("edge_training.exceptions.InvalidInputError",),
    ),
    # Before the credential rule: a token endpoint that answers 503 is down, not refusing.
    Rule(
        RetryAction.RETRY,
        "throttled or a transient service error: retried with exponential backoff",
        exceptions=(
            "edge_training.exceptions.AzureMLTransientError",
            "azure.core.exceptions.ServiceRequestError",
            "azure.core.exceptions.ServiceResponseError",
            "requests.exceptions.ConnectionError",
            "requests.exceptions.Timeout",
            "builtins.ConnectionError",
            "builtins.TimeoutError",
        ),
        http_statuses=TRANSIENT_HTTP_STATUSES,
    ),
    Rule(
        RetryAction.FAIL,
        "the credentials were refused (wrong or expired secret, unknown identity, no role on the resource): "
        "a retry would send the same ones",
        exceptions=("azure.core.exceptions.ClientAuthenticationError",),
        http_statuses=frozenset({401, 403}),
    ),
    Rule(
        RetryAction.FAIL,
        "the request was refused as invalid: the same request fails again",
        exceptions=("azure.ai.ml.exceptions.ValidationException",),
        http_statuses=frozenset({400}),
    ),
    Rule(
        RetryAction.RETRY,
        "the edge VM failed a readiness check: it may recover (sshd restarted, disk freed)",
        exceptions=("edge_training.exceptions.EdgeVMNotReadyError",),
    ),
)


def class_names(exc: BaseException) -> set[str]:
    """Dotted names of the exception's class and its bases."""
    return {f"{cls.__module__}.{cls.__qualname__}" for cls in type(exc).__mro__}


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of an azure-core ``HttpResponseError`` or a requests ``HTTPError``; None otherwise."""
    names = class_names(exc)
    if "azure.core.exceptions.HttpResponseError" in names:
        status = getattr(exc, "status_code", None)
    elif "requests.exceptions.HTTPError" in names:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    else:
        return None
    return status if isinstance(status, int) else None


def causes(exc: BaseException | None) -> Iterator[BaseException]:
    """The exception, then the one it was raised from or while handling, and so on (as a traceback shows)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


class EdgeRetryPolicy(RetryPolicy):
    """Fail at once on refused credentials and invalid requests; back off on throttling and transient
    service errors; anything else takes the task's standard retries.

    :param rules: the table (for each exception, its first matching rule); default ``RULES``.
    """

    def __init__(self, rules: Sequence[Rule] = RULES) -> None:
        self.rules = tuple(rules)

    def decide(self, exception: BaseException) -> RetryDecision:
        """The deepest cause the table knows decides: azure-identity reports a token endpoint it could not
        reach as ClientAuthenticationError raised from ServiceRequestError (down, not refusing), and an
        operator's own error raised from a refused secret is still a refused secret."""
        decision = RetryDecision.default()
        for exc in causes(exception):
            rule = next((r for r in self.rules if r.matches(exc)), None)
            if rule is not None:
                decision = RetryDecision(action=rule.action, reason=f"{type(exc).__name__}: {rule.reason}")
        return decision

    def evaluate(
        self,
        exception: BaseException,
        try_number: int,
        max_tries: int,
        context: Context | None = None,
    ) -> RetryDecision:
        return self.decide(exception)

    def serialize(self) -> dict[str, Any]:
        return {
            "__type": type(self).__name__,
            "rules": [
                {"action": r.action.value, "reason": r.reason, "exceptions": list(r.exceptions),
                 "http_statuses": sorted(r.http_statuses)}
                for r in self.rules
            ],
        }

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> EdgeRetryPolicy:
        return cls([
            Rule(RetryAction(r["action"]), r["reason"], tuple(r["exceptions"]), frozenset(r["http_statuses"]))
            for r in data["rules"]
        ])


#: The policy the DAG gives every task (``default_args["retry_policy"]``); a DAG of your own can too.
EDGE_RETRY_POLICY = EdgeRetryPolicy()
