"""The model's Airflow asset, and the one place its events are written.

edge_training's push_image emits the event once the model version is registered and its image is in the
registry (the extra names the model, the version and the image by digest), with the run's partition key;
edge_deploy is scheduled on it, one deploy run per event.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

from airflow.sdk import Asset, AssetAlias

MODEL_URI_PREFIX = "azureml://models/"

log = logging.getLogger(__name__)


def configured_model_name() -> str:
    """The model this deployment trains: ``EDGE_MODEL_NAME`` (read by the DAGs and the Edge training page)."""
    return os.environ.get("EDGE_MODEL_NAME", "equipment-failure")


def model_asset(model_name: str) -> Asset:
    """The Asset a model's shippable versions update (``azureml://models/<name>``)."""
    uri = f"{MODEL_URI_PREFIX}{model_name}"
    return Asset(name=uri, uri=uri)


def partition_of(context: Mapping[str, Any]) -> str | None:
    """The run's partition key, if it has one."""
    run = context.get("dag_run")
    key = getattr(run, "partition_key", None) if run is not None else None
    return str(key) if key else None


def emit_model_event(context: Mapping[str, Any], outlets: Iterable[Any], model_name: str,
                     extra: Mapping[str, Any]) -> None:
    """An event for ``model_name``'s asset: on a static outlet that is that asset (with the run's partition
    key), else through an AssetAlias outlet (alias events carry no partition key). A static outlet that
    is another model's asset gets no event: this run did not change it."""
    outlet_events = context.get("outlet_events")
    if outlet_events is None:
        return
    outlets = list(outlets)
    own = model_asset(model_name)
    static = [o for o in outlets if isinstance(o, Asset)]
    partition_key = partition_of(context)
    for outlet in static:
        if outlet.uri.startswith(MODEL_URI_PREFIX) and outlet.uri != own.uri:
            log.info("Outlet %s is another model's asset than %s: no event for it", outlet.uri, own.uri)
            continue
        event = outlet_events[outlet]
        event.extra.update(extra)
        if partition_key:
            event.add_partitions(partition_key)
    if not any(o.uri == own.uri for o in static):
        for alias in (o for o in outlets if isinstance(o, AssetAlias)):
            outlet_events[alias].add(own, extra=dict(extra))
