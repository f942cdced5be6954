"""Airflow's plugins folder entry: the Edge training page (edge_training.ui). Airflow imports every file
in this folder that .airflowignore does not exclude; the package's own modules are excluded there."""

from edge_training.ui.plugin import EdgeTrainingUIPlugin

__all__ = ["EdgeTrainingUIPlugin"]
