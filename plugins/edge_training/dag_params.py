"""The DAGs' trigger-form Params, with schemas Airflow can check cheaply on every parse.

Airflow checks each Param's schema against its metaschema whenever a DAG file is parsed (the DAG
validates its Params' defaults with ``jsonschema.validate``), and then again when a run is triggered.
A schema that names no ``$schema`` is checked against draft 2020-12, whose metaschema is split into
seven vocabularies; draft-07's is one document, quicker to check against. Airflow's work on the Params
was the largest part of parsing ``dags/edge_training.py`` (``bench/overhead.py`` profiles the parse).
The schemas here use nothing newer than draft-07: types, ``minimum``/``maximum``, ``pattern``, ``enum``
and ``format``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

#: The JSON Schema dialect of every form Param.
SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"


def form_param(default: Any, **schema: Any) -> Param:
    """A Param as ``Param(default, **schema)``, its schema in draft-07 (:data:`SCHEMA_DIALECT`)."""
    if "$schema" in schema:
        raise ValueError(f"form_param: the dialect is {SCHEMA_DIALECT}; found $schema {schema['$schema']!r}")
    return Param(default, **schema, **{"$schema": SCHEMA_DIALECT})
