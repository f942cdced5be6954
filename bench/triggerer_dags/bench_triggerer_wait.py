"""The triggerer benchmark's DAG (bench/triggerer.py; not in dags/): one mapped task per AML job the benchmark
submitted, each deferring at once to the project's AzureMLJobTrigger, as AzureMLSubmitJobOperator does after its
submit. The jobs come from the run's conf (``{"jobs": [name, ...]}``); the bench submits them itself (through the
project's AzureMLHook, before it triggers the run), so a task start pays no azure-ai-ml import: the benchmark is
about the waits, not the submits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, BaseOperator, task

from edge_training.triggers.azureml import AzureMLJobTrigger

DAG_ID = "bench_triggerer_wait"


class WaitForAzureMLJob(BaseOperator):
    """Defer to AzureMLJobTrigger (default poll policy, log streamed into the task log) for one existing job."""

    template_fields = ("job_name",)

    def __init__(self, *, job_name: str, azureml_conn_id: str = "azureml_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job_name = job_name
        self.azureml_conn_id = azureml_conn_id

    def execute(self, context: Any) -> None:
        self.defer(trigger=AzureMLJobTrigger(job_name=self.job_name, azureml_conn_id=self.azureml_conn_id),
                   method_name="execute_complete")

    def execute_complete(self, context: Any, event: dict[str, Any]) -> None:
        if event.get("status") != "success":
            raise RuntimeError(f"AML job {self.job_name}: {event.get('message')}")


with DAG(DAG_ID, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, max_active_tasks=1000,
         tags=["bench"]) as dag:

    @task
    def job_names(**context: Any) -> list[str]:
        return list(context["dag_run"].conf["jobs"])

    WaitForAzureMLJob.partial(task_id="wait").expand(job_name=job_names())
