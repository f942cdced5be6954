"""Airflow operators, hooks and triggers for training Azure ML models on edge compute next to Stack Hub data."""

from __future__ import annotations

__version__ = "0.1.0"
