"""Registers what a fresh stack needs, through the real azure-ai-ml SDK, idempotently:

the edge VM as virtualmachine compute EDGE_AML_COMPUTE, the `stackhub_data` datastore (Stack Hub account
`edgedata`, container `training`), a check that the workspace default datastore is the AML storage account,
and the environment EDGE_AML_ENVIRONMENT for the stack's base image.

Run as `python -m devstack.aml.bootstrap` with the stack's variables in the environment (stack-up does it).
"""

from __future__ import annotations

import json
import os
import sys

from devstack.aml import config


def trust_ca_for_sdk_storage(ca_file: str) -> str:
    """Make the SDK's own storage clients (code upload, downloads) trust the stack CA.

    Those clients take no connection_verify; they verify against REQUESTS_CA_BUNDLE. Point it at a bundle of
    the current one (or certifi's) plus the stack CA, written once beside nothing else (a temp file).
    """
    import hashlib
    import tempfile
    from pathlib import Path

    current = os.environ.get("REQUESTS_CA_BUNDLE")
    if not current or not Path(current).is_file():
        import certifi

        current = certifi.where()
    ca_pem = Path(ca_file).read_text()
    base = Path(current).read_text()
    if ca_pem.strip() in base:
        return current
    digest = hashlib.sha256((current + ca_pem).encode()).hexdigest()[:16]
    bundle = Path(tempfile.gettempdir()) / f"edge-devstack-ca-bundle-{digest}.pem"
    if not bundle.exists():
        tmp = bundle.with_suffix(".tmp")
        tmp.write_text(base.rstrip() + "\n" + ca_pem)
        tmp.replace(bundle)
    os.environ["REQUESTS_CA_BUNDLE"] = str(bundle)
    return str(bundle)


def ml_client_from_connection(conn_json: str):
    """An MLClient built from AIRFLOW_CONN_AZUREML_DEFAULT exactly as STACK.md documents it."""
    from azure.ai.ml import MLClient
    from azure.identity import ClientSecretCredential

    extra = json.loads(conn_json)["extra"]
    ca = extra["ca_bundle"]
    trust_ca_for_sdk_storage(ca)
    credential = ClientSecretCredential(extra["tenant_id"], extra["client_id"], extra["client_secret"],
                                        authority=extra["cloud_metadata"]["active_directory"],
                                        disable_instance_discovery=True, connection_verify=ca)
    return MLClient(credential, extra["subscription_id"], extra["resource_group"], extra["workspace_name"],
                    cloud=extra["cloud_name"], cloud_metadata=extra["cloud_metadata"], connection_verify=ca)


def account_key(connection_string: str) -> str:
    parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
    return parts["AccountKey"]


def register(ml, env) -> int:
    """Attach the VM, register the datastore and the environment on the workspace behind ``ml``."""
    from azure.ai.ml.entities import (
        AccountKeyConfiguration,
        AzureBlobDatastore,
        Environment,
        VirtualMachineCompute,
        VirtualMachineSshSettings,
    )
    from azure.core.exceptions import ResourceNotFoundError

    compute_name = env.get("EDGE_AML_COMPUTE", config.COMPUTE)
    vm_host = env["EDGE_VM_HOST"]
    vm_name = vm_host.split(".", 1)[0]
    compute = VirtualMachineCompute(
        name=compute_name,
        description=f"the edge VM {vm_host}:{env['EDGE_VM_PORT']} (attached by devstack)",
        resource_id=(f"/subscriptions/{config.SUBSCRIPTION}/resourceGroups/{config.RESOURCE_GROUP}"
                     f"/providers/Microsoft.Compute/virtualMachines/{vm_name}"),
        ssh_settings=VirtualMachineSshSettings(admin_username=env["EDGE_VM_USER"], ssh_port=int(env["EDGE_VM_PORT"]),
                                               ssh_private_key_file=env["EDGE_VM_KEY_FILE"]),
    )
    ml.compute.begin_create_or_update(compute).result()
    print(f"compute {compute_name}: attached ({env['EDGE_VM_USER']}@{vm_host}:{env['EDGE_VM_PORT']})")

    stackhub = env["EDGE_STACKHUB_CONNECTION_STRING"]
    suffix = dict(p.split("=", 1) for p in stackhub.split(";") if "=" in p)["EndpointSuffix"]
    ml.datastores.create_or_update(AzureBlobDatastore(
        name=config.STACKHUB_DATASTORE, description="Azure Stack Hub blob storage: on-premises training data",
        account_name=env.get("EDGE_STACKHUB_ACCOUNT", config.STACKHUB_ACCOUNT),
        container_name=env.get("EDGE_STACKHUB_CONTAINER", config.STACKHUB_CONTAINER), endpoint=suffix,
        protocol="https", credentials=AccountKeyConfiguration(account_key=account_key(stackhub)),
    ))
    print(f"datastore {config.STACKHUB_DATASTORE}: registered ({suffix})")

    default = ml.datastores.get_default()
    if default.account_name != config.AML_STORAGE_ACCOUNT:
        print(f"default datastore {default.name} is on account {default.account_name}, expected "
              f"{config.AML_STORAGE_ACCOUNT}", file=sys.stderr)
        return 1
    print(f"default datastore {default.name}: account {default.account_name} ({default.endpoint})")

    env_name, env_version = env.get("EDGE_AML_ENVIRONMENT", config.ENVIRONMENT).split(":")
    image = env.get("EDGE_BASE_IMAGE", config.BASE_IMAGE)
    try:
        existing = ml.environments.get(env_name, version=env_version)
    except ResourceNotFoundError:
        existing = None
    if existing is not None and existing.image != image:
        print(f"environment {env_name}:{env_version} exists with image {existing.image!r}, expected {image!r}; "
              "an environment version is immutable: bump EDGE_AML_ENVIRONMENT's version", file=sys.stderr)
        return 1
    if existing is None:
        ml.environments.create_or_update(Environment(name=env_name, version=env_version, image=image,
                                                     description="the stack's base image on the edge VM's docker"))
        print(f"environment {env_name}:{env_version}: created (image {image})")
    else:
        print(f"environment {env_name}:{env_version}: already registered (image {image})")
    return 0


def main() -> int:
    return register(ml_client_from_connection(os.environ["AIRFLOW_CONN_AZUREML_DEFAULT"]), os.environ)


if __name__ == "__main__":
    sys.exit(main())
