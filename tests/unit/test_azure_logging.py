"""The package changes no other library's logging at import, and the Azure clients it builds log HTTP to its own logger.

The promise (plugins/edge_training/hooks/azure_logging.py): importing any module of the package leaves
every non-package logger's level and filters as they were; the BlobServiceClient (sync and aio), the
container clients, the azure-identity credentials and the MLClient service clients the hooks build hand
their HttpLoggingPolicy the package's logger ``edge_training.azure.http``; azure-ai-ml's experimental
notices are dropped by a filter the AML hook attaches when it builds SDK objects. No network is used:
clients are only constructed and their pipelines inspected.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import Connection
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.pipeline.policies import HttpLoggingPolicy
from azure.core.rest import HttpRequest

from edge_training.hooks import azure_logging, azureml_sdk_private
from edge_training.hooks.azure_logging import HTTP_LOGGER, HTTP_LOGGER_NAME
from edge_training.hooks.azureml import AzureMLHook
from edge_training.hooks.stackhub_blob import StackHubBlobHook, StackHubSettings

REPO = Path(__file__).resolve().parents[2]
DOMAIN = "local.azurestack.external"
AZURE_CORE_HTTP_LOGGER = "azure.core.pipeline.policies.http_logging_policy"
BLOB_CONN = Connection(
    conn_id="stackhub_blob",
    conn_type="wasb",
    extra=json.dumps({
        "connection_string": "DefaultEndpointsProtocol=https;AccountName=edgedata;AccountKey=c2VjcmV0;"
                             f"EndpointSuffix={DOMAIN}",
        "stack_hub_domain": DOMAIN,
    }),
)


def _aml_conn(**extra: Any) -> Connection:
    base = {"subscription_id": "sub", "resource_group": "rg", "workspace_name": "ws", "cloud": "public"}
    return Connection(conn_id="azureml_default", conn_type="azureml", extra=json.dumps({**base, **extra}))


def http_logging_policies(obj: Any, *, depth: int = 16) -> list[HttpLoggingPolicy]:
    """Every HttpLoggingPolicy reachable from ``obj`` through attributes, lists and dicts (pipelines inside)."""
    found: list[HttpLoggingPolicy] = []
    seen: set[int] = set()
    stack = [(obj, 0)]
    while stack:
        item, level = stack.pop()
        if id(item) in seen or level > depth or isinstance(item, (str, bytes, int, float, bool, type(None))):
            continue
        seen.add(id(item))
        if isinstance(item, HttpLoggingPolicy):
            found.append(item)
            continue
        if isinstance(item, logging.Logger) or isinstance(item, type):
            continue
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            children = list(item)
        else:
            children = list(getattr(item, "__dict__", {}).values())
        stack.extend((child, level + 1) for child in children)
    return found


def pipeline_http_logging_policies(client: Any) -> list[HttpLoggingPolicy]:
    """The HttpLoggingPolicy of a storage client's own pipeline (SansIO policies are wrapped in runners)."""
    policies = [getattr(p, "_policy", p) for p in client._pipeline._impl_policies]
    return [p for p in policies if isinstance(p, HttpLoggingPolicy)]


# --- import time ---------------------------------------------------------------------------------
_IMPORT_PROBE = textwrap.dedent(
    """
    import importlib, json, logging, pkgutil, sys
    # What the package's modules import anyway, so the loggers they create exist before the snapshot.
    import airflow.sdk, azure.core.pipeline.policies, azure.identity, azure.storage.blob  # noqa: F401
    # (openlineage.client sets a filter on a logger of its own when imported: its doing, not the package's.)
    import openlineage.client  # noqa: F401
    # (the Edge training page is served by Airflow's API server, whose modules create dill's logger.)
    import airflow.api_fastapi.core_api.security  # noqa: F401

    def snapshot():
        manager = logging.Logger.manager
        return {name: (lg.level, [type(f).__qualname__ for f in lg.filters], lg.disabled)
                for name, lg in list(manager.loggerDict.items()) if isinstance(lg, logging.Logger)}

    named = ("azure", "azure.core.pipeline.policies.http_logging_policy", "azure.identity", "azure.ai.ml",
             "azure.ai.ml._utils._experimental", "azure.storage.blob")
    before = snapshot()
    import edge_training
    modules = [m.name for m in pkgutil.walk_packages(edge_training.__path__, "edge_training.")]
    for name in modules:
        importlib.import_module(name)
    after = snapshot()
    print(json.dumps({"modules": modules, "before": before, "after": after,
                      "named": {n: logging.getLogger(n).level for n in named}}))
    """
)


@pytest.fixture(scope="module")
def import_probe() -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")])}
    proc = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_importing_every_package_module_changes_no_other_librarys_logger(import_probe):
    assert "edge_training.hooks.azureml" in import_probe["modules"]
    assert "edge_training.hooks.stackhub_blob" in import_probe["modules"]
    before, after = import_probe["before"], import_probe["after"]
    changed = {name: (before[name], state) for name, state in after.items()
               if name in before and before[name] != state and not name.startswith("edge_training")}
    assert changed == {}
    # Loggers first created by the package's import (a getLogger of another library's name) stay untouched.
    created = {name: state for name, state in after.items()
               if name not in before and not name.startswith("edge_training") and state != [0, [], False]}
    assert created == {}
    assert import_probe["named"] == dict.fromkeys(import_probe["named"], logging.NOTSET)


def test_the_package_logger_is_quiet_by_default():
    assert HTTP_LOGGER.name == HTTP_LOGGER_NAME == "edge_training.azure.http"
    assert HTTP_LOGGER.level == logging.WARNING
    assert not HTTP_LOGGER.isEnabledFor(logging.INFO)


# --- Stack Hub blob clients ----------------------------------------------------------------------
@pytest.fixture
def blob_hook(monkeypatch) -> StackHubBlobHook:
    monkeypatch.setattr(StackHubBlobHook, "get_connection", classmethod(lambda cls, conn_id: BLOB_CONN))
    return StackHubBlobHook()


def test_blob_clients_the_hook_builds_log_http_to_the_package_logger(blob_hook):
    service = blob_hook.get_conn()
    container = blob_hook.container_client("data")
    blob = container.get_blob_client("part-0000.csv")
    for client in (service, container, blob):
        policies = pipeline_http_logging_policies(client)
        assert policies, f"{type(client).__name__} has no HttpLoggingPolicy"
        assert all(p.logger is HTTP_LOGGER for p in policies)


async def test_the_triggers_async_blob_client_logs_http_to_the_package_logger():
    client = StackHubSettings.from_extra("stackhub_blob", BLOB_CONN.extra_dejson).async_service_client()
    try:
        policies = pipeline_http_logging_policies(client)
        assert policies and all(p.logger is HTTP_LOGGER for p in policies)
    finally:
        await client.close()


def test_a_request_through_the_hooks_client_writes_nothing_at_info_until_the_package_logger_allows(
    blob_hook, caplog
):
    (policy,) = pipeline_http_logging_policies(blob_hook.get_conn())
    caplog.set_level(logging.INFO)  # root, and so azure-core's own logger, at INFO

    def send() -> None:
        request = HttpRequest("GET", f"https://edgedata.blob.{DOMAIN}/data?restype=container")
        policy.on_request(PipelineRequest(request, PipelineContext(None)))

    send()
    assert not [r for r in caplog.records if "Request URL" in r.getMessage()]
    caplog.set_level(logging.INFO, logger=HTTP_LOGGER_NAME)  # what a deployment does to see the requests
    send()
    assert [r.name for r in caplog.records if "Request URL" in r.getMessage()] == [HTTP_LOGGER_NAME]


# --- azure-identity credentials and MLClient -----------------------------------------------------
@pytest.mark.parametrize(
    "extra",
    [
        {"auth_type": "service_principal", "tenant_id": "t", "client_id": "c", "client_secret": "s3cret-value"},
        {"auth_type": "managed_identity", "client_id": "c"},
        {"auth_type": "default", "tenant_id": "t"},
        {"auth_type": "workload_identity", "tenant_id": "t", "client_id": "c", "federated_token_file": "TOKEN"},
    ],
    ids=lambda extra: extra["auth_type"],
)
def test_credentials_the_aml_hook_builds_log_http_to_the_package_logger(extra, tmp_path):
    if extra.get("federated_token_file"):
        token = tmp_path / "token"
        token.write_text("header.payload.signature")
        extra = {**extra, "federated_token_file": str(token)}
    hook = AzureMLHook(connection=_aml_conn(**extra))
    credential = hook._build_credential()
    try:
        policies = http_logging_policies(credential)
        assert policies, f"no HttpLoggingPolicy found under {type(credential).__name__}"
        assert all(p.logger is HTTP_LOGGER for p in policies)
    finally:
        credential.close()


def test_mlclient_service_clients_log_http_to_the_package_logger():
    hook = AzureMLHook(connection=_aml_conn(auth_type="service_principal", tenant_id="t", client_id="c",
                                            client_secret="s3cret-value"))
    try:
        client = hook.get_conn()
        # The run-history client the hook reads job details and logs through is built lazily, from the
        # kwargs MLClient kept; give it a workspace API URL so it is built without a discovery request.
        client.jobs._api_base_url = "https://ws.api.example.invalid"
        assert client.jobs._runs_operations is not None
        # The one MLClient builds without its kwargs: the ARM deployments client for preflight, which
        # this package never calls (documented in azure_logging).
        service_clients = [c for c in azureml_sdk_private.mlclient_http_closables(client)
                           if c is not None and c is not client._preflight]
        checked = 0
        for service_client in service_clients:
            policies = http_logging_policies(service_client)
            assert all(p.logger is HTTP_LOGGER for p in policies), type(service_client).__name__
            checked += len(policies)
        # Every generated service client (15 in azure-ai-ml 1.35) plus the run-history one.
        assert checked >= 10
        run_history = client.jobs._runs_operations._operation._client
        assert run_history in service_clients
        run_history_policies = http_logging_policies(run_history)
        assert run_history_policies and all(p.logger is HTTP_LOGGER for p in run_history_policies)
    finally:
        hook.close()


# --- azure-ai-ml's experimental notices -----------------------------------------------------------
def test_the_notice_text_matches_the_sdk_messages():
    from azure.ai.ml.constants import _common as sdk_constants

    for message in (sdk_constants.EXPERIMENTAL_CLASS_MESSAGE, sdk_constants.EXPERIMENTAL_METHOD_MESSAGE):
        assert azureml_sdk_private.EXPERIMENTAL_NOTICE_TEXT in message


def test_the_experimental_notice_filter_drops_only_the_notices_and_is_attached_once(caplog):
    sdk_logger = logging.getLogger(azureml_sdk_private.EXPERIMENTAL_NOTICE_LOGGER)
    level = sdk_logger.level
    try:
        azure_logging.quiet_experimental_notices()
        azure_logging.quiet_experimental_notices()
        ours = [f for f in sdk_logger.filters if isinstance(f, azure_logging.ExperimentalNoticeFilter)]
        assert len(ours) == 1
        assert sdk_logger.level == level
        with caplog.at_level(logging.WARNING):
            sdk_logger.warning("Class JobService: This is an experimental class, and may change at any time.")
            sdk_logger.warning("Method stream: This is an experimental method, and may change at any time.")
            sdk_logger.warning("something else the SDK might say")
        assert [r.getMessage() for r in caplog.records] == ["something else the SDK might say"]
    finally:
        for f in list(sdk_logger.filters):
            if isinstance(f, azure_logging.ExperimentalNoticeFilter):
                sdk_logger.removeFilter(f)


def test_the_aml_hook_attaches_the_notice_filter_when_it_builds_sdk_objects(tmp_path):
    sdk_logger = logging.getLogger(azureml_sdk_private.EXPERIMENTAL_NOTICE_LOGGER)

    def attached() -> bool:
        return any(isinstance(f, azure_logging.ExperimentalNoticeFilter) for f in sdk_logger.filters)

    for f in list(sdk_logger.filters):
        if isinstance(f, azure_logging.ExperimentalNoticeFilter):
            sdk_logger.removeFilter(f)
    assert not attached()
    hook = AzureMLHook(connection=_aml_conn(auth_type="service_principal", tenant_id="t", client_id="c",
                                            client_secret="s3cret-value"))
    try:
        hook.get_conn()
        assert attached()
    finally:
        hook.close()
