"""A plain script that uses only azure-ai-ml (and azure-identity) against the stack's AML double:
attach the edge VM, submit a training job on a Stack Hub partition, stream its log, download its output and
register it as a model. Everything it needs comes from AIRFLOW_CONN_AZUREML_DEFAULT in .devstack/stack.env.

    set -a; . .devstack/stack.env; set +a
    .venv/bin/python devstack/aml/example.py [--partition 2026-11-10]

The same script runs against real Azure ML with a different connection (no `cloud`, no `ca_bundle`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

TRAIN = '''\
import glob, json, os, sys
import pandas as pd
from sklearn.linear_model import LogisticRegression
import joblib
data, out = sys.argv[1], sys.argv[2]
frame = pd.concat(pd.read_csv(f) for f in sorted(glob.glob(os.path.join(data, "part-*.csv"))))
features = ["temperature_c", "vibration_mm_s", "pressure_kpa", "rpm", "runtime_hours"]
model = LogisticRegression(max_iter=500).fit(frame[features], frame["failure"])
os.makedirs(out, exist_ok=True)
joblib.dump(model, os.path.join(out, "model.joblib"))
json.dump({"rows": len(frame), "accuracy": model.score(frame[features], frame["failure"])},
          open(os.path.join(out, "metrics.json"), "w"))
print("trained on", len(frame), "rows")
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partition", default="2026-11-10")
    args = parser.parse_args()

    from azure.ai.ml import Input, MLClient, Output, command
    from azure.ai.ml.entities import Model, VirtualMachineCompute, VirtualMachineSshSettings
    from azure.identity import ClientSecretCredential

    extra = json.loads(os.environ["AIRFLOW_CONN_AZUREML_DEFAULT"])["extra"]
    ca = extra["ca_bundle"]
    # azure-ai-ml's own storage clients (code upload, download) verify against REQUESTS_CA_BUNDLE only.
    bundle = Path(tempfile.gettempdir()) / "example-ca-bundle.pem"
    import certifi

    bundle.write_text(Path(os.environ.get("REQUESTS_CA_BUNDLE") or certifi.where()).read_text() + "\n"
                      + Path(ca).read_text())
    os.environ["REQUESTS_CA_BUNDLE"] = str(bundle)
    credential = ClientSecretCredential(extra["tenant_id"], extra["client_id"], extra["client_secret"],
                                        authority=extra["cloud_metadata"]["active_directory"],
                                        disable_instance_discovery=True, connection_verify=ca)
    ml = MLClient(credential, extra["subscription_id"], extra["resource_group"], extra["workspace_name"],
                  cloud=extra["cloud_name"], cloud_metadata=extra["cloud_metadata"], connection_verify=ca)

    # 1. Attach the edge VM (idempotent: the same name updates the attachment).
    vm_name = os.environ["EDGE_VM_HOST"].split(".", 1)[0]
    ml.compute.begin_create_or_update(VirtualMachineCompute(
        name=os.environ["EDGE_AML_COMPUTE"],
        resource_id=f"/subscriptions/{extra['subscription_id']}/resourceGroups/{extra['resource_group']}"
                    f"/providers/Microsoft.Compute/virtualMachines/{vm_name}",
        ssh_settings=VirtualMachineSshSettings(admin_username=os.environ["EDGE_VM_USER"],
                                               ssh_port=int(os.environ["EDGE_VM_PORT"]),
                                               ssh_private_key_file=os.environ["EDGE_VM_KEY_FILE"]),
    )).result()
    print("attached", os.environ["EDGE_AML_COMPUTE"])

    # 2. Submit a command job that trains on one Stack Hub partition.
    src = Path(tempfile.mkdtemp(prefix="example-src-"))
    (src / "train.py").write_text(TRAIN)
    name = f"example-{args.partition}-{uuid.uuid4().hex[:6]}"
    job = ml.jobs.create_or_update(command(
        name=name, code=str(src), command="python3 train.py ${{inputs.data}} ${{outputs.model}}",
        inputs={"data": Input(type="uri_folder",
                              path=f"azureml://datastores/stackhub_data/paths/telemetry/date={args.partition}/")},
        outputs={"model": Output(type="uri_folder")},
        environment=os.environ["EDGE_AML_ENVIRONMENT"], compute=os.environ["EDGE_AML_COMPUTE"],
        experiment_name="edge-training-example"))
    print("submitted", job.name, job.studio_url)

    # 3. Wait, streaming the job's log.
    ml.jobs.stream(job.name)
    status = ml.jobs.get(job.name).status
    print("status", status)
    if status != "Completed":
        return 1

    # 4. Download the output, 5. register it as a model.
    out = Path(tempfile.mkdtemp(prefix="example-out-"))
    ml.jobs.download(job.name, download_path=str(out), output_name="model")
    print("downloaded", sorted(p.name for p in (out / "named-outputs" / "model").iterdir()))
    model = ml.models.create_or_update(Model(name="edge-example-model", path=f"azureml://jobs/{job.name}/outputs/model",
                                             type="custom_model", tags={"partition": args.partition}))
    print("registered", model.name, "version", model.version, model.tags)
    return 0


if __name__ == "__main__":
    sys.exit(main())
