"""aml_double: how long the AML double adds to a trivial job, submit -> Completed minus the command's run.

Starts a private double (free port, temp state) against the running stack (`make stack-up`), registers the
edge VM, datastore and environment through azure-ai-ml, then submits N trivial command jobs one after another
and polls jobs.get every 50 ms. The phases come from the double's own status history (its SQLite store).
Target: the worst overhead of the N runs <= 5 s. Writes bench/results/aml_double.json.

    .venv/bin/python bench/aml_double.py [--runs 5] [--command "echo hi"]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path


from results import Check, load_stack_env, write_result  # noqa: E402

from devstack.aml import bootstrap, config  # noqa: E402
from devstack.aml.testing import PrivateDouble, free_port, ml_client  # noqa: E402

PHASES = ("total_s", "put_s", "command_s", "overhead_s", "queued_to_preparing_s", "preparing_to_command_start_s",
          "command_end_to_completed_s")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--command", default="echo hi")
    args = parser.parse_args()
    env = load_stack_env()
    tmp = Path(tempfile.mkdtemp(prefix="aml-bench-"))
    double = PrivateDouble(port=free_port(), state_dir=tmp / "state", log_file=tmp / "double.log", stack_env=env)
    double.start()
    try:
        from azure.ai.ml import command

        ml = ml_client(double, f"AmlBench{double.port}")
        bootstrap.register(ml, env)
        rows = []
        for i in range(args.runs + 1):  # the first run warms up SSH, docker and the SDK
            name = f"bench-{uuid.uuid4().hex[:10]}"
            t0 = time.monotonic()
            ml.jobs.create_or_update(command(name=name, command=args.command, environment=config.ENVIRONMENT,
                                             compute=config.COMPUTE))
            t_created = time.monotonic()
            while True:
                status = ml.jobs.get(name).status
                if status in {"Completed", "Failed", "Canceled"}:
                    break
                time.sleep(0.05)
            t_done = time.monotonic()
            if status != "Completed":
                raise SystemExit(f"job {name} ended {status}; see {double.log_file}")
            db = sqlite3.connect(str(double.state_dir / "aml.sqlite"))
            runtime = json.loads(db.execute("SELECT runtime FROM jobs WHERE name=?", (name,)).fetchone()[0])
            db.close()
            hist = {s: t for s, t in runtime["history"]}
            command_s = runtime["command_end"] - runtime["command_start"]
            total = t_done - t0
            row = {
                "job": name, "total_s": total, "put_s": t_created - t0, "command_s": command_s,
                "overhead_s": total - command_s,
                "queued_to_preparing_s": hist["Preparing"] - hist["Queued"],
                "preparing_to_command_start_s": runtime["command_start"] - hist["Preparing"],
                "command_end_to_completed_s": hist["Completed"] - runtime["command_end"],
            }
            if i == 0:
                print("warm-up:", json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
                continue
            rows.append(row)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
        worst = max(r["overhead_s"] for r in rows)
        document = write_result(
            "aml_double",
            [Check(f"submit -> Completed overhead of a trivial job, worst of {len(rows)}", worst, 5.0, "s")],
            rows,
            details={f"median {key}": round(statistics.median(r[key] for r in rows), 3) for key in PHASES},
        )
        return 0 if document["ok"] else 1
    finally:
        double.stop()


if __name__ == "__main__":
    sys.exit(main())
