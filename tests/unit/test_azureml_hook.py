"""Pure logic of the AML hook: connection parsing, job names, polling policy, log splitting."""

from __future__ import annotations

import json
import random
import re

import pytest

from edge_training.exceptions import AzureMLConnectionError, AzureMLError
from edge_training.hooks.azureml import (
    FAILED_STATUSES,
    IN_PROGRESS_STATUSES,
    TERMINAL_STATUSES,
    JobRunInfo,
    pick_log_file,
    split_complete_lines,
)
from edge_training.hooks.azureml_connection import (
    CONNECTION_TYPE,
    CUSTOM_CLOUD_KEYS,
    AzureMLConnectionConfig,
    custom_cloud_name,
    parse_connection,
)
from edge_training.hooks.azureml_naming import JOB_NAME_MAX, attempt_name, build_job_name
from edge_training.hooks.azureml_polling import PollPolicy

METADATA = {k: "https://management.local.azurestack.external:47143/" for k in CUSTOM_CLOUD_KEYS}
METADATA["storage_endpoint"] = "local.azurestack.external:47102"
SP_EXTRA = {
    "subscription_id": "sub",
    "resource_group": "rg",
    "workspace_name": "ws",
    "tenant_id": "tenant",
    "auth_type": "service_principal",
    "client_id": "cid",
    "client_secret": "s3cret-value",
    "cloud": "custom",
    "cloud_name": "EdgeDevStack",
    "cloud_metadata": METADATA,
    "ca_bundle": "/x/ca.crt",
}

VALID_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,254}$")


# --- status vocabulary ---------------------------------------------------------------------------
def test_status_sets_cover_the_vocabulary_without_overlap():
    vocabulary = {
        "NotStarted", "Starting", "Provisioning", "Preparing", "Queued", "Running", "Finalizing",
        "CancelRequested", "Completed", "Failed", "Canceled", "NotResponding", "Paused", "Unknown",
    }
    assert TERMINAL_STATUSES | IN_PROGRESS_STATUSES == vocabulary
    assert not TERMINAL_STATUSES & IN_PROGRESS_STATUSES
    assert FAILED_STATUSES < TERMINAL_STATUSES
    assert "Completed" not in FAILED_STATUSES
    assert {"Failed", "Canceled", "NotResponding"} <= FAILED_STATUSES


# --- connection parsing --------------------------------------------------------------------------
def test_custom_cloud_connection_parses_with_a_unique_cloud_name():
    cfg = parse_connection("azureml_default", extra=SP_EXTRA)
    assert (cfg.subscription_id, cfg.resource_group, cfg.workspace_name) == ("sub", "rg", "ws")
    assert cfg.is_custom_cloud and cfg.cloud.startswith("EdgeDevStack") and cfg.cloud != "EdgeDevStack"
    assert cfg.authority == METADATA["active_directory"]
    assert cfg.ca_bundle == "/x/ca.crt"
    assert "s3cret-value" not in repr(cfg)


def test_custom_cloud_name_differs_per_endpoint_and_is_stable():
    other = dict(METADATA, resource_manager="https://other.example:443/")
    assert custom_cloud_name("Edge", METADATA) == custom_cloud_name("Edge", dict(METADATA))
    assert custom_cloud_name("Edge", METADATA) != custom_cloud_name("Edge", other)


def test_login_and_password_win_over_extra_and_ui_prefixed_fields_are_read():
    extra = {f"extra__azureml__{k}": v for k, v in SP_EXTRA.items() if k not in ("client_id", "client_secret")}
    cfg = parse_connection("c", extra=extra, login="login-id", password="pw")
    assert (cfg.client_id, cfg.client_secret, cfg.workspace_name) == ("login-id", "pw", "ws")


def test_cloud_metadata_may_be_json_text():
    cfg = parse_connection("c", extra=dict(SP_EXTRA, cloud_metadata=json.dumps(METADATA)))
    assert cfg.cloud_metadata == METADATA


@pytest.mark.parametrize(
    ("cloud", "expected", "authority"),
    [
        ("public", "AzureCloud", None),
        ("AzureCloud", "AzureCloud", None),
        ("china", "AzureChinaCloud", "login.chinacloudapi.cn"),
        ("AzureUSGovernment", "AzureUSGovernment", "login.microsoftonline.us"),
    ],
)
def test_public_and_sovereign_clouds(cloud, expected, authority):
    extra = {k: v for k, v in SP_EXTRA.items() if k not in ("cloud_metadata", "cloud_name")}
    cfg = parse_connection("c", extra=dict(extra, cloud=cloud))
    assert cfg.cloud == expected and not cfg.is_custom_cloud and cfg.authority == authority


@pytest.mark.parametrize("auth_type", ["managed_identity", "default"])
def test_identity_auth_types_need_no_secret(auth_type):
    extra = {k: v for k, v in SP_EXTRA.items() if k not in ("client_secret", "tenant_id")}
    assert parse_connection("c", extra=dict(extra, auth_type=auth_type)).auth_type == auth_type


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"workspace_name": ""}, "'workspace_name' is required"),
        ({"auth_type": "password"}, "auth_type must be one of"),
        ({"client_secret": None}, "missing: client_secret"),
        ({"cloud": "mars", "cloud_metadata": None}, "cloud must be public, china, usgov or custom"),
        ({"cloud_metadata": {"resource_manager": "https://x/"}}, "cloud_metadata lacks azure_portal"),
        ({"cloud_metadata": "{not json"}, "must be a JSON object"),
        ({"auth_type": "workload_identity", "tenant_id": None}, "workload_identity needs tenant_id"),
    ],
)
def test_bad_connections_name_the_connection_and_field(change, message):
    with pytest.raises(AzureMLConnectionError, match=re.escape(message)) as err:
        parse_connection("azureml_x", extra={**SP_EXTRA, **change})
    assert "azureml_x" in str(err.value)
    assert "s3cret-value" not in str(err.value)


def test_provider_connection_type_declares_form_fields():
    assert CONNECTION_TYPE["connection-type"] == "azureml"
    fields = CONNECTION_TYPE["conn-fields"]
    assert {"subscription_id", "resource_group", "workspace_name", "tenant_id", "auth_type", "cloud",
            "cloud_metadata", "ca_bundle"} <= set(fields)
    assert set(fields["auth_type"]["schema"]["enum"]) == {"service_principal", "managed_identity",
                                                          "workload_identity", "default"}
    assert CONNECTION_TYPE["ui-field-behaviour"]["relabeling"]["password"] == "Client secret"


# --- job names -----------------------------------------------------------------------------------
def test_job_name_is_deterministic_and_valid():
    a = build_job_name("edge_training", "2026-11-10T02:00:00", "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08")
    assert a == build_job_name("edge_training", "2026-11-10T02:00:00", "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08")
    assert a == "edge_training-2026-11-10t02-00-00-9f86d081884c7d65"
    assert VALID_NAME.match(a)


def test_job_name_changes_with_partition_and_fingerprint():
    base = build_job_name("d", "2026-11-10", "abc")
    assert base != build_job_name("d", "2026-11-11", "abc")
    assert base != build_job_name("d", "2026-11-10", "abd")


def test_long_and_odd_dag_ids_are_cut_but_stay_unique():
    long_a = "A" * 300 + "x"
    long_b = "A" * 300 + "y"
    a = build_job_name(long_a, "2026-11-10", "ff")
    b = build_job_name(long_b, "2026-11-10", "ff")
    assert a != b
    for name in (a, b, attempt_name(a, 999), build_job_name("__Weird DAG!!", "p/../x", "f")):
        assert VALID_NAME.match(name), name
        assert len(name) <= JOB_NAME_MAX


def test_job_name_needs_all_parts():
    with pytest.raises(AzureMLError, match="data_fingerprint=''"):
        build_job_name("d", "2026-11-10", "")


def test_attempt_names():
    assert attempt_name("base", 1) == "base"
    assert attempt_name("base", 2) == "base-a2"
    with pytest.raises(ValueError):
        attempt_name("base", 0)


# --- polling policy ------------------------------------------------------------------------------
def test_poll_intervals_ramp_up_then_hold_the_cap():
    policy = PollPolicy()
    rng = random.Random(7)
    waits = [policy.interval(n, rng.random()) for n in range(40)]
    assert all(0 < w <= policy.max_s for w in waits)
    assert waits[0] <= policy.initial_s
    assert waits[-10:] == [policy.max_s] * 10
    # A long job: at most 4 status calls a minute once at the cap, and nothing goes unnoticed > 15 s.
    assert 60 / policy.max_s <= 4 and policy.max_s <= 15


def test_poll_jitter_spreads_early_intervals():
    policy = PollPolicy()
    assert policy.interval(0, 0.0) != policy.interval(0, 0.99)


def test_error_backoff_is_capped_and_honours_retry_after():
    policy = PollPolicy()
    delays = [policy.error_delay(n, 0.999) for n in range(1, 20)]
    assert delays == sorted(delays)
    assert max(delays) <= policy.error_max_s
    assert policy.error_delay(1, 0.0) >= policy.error_initial_s / 2
    assert policy.error_delay(1, 0.0, retry_after_s=30) == 30
    # A silly Retry-After is bounded.
    assert policy.error_delay(1, 0.0, retry_after_s=10_000) <= policy.error_max_s * 5


# --- logs ----------------------------------------------------------------------------------------
def test_pick_log_file_prefers_the_common_runtime_stream_log():
    names = ["system_logs/x.txt", "user_logs/std_log.txt", "azureml-logs/70_driver_log.txt"]
    assert pick_log_file(names) == "user_logs/std_log.txt"
    assert pick_log_file(["azureml-logs/70_driver_log.txt"]) == "azureml-logs/70_driver_log.txt"
    assert pick_log_file(["outputs/model.pkl"]) is None


def test_split_complete_lines_keeps_a_partial_line_for_later():
    lines, used = split_complete_lines(b"one\ntwo\nthr", final=False)
    assert lines == ["one", "two"] and used == 8
    assert split_complete_lines(b"thr", final=False) == ([], 0)
    assert split_complete_lines(b"three", final=True) == (["three"], 5)
    lines, used = split_complete_lines("é\n".encode(), final=False)
    assert lines == ["é"] and used == 3


def test_run_info_duration():
    info = JobRunInfo(error=None, started_at="2026-11-10T02:00:00+00:00", ended_at="2026-11-10T02:01:30.5+00:00")
    assert info.duration_s == 90.5
    assert JobRunInfo(None, None, None).duration_s is None


def test_config_is_frozen():
    cfg = AzureMLConnectionConfig("s", "r", "w", "default", "AzureCloud")
    with pytest.raises(Exception):
        cfg.subscription_id = "x"  # type: ignore[misc]


def test_the_combined_ca_bundle_survives_many_threads_writing_it_at_once(tmp_path, monkeypatch):
    """Threads sharing one hook (the triggers of a connection) submit side by side: each may write the bundle."""
    import tempfile
    import threading

    from edge_training.hooks import azureml as hook_module

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ca = tmp_path / "stack-ca.pem"
    unique = str(random.random()).encode()  # a CA content no earlier run wrote a bundle for
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB" + unique + b"\n-----END CERTIFICATE-----\n")
    barrier = threading.Barrier(12)
    results: list[str] = []
    errors: list[BaseException] = []

    def write() -> None:
        barrier.wait()
        try:
            results.append(hook_module._combined_ca_bundle(str(ca)))
        except BaseException as err:  # noqa: BLE001 - collected for the assertion
            errors.append(err)

    threads = [threading.Thread(target=write) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == [] and len(set(results)) == 1
    assert open(results[0], "rb").read().endswith(ca.read_bytes())
