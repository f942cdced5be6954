"""Provider info, so Airflow knows this package's connection types and extra links without a plugin."""

from __future__ import annotations


def get_provider_info() -> dict:
    # Connection types and their form fields are added by the modules that own them (see hooks/).
    from edge_training.hooks import connection_types

    return {
        "package-name": "edge-training",
        "name": "Edge training",
        "description": "Train Azure ML models on edge compute next to Azure Stack Hub data.",
        "versions": ["0.1.0"],
        "connection-types": connection_types(),
        # Operators declare their links (operator_extra_links), which is all Airflow 3 needs; listing
        # them here also lets the UI resolve them for serialized DAGs from other processes.
        "extra-links": [
            "edge_training.links.azureml.AzureMLJobLink",
            "edge_training.links.azureml.AzureMLModelLink",
            "edge_training.links.container_image.ContainerImageLink",
        ],
        # The alert notifier, so DAGs of your own find it among the installed notifiers.
        "notifications": ["edge_training.notifications.alerts.EdgeAlertNotifier"],
    }
