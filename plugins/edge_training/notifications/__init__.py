"""Notifiers: alerts for the people who watch the trainings (a task failed, a run is late)."""
