"""The Airflow plugin that serves the Edge training page and puts it in the UI's navigation."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

#: Where the API server mounts the page's app, and the UI route that shows it inside Airflow's frame.
URL_PREFIX = "/edge-training"
UI_ROUTE = "edge-training"


class EdgeTrainingUIPlugin(AirflowPlugin):
    """Mounts :mod:`edge_training.ui.app` in the API server, with a navigation entry in the Airflow UI."""

    name = "edge_training_ui"

    @property
    def fastapi_apps(self):  # imported only where the API server asks for it
        from edge_training.ui.app import app

        return [{"app": app, "url_prefix": URL_PREFIX, "name": "Edge training"}]

    external_views = [
        {
            "name": "Edge training",
            "href": f"{URL_PREFIX}/",
            "url_route": UI_ROUTE,
            "destination": "nav",
            "category": "browse",
        }
    ]
