"""The AML double as a devstack service: started by `python -m devstack up`, checked by status.

After the stack is up, ``after_up`` runs devstack.aml.bootstrap (the real azure-ai-ml SDK) to attach the
edge VM as compute ``edge-vm``, register the ``stackhub_data`` datastore and the base-image environment.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from devstack.aml import config
from devstack.base import Service, StackContext, StackError
from devstack.util import stack_secret, token

# Variables of other services the double's process needs (workspace storage, the VM's pinned host key, CA).
PASSED_ENV = ("EDGE_AMLSTORE_CONNECTION_STRING", "EDGE_VM_KNOWN_HOSTS", "EDGE_CA_FILE")


class AmlDoubleService(Service):
    name = "aml-double"
    address = config.ENDPOINT
    ports = (config.PORT,)
    start_timeout = 60.0

    def state_dir(self, ctx: StackContext) -> Path:
        return ctx.state / "aml"

    def start(self, ctx: StackContext) -> str:
        pid = ctx.running_pid(self.name)
        if pid is not None:
            return f"{self.name}: already running (pid {pid}) at {config.ENDPOINT}"
        for path in (ctx.server_cert, ctx.server_key, ctx.ca_file):
            if not path.exists():
                raise StackError(f"{self.name}: TLS file {path} is missing (the pki service makes it)")
        missing = [k for k in ("EDGE_AMLSTORE_CONNECTION_STRING", "EDGE_VM_KNOWN_HOSTS") if not ctx.env.get(k)]
        if missing:
            raise StackError(f"{self.name}: needs {', '.join(missing)} from the storage and edge-vm services")
        env = {k: ctx.env[k] for k in PASSED_ENV if ctx.env.get(k)}
        env.setdefault("EDGE_CA_FILE", str(ctx.ca_file))
        env["AML_DOUBLE_CLIENT_SECRET"] = self.client_secret(ctx)
        env["PYTHONPATH"] = str(ctx.repo)
        argv = [str(ctx.python), "-m", "devstack.aml.main", "--port", str(config.PORT),
                "--state-dir", str(self.state_dir(ctx)), "--cert", str(ctx.server_cert),
                "--key", str(ctx.server_key), "--ca-file", str(ctx.ca_file)]
        pid = ctx.spawn(self.name, argv, env=env)
        return f"{self.name}: started (pid {pid}) at {config.ENDPOINT}"

    @staticmethod
    def client_secret(ctx: StackContext) -> str:
        """The AML service principal's secret, generated once per stack like the other secrets."""
        return stack_secret(ctx, "aml_client_secret", token)

    def health(self, ctx: StackContext) -> tuple[bool, str]:
        if ctx.running_pid(self.name) is None:
            return False, "not running (no live pid in .devstack/run)"
        try:
            context = ssl.create_default_context(cafile=str(ctx.ca_file))
            with urllib.request.urlopen(f"{config.ENDPOINT}/healthz", context=context, timeout=3) as resp:
                body = resp.read().decode()
        except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
            return False, f"GET {config.ENDPOINT}/healthz failed: {exc}"
        return True, f"{config.ENDPOINT} {body}"

    def env(self, ctx: StackContext) -> dict[str, str]:
        return {
            "AIRFLOW_CONN_AZUREML_DEFAULT": config.connection_json(ca_file=ctx.ca_file,
                                                                   client_secret=self.client_secret(ctx)),
            "EDGE_AML_ENDPOINT": config.ENDPOINT,
            "EDGE_AML_CA_FILE": str(ctx.ca_file),
            "EDGE_AML_SUBSCRIPTION": config.SUBSCRIPTION,
            "EDGE_AML_RESOURCE_GROUP": config.RESOURCE_GROUP,
            "EDGE_AML_WORKSPACE": config.WORKSPACE,
            "EDGE_AML_COMPUTE": config.COMPUTE,
            "EDGE_AML_ENVIRONMENT": config.ENVIRONMENT,
        }

    def after_up(self, ctx: StackContext) -> None:
        env = {**os.environ, **ctx.env, **self.env(ctx), "PYTHONPATH": str(ctx.repo)}
        env.pop("AZUREML_CURRENT_CLOUD", None)  # a cloud the bootstrap process has not registered breaks the import
        proc = subprocess.run([str(ctx.python), "-m", "devstack.aml.bootstrap"], env=env, cwd=str(ctx.repo),
                              capture_output=True, text=True, timeout=300)
        for line in proc.stdout.splitlines():
            print(f"aml-double: {line}", flush=True)
        if proc.returncode != 0:
            raise StackError(f"{self.name}: bootstrap (attach {config.COMPUTE}, datastore, environment) failed: "
                             f"{(proc.stderr or proc.stdout).strip()[-1500:]}")
