"""This deployment's Airflow cluster policies.

Airflow imports ``airflow_local_settings`` in every component at start-up, from its config folder or
from the plugins folder (both on its ``sys.path``), so a deployment that uses this project's plugins/
gets these policies with no other step. A deployment with its own ``airflow_local_settings`` adds the
import below to it. ``__all__`` keeps Airflow from taking any other name here as one of its settings.
"""

from edge_training.pool_order import task_instance_mutation_hook

__all__ = ["task_instance_mutation_hook"]
