"""Extra links to the AML job and model pages, stored in XCom while the task runs."""

from __future__ import annotations

from edge_training.links import XComUrlLink


class AzureMLJobLink(XComUrlLink):
    name = "Azure ML job"
    key = "azureml_job_url"


class AzureMLModelLink(XComUrlLink):
    name = "Azure ML model"
    key = "azureml_model_url"
