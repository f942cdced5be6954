"""The quality gate: let a trained model through only if it is not worse than the one in production.

Kept apart from the job and registration operators because it is a decision, not an AML job: a pure
policy (``gate_decision``, baseline choice) with a thin operator that reads the metrics and skips.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, SkipMixin

from edge_training.exceptions import EvaluationGateError
from edge_training.hooks.azureml import DEFAULT_CONN_ID, AzureMLHook
from edge_training.operators.arguments import number

if TYPE_CHECKING:
    from airflow.sdk import Context

BASELINE_POLICIES = ("production_tag", "stage", "latest")
#: The tags that mark the production version under the ``production_tag`` policy (the default baseline).
PRODUCTION_TAG = {"stage": "production"}


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str
    metric: str
    new_value: float | None
    baseline_value: float | None
    baseline_version: str | None
    tolerance: float
    higher_is_better: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _metric(metrics: Mapping[str, Any], name: str, owner: str) -> float:
    if name not in metrics or metrics[name] is None:
        numeric = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)))
        raise EvaluationGateError(f"{owner}: expected metric {name!r}, found only {numeric}")
    try:
        value = float(metrics[name])
    except (TypeError, ValueError) as err:
        raise EvaluationGateError(f"{owner}: metric {name!r} must be a number, found {metrics[name]!r}") from err
    if math.isnan(value):
        raise EvaluationGateError(f"{owner}: metric {name!r} must be a number, found NaN")
    return value


def gate_decision(
    *,
    new_metrics: Mapping[str, Any],
    baseline_metrics: Mapping[str, Any] | None,
    baseline_version: str | None,
    metric: str,
    tolerance: float,
    higher_is_better: bool = True,
    new_owner: str = "new model",
) -> GateDecision:
    """Pass unless the new model is worse than the baseline by more than ``tolerance``."""
    if tolerance < 0:
        raise EvaluationGateError(f"gate tolerance must be >= 0, found {tolerance}")
    new_value = _metric(new_metrics, metric, new_owner)
    if baseline_metrics is None:
        return GateDecision(True, "no production model yet", metric, new_value, None, None, tolerance, higher_is_better)
    base_value = _metric(baseline_metrics, metric, f"baseline model version {baseline_version}")
    worse_by = (base_value - new_value) if higher_is_better else (new_value - base_value)
    if worse_by > tolerance + 1e-12:
        reason = (
            f"{metric} {new_value:.4f} is worse than version {baseline_version}'s {base_value:.4f} by "
            f"{worse_by:.4f}, more than the tolerance {tolerance:.4f}"
        )
        return GateDecision(False, reason, metric, new_value, base_value, baseline_version, tolerance, higher_is_better)
    reason = f"{metric} {new_value:.4f} vs version {baseline_version}'s {base_value:.4f} (tolerance {tolerance:.4f})"
    return GateDecision(True, reason, metric, new_value, base_value, baseline_version, tolerance, higher_is_better)


def model_metrics_from_tags(tags: Mapping[str, Any]) -> dict[str, Any] | None:
    """Metrics stored on a model version by AzureMLRegisterModelOperator (the ``metrics`` tag, JSON)."""
    raw = tags.get("metrics")
    if not raw:
        return None
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


class EvaluateGateOperator(BaseOperator, SkipMixin):
    """Let a model through only if it is not worse than the one in production.

    Reads ``metrics.json`` from the training job's model output and compares ``primary_metric`` with
    the baseline version of ``model_name``, chosen by ``baseline_policy``: ``production_tag`` (the
    newest version tagged ``stage=production``, tag configurable), ``stage`` (AML's model stage
    ``Production``), or ``latest`` (the newest version). No baseline: pass. Worse by more than
    ``tolerance``: the direct downstream tasks are skipped (a clear skip, not a failure; trigger
    rules carry it further) and the decision is still pushed to XCom. Returns the decision dict
    (``passed``, ``reason``, values...). The baseline's metrics are its ``metrics`` tag, as
    AzureMLRegisterModelOperator writes it.

    :param job_name: AML job whose model output holds the new model's metrics (templated).
    :param model_name: AML model whose versions the baseline is chosen from (templated).
    :param primary_metric: the metric compared, a key of the metrics (templated).
    :param tolerance: how much worse than the baseline is still let through, in the metric's own units
        (templated, a number >= 0).
    :param higher_is_better: False for a metric where lower is better (a loss, an error rate).
    :param baseline_policy: ``production_tag``, ``stage`` or ``latest``, as above (templated).
    :param baseline_tag: tags the baseline must carry under ``production_tag``; None:
        ``{"stage": "production"}`` (templated).
    :param model_output: the job output holding the metrics file (templated).
    :param metrics_file: file name of the metrics JSON in ``model_output`` (templated).
    :param azureml_conn_id: Airflow connection of the AML workspace.
    """

    template_fields: Sequence[str] = (
        "job_name",
        "model_name",
        "primary_metric",
        "tolerance",
        "baseline_policy",
        "baseline_tag",
        "model_output",
        "metrics_file",
    )
    ui_color = "#fff2cc"

    def __init__(
        self,
        *,
        job_name: str,
        model_name: str,
        primary_metric: str = "roc_auc",
        tolerance: float = 0.0,
        higher_is_better: bool = True,
        baseline_policy: str = "production_tag",
        baseline_tag: Mapping[str, str] | None = None,
        model_output: str = "model",
        metrics_file: str = "metrics.json",
        azureml_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_name = job_name
        self.model_name = model_name
        self.primary_metric = primary_metric
        self.tolerance = tolerance
        self.higher_is_better = higher_is_better
        self.baseline_policy = baseline_policy
        self.baseline_tag = dict(baseline_tag or PRODUCTION_TAG)
        self.model_output = model_output
        self.metrics_file = metrics_file
        self.azureml_conn_id = azureml_conn_id

    def _baseline(self, hook: AzureMLHook) -> Any | None:
        policy = self.baseline_policy
        if policy not in BASELINE_POLICIES:
            raise EvaluationGateError(
                f"baseline_policy must be one of {', '.join(BASELINE_POLICIES)}, found {policy!r}"
            )
        versions = hook.list_model_versions(self.model_name)
        if policy == "latest":
            return versions[0] if versions else None
        if policy == "stage":
            return next((v for v in versions if str(getattr(v, "stage", "") or "").lower() == "production"), None)
        wanted = self.baseline_tag.items()
        return next(
            (v for v in versions if all(str((v.tags or {}).get(k)) == str(val) for k, val in wanted)),
            None,
        )

    @cached_property
    def hook(self) -> AzureMLHook:
        return AzureMLHook(azureml_conn_id=self.azureml_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        with self.hook as hook:
            new_metrics = hook.read_job_metrics(
                self.job_name, output_name=self.model_output, file_name=self.metrics_file
            )
            baseline = self._baseline(hook)
            baseline_metrics = None
            if baseline is not None:
                baseline_metrics = model_metrics_from_tags(baseline.tags or {})
                if baseline_metrics is None:
                    raise EvaluationGateError(
                        f"baseline model {self.model_name} version {baseline.version}: expected a 'metrics' tag "
                        f"(JSON) to compare {self.primary_metric!r} with, found tags {sorted((baseline.tags or {}))}"
                    )
        decision = gate_decision(
            new_metrics=new_metrics,
            baseline_metrics=baseline_metrics,
            baseline_version=str(baseline.version) if baseline is not None else None,
            metric=self.primary_metric,
            tolerance=number(self, "tolerance", self.tolerance, minimum=0),
            higher_is_better=self.higher_is_better,
            new_owner=f"AML job {self.job_name}",
        )
        result = {**decision.to_dict(), "job_name": self.job_name, "model_name": self.model_name}
        if decision.passed:
            self.log.info("Gate passed: %s", decision.reason)
            return result
        self.log.warning("Gate closed, skipping %s: %s", sorted(self.downstream_task_ids), decision.reason)
        # skip() ends execute with an exception, so the decision goes to XCom by hand first.
        context["ti"].xcom_push(key="return_value", value=result)
        # Only the direct downstream: trigger rules carry the skip on (a none_failed summary still runs).
        self.skip(ti=context["ti"], tasks=self.downstream_list)
        return result
