"""Hooks: one module per service, holding its SDK calls, plus the pure modules each leans on.

- Azure ML: azureml (the hook, status vocabulary, job logs) with azureml_connection (the connection
  form and parsing), azureml_naming (job names), azureml_polling (how fast the wait polls) and
  azureml_sdk_private (every use of the SDK's private APIs, so an SDK upgrade touches one file).
- Stack Hub blob: stackhub_blob (the hook, the partition spec, scan, manifest) with stackhub_locality
  (which endpoints count as on premises) and stackhub_fingerprint (the data fingerprint).

Every wait between tries, in any of them, takes its delay from edge_training.retry (the one backoff).
- Edge VM: edge_vm (the SSH hook) with edge_vm_checks (the probe's output turned into checks); the
  probe itself is edge_training/probes/edge_vm_readiness.sh.
- The model image: container_image (the hook: build context, build, smoke test, push) with
  image_identity (tags, labels), docker_ssh (the docker_edge connection as a client), docker_streams
  (build/push stream readers), registry_client (the registry's HTTP API) and smoke_test (the verdict;
  the probe is edge_training/probes/smoke_probe.py).
- azure_logging: the package's own logger for the HTTP logging of every Azure client the hooks build
  (no other library's logger is changed), and the filter for azure-ai-ml's experimental notices.
"""

from __future__ import annotations


def connection_types() -> list[dict]:
    """Connection types declared by this package's hooks, for provider info.

    Each hook module that defines a connection type exposes ``CONNECTION_TYPE`` (a provider-info
    ``connection-types`` entry, with ``conn-fields`` and ``ui-field-behaviour``).
    """
    import importlib

    found = []
    for name in ("azureml_connection",):
        try:
            module = importlib.import_module(f"edge_training.hooks.{name}")
        except ImportError:
            continue
        entry = getattr(module, "CONNECTION_TYPE", None)
        if entry:
            found.append(entry)
    return found
