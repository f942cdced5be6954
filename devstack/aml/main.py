"""Process entry point of the AML double: `python -m devstack.aml.main --state-dir ... --cert ... --key ...`.

Builds the store, the workspace storage client and the job runner, seeds the workspace's own datastores
(workspaceblobstore, workspaceartifactstore on the AML storage account), re-attaches jobs that were running
before a restart, and serves HTTPS with uvicorn.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from pathlib import Path

import uvicorn

from devstack.aml import config
from devstack.aml.asgi_app import build_app
from devstack.aml.http_core import AmlDouble
from devstack.aml.metadata_store import Store
from devstack.aml.runner import JobRunner
from devstack.aml.workspace_storage import WorkspaceStorage

log = logging.getLogger("aml-double")


def seed_workspace_datastores(store: Store, storage: WorkspaceStorage) -> None:
    """The datastores AML creates with a workspace, on the AML storage account."""
    for name, container in ((config.DEFAULT_DATASTORE, config.DEFAULT_CONTAINER),
                            (config.ARTIFACT_DATASTORE, config.ARTIFACT_CONTAINER)):
        storage.ensure_container(container)
        store.put_asset("datastore", name, {"properties": {
            "datastoreType": "AzureBlob", "accountName": storage.account, "containerName": container,
            "endpoint": storage.suffix, "protocol": "https", "serviceDataAccessAuthIdentity": "None",
            "credentials": {"credentialsType": "AccountKey", "secrets": {"secretsType": "AccountKey",
                                                                         "key": storage.key}},
            "description": "the workspace's default blob store" if name == config.DEFAULT_DATASTORE else
            "the workspace's artifact store (run logs)", "tags": {}, "properties": {},
        }})


def secret_for(state_dir: Path) -> bytes:
    path = state_dir / "files.secret"
    if not path.exists():
        path.write_bytes(secrets.token_bytes(32))
        path.chmod(0o600)
    return path.read_bytes()


def client_secret_for(state_dir: Path) -> str:
    """The service principal's secret: AML_DOUBLE_CLIENT_SECRET (the stack's generated one) or the file
    AML_DOUBLE_CLIENT_SECRET_FILE names (compose's stack-init), else one generated for this state dir
    (private doubles in tests read it from ``client.secret``)."""
    if os.environ.get("AML_DOUBLE_CLIENT_SECRET"):
        return os.environ["AML_DOUBLE_CLIENT_SECRET"]
    if os.environ.get("AML_DOUBLE_CLIENT_SECRET_FILE"):
        return Path(os.environ["AML_DOUBLE_CLIENT_SECRET_FILE"]).read_text().strip()
    path = state_dir / "client.secret"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=config.PORT)
    parser.add_argument("--endpoint", default=None, help="public base URL (default https://<HOST>:<port>)")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ca-file", default=os.environ.get("EDGE_CA_FILE"))
    parser.add_argument("--max-jobs-per-compute", type=int,
                        default=int(os.environ.get("AML_DOUBLE_MAX_JOBS_PER_COMPUTE", "4")),
                        help="jobs running at once on one compute; more wait in Queued")
    parser.add_argument("--job-mode", choices=("container", "host"),
                        default=os.environ.get("AML_DOUBLE_JOB_MODE", "container"),
                        help="container: each job in a docker container on the VM (as AML runs jobs); host: each "
                             "job as a plain process on the VM, no code/inputs/outputs (load tests: "
                             "devstack/aml/host_jobs.py)")
    parser.add_argument("--log-level", default=os.environ.get("AML_DOUBLE_LOG_LEVEL", "info"))
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    endpoint = args.endpoint or f"https://{config.HOST}:{args.port}"
    args.state_dir.mkdir(parents=True, exist_ok=True)
    store = Store(path=args.state_dir / "aml.sqlite")

    _storage: WorkspaceStorage | None = None
    conn = os.environ.get("EDGE_AMLSTORE_CONNECTION_STRING")
    if conn:
        _storage = WorkspaceStorage(connection_string=conn, ca_file=args.ca_file)
        try:
            seed_workspace_datastores(store, _storage)
        except Exception as exc:  # noqa: BLE001 - serve anyway; uploads will report the cause
            log.error("could not reach the workspace storage %s: %s", _storage.account_url, exc)
    else:
        log.warning("EDGE_AMLSTORE_CONNECTION_STRING is not set: code upload and job outputs are unavailable")

    runner = JobRunner(store=store, state_dir=args.state_dir, storage=_storage,
                       known_hosts=os.environ.get("EDGE_VM_KNOWN_HOSTS"), ca_file=args.ca_file,
                       max_jobs_per_compute=args.max_jobs_per_compute, job_mode=args.job_mode)
    double = AmlDouble(store=store, endpoint=endpoint, state_dir=args.state_dir, storage=_storage,
                       runner=runner, files_secret=secret_for(args.state_dir),
                       client_secret=client_secret_for(args.state_dir))
    runner.recover()
    log.info("AML double for %s/%s/%s serving %s", config.SUBSCRIPTION, config.RESOURCE_GROUP, config.WORKSPACE,
             endpoint)
    uvicorn.run(build_app(double), host=args.host, port=args.port, ssl_certfile=args.cert,
                ssl_keyfile=args.key, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
