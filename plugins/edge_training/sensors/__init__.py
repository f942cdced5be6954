"""Sensors for the edge training package, one module per service."""
