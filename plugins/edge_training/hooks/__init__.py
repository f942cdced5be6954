"""Hooks: one module per service. They hold SDK calls, status vocabularies and validation."""

from __future__ import annotations


def connection_types() -> list[dict]:
    """Connection types declared by this package's hooks, for provider info.

    Each hook module that defines a connection type exposes ``CONNECTION_TYPE`` (a provider-info
    ``connection-types`` entry, with ``conn-fields`` and ``ui-field-behaviour``).
    """
    import importlib

    found = []
    for name in ("azureml",):
        try:
            module = importlib.import_module(f"edge_training.hooks.{name}")
        except ImportError:
            continue
        entry = getattr(module, "CONNECTION_TYPE", None)
        if entry:
            found.append(entry)
    return found
