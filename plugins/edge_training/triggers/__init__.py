"""Triggers for the edge training package, one module per service; their events share one vocabulary (events)."""
