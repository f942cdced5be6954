"""overhead: what Airflow adds around the work, against a plain script doing the same work serially.

On the devstack (`make stack-up`), with a private Airflow (LocalExecutor on the stack's Postgres, API on
127.0.0.1:47191, home .devstack/airflow-bench, stopped at the end) whose DAG bundles are dags/ and
bench/dags/. Each round trains two new partitions (a date never seeded before, so nothing is reused):
one through the floor, a plain Python process that does what the DAG's tasks do, in the same order, with
the same hooks and connections (readiness over SSH, partition validation, AML job submitted and waited
for with the same poll policy, gate, registration, image build, smoke test, push; one client per service,
each look-up once), and one through `edge_training` triggered on the scheduler. Each round also runs
`overhead_noop_chain` (bench/dags: as many no-op tasks as edge_training has, in a chain). Rounds alternate
which of the floor and the DAG goes first.

Targets, each the worst case of the run:
- DAG wall (run queued -> run ended) <= 1.25 x the floor's wall (process start -> exit), slowest DAG run
  against the fastest floor run;
- the summed gaps between edge_training's tasks (a task's end -> the next one's start, from the task
  instances) <= 1.25 x those of the no-op chain, largest sum against the smallest;
- parse time of dags/edge_training.py <= 1.5 x that of bench/dags/overhead_empty_chain.py (as many
  EmptyOperators), each parsed by Airflow's DagBag in a fresh process after what the stack's dag-processor
  has imported before it forks a parse (the Airflow modules the file names, Airflow's own pre-import, and
  edge_training.preloading's DAG_PROCESSOR_PRELOAD_MODULES), slowest against fastest. This part needs no
  stack (`--parse-only` runs it alone and writes nothing).

The details hold the profile of where the rest goes: each task's duration against the floor's step,
the gaps per boundary, interpreter and Airflow task-runner start-up, the parse without the package preload
(as a plain `airflow dag-processor`) and what it imports then, the share of a profiled parse that is
Airflow's own work on the DAG's Params, and per service the SDK import, client construction and first
request (fresh processes).
Writes bench/results/overhead.json.

    .venv/bin/python bench/overhead.py [--repeats 3] [--parse-repeats 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import REPO, Check, load_stack_env, write_result

DAG_ID = "edge_training"
NOOP_DAG_ID = "overhead_noop_chain"
DAG_FILE = REPO / "dags" / "edge_training.py"
BENCH_DAGS = REPO / "bench" / "dags"
EMPTY_FILE = BENCH_DAGS / "overhead_empty_chain.py"
#: edge_training's tasks in their order (each depends on the one before).
CHAIN = ("check_edge_vm", "validate_partition", "submit_training", "evaluate_gate", "register_model",
         "build_image", "push_image", "summary")
AIRFLOW_NAME = "airflow-bench"
AIRFLOW_PORT = 47191
DATABASE = "airflow_bench"
#: The floor's jobs, models' tags and images say they come from here, not from the DAG.
FLOOR_ID = "overhead-floor"
MODEL_NAME = "equipment-failure"
MARK = "overhead-bench: parse starts"
#: Per service: the SDK modules its client needs (imported lazily by the hooks).
SERVICES = ("edge_vm_ssh", "stackhub_blob", "azureml", "docker_registry")

DAG_WALL_LIMIT = 1.25
GAPS_LIMIT = 1.25
PARSE_LIMIT = 1.5


def rounded(value: float, digits: int = 3) -> float:
    return round(value, digits)


# --- children (each runs in a fresh process) -----------------------------------------------------------

#: How a parse child prepares, as a dag-processor would: ``preloaded`` as the stack's (Airflow's pre-import of
#: the file's Airflow modules, then edge_training.preloading's DAG_PROCESSOR_PRELOAD_MODULES), ``plain`` as
#: `airflow dag-processor` (Airflow's pre-import only), ``profile`` preloaded and under cProfile.
PARSE_MODES = ("preloaded", "plain", "profile")
#: Airflow's own work on a DAG's Params during a parse: the DAG validates each Param's schema, and each
#: operator gets a deep copy of the DAG's Params.
PARAM_FUNCTIONS = {("dag.py", "_validate_params"), ("param.py", "__deepcopy__")}


def child_parse(path: str, mode: str) -> dict:
    """Parse one DAG file as a dag-processor's forked child does, after what its parent imported (``mode``)."""
    if mode not in PARSE_MODES:
        raise SystemExit(f"parse mode {mode!r}: expected one of {PARSE_MODES}")
    import cProfile
    import importlib
    import pstats

    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.file import iter_airflow_imports

    for module in iter_airflow_imports(path):  # the dag-processor's parsing_pre_import_modules
        importlib.import_module(module)
    if mode != "plain":
        from edge_training.preloading import DAG_PROCESSOR_PRELOAD_MODULES, preload

        preload(DAG_PROCESSOR_PRELOAD_MODULES)
    before = set(sys.modules)
    print(MARK, file=sys.stderr, flush=True)
    profiler = cProfile.Profile() if mode == "profile" else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    bag = DagBag(dag_folder=path, safe_mode=False)
    if profiler:
        profiler.disable()
    wall = time.perf_counter() - started
    if bag.import_errors or not bag.dagbag_stats:
        raise SystemExit(f"parsing {path} failed: {bag.import_errors}")
    stat = bag.dagbag_stats[0]
    new = sorted(set(sys.modules) - before)
    result = {"file": Path(path).name, "mode": mode, "parse_s": stat.duration.total_seconds(),
              "dagbag_wall_s": rounded(wall, 4), "tasks": stat.task_num, "modules_imported": len(new),
              "edge_training_modules": sum(1 for m in new if m.startswith("edge_training")),
              "sdk_modules_imported": sorted({m.split(".")[0] for m in new
                                              if m.startswith(("azure", "docker", "paramiko"))})}
    if profiler:
        stats = pstats.Stats(profiler).stats  # {(file, line, function): (cc, nc, tottime, cumtime, callers)}
        params = sum(row[3] for (file, _, function), row in stats.items()
                     if (Path(file).name, function) in PARAM_FUNCTIONS)
        result["profiled_wall_s"] = rounded(wall, 4)
        result["params_cumulative_s"] = rounded(params, 4)
    return result


def child_client(service: str) -> dict:
    """One service's client as a task builds it: SDK import, client construction, first request."""
    import airflow.sdk  # noqa: F401 - every task has it already

    timings: dict[str, float] = {}

    def timed(key: str, fn):
        started = time.perf_counter()
        value = fn()
        timings[key] = rounded(time.perf_counter() - started)
        return value

    if service == "edge_vm_ssh":
        from edge_training.hooks.edge_vm import EdgeVMHook

        timed("import_s", lambda: __import__("airflow.providers.ssh.hooks.ssh"))
        hook = timed("construct_s", lambda: EdgeVMHook(ssh_conn_id="edge_vm_ssh"))
        client, _, _ = timed("first_request_s", hook.connect)  # the SSH handshake
        client.close()
    elif service == "stackhub_blob":
        from edge_training.hooks.stackhub_blob import StackHubBlobHook

        timed("import_s", lambda: __import__("azure.storage.blob"))
        hook = StackHubBlobHook(stackhub_conn_id="stackhub_blob")
        timed("construct_s", hook.get_conn)
        timed("first_request_s", lambda: list(hook.container_client("training").list_blobs(
            name_starts_with="telemetry/date=2026-11-01/")))
    elif service == "azureml":
        from edge_training.hooks.azureml import AzureMLHook

        timed("import_s", lambda: __import__("azure.ai.ml"))
        hook = AzureMLHook(azureml_conn_id="azureml_default")
        timed("construct_s", hook.get_conn)
        timed("first_request_s", lambda: hook.find_job("overhead-bench-no-such-job"))  # token + one GET
        hook.close()
    elif service == "docker_registry":
        from edge_training.hooks.container_image import ContainerImageHook

        timed("import_s", lambda: __import__("docker"))
        hook = ContainerImageHook(docker_conn_id="docker_edge", registry_conn_id="acr_default")
        timed("construct_s", lambda: hook.docker_client)  # connects and pings
        timed("first_request_s", hook.registry.check_auth)
        hook.close()
    else:
        raise SystemExit(f"unknown service {service!r}")
    return {"service": service, **timings}


def child_floor(date: str) -> dict:
    """The floor: edge_training's work for one partition, serially, in this plain Python process.

    The same hooks, connections and arguments as the DAG's operators (dags/edge_training.py), in the same
    order. As a plain script would, it keeps one client per service and asks each question once: the
    model output is downloaded once (the gate's metrics and the image's model), and the push does not ask
    the registry again what the build just asked.
    """
    import random as rnd

    steps: dict[str, float] = {}
    clock = time.perf_counter

    def step(name: str, started: float) -> None:
        steps[name] = rounded(clock() - started)

    from devstack.sample_data import COLUMNS
    from edge_training import lineage
    from edge_training.hooks.azureml import LOGGING_STATUSES, STATUS_COMPLETED, AzureMLHook, CommandJobSpec, \
        job_output_uri
    from edge_training.hooks.azureml_naming import build_job_name
    from edge_training.hooks.azureml_polling import PollPolicy
    from edge_training.hooks.container_image import ContainerImageHook, prepare_context
    from edge_training.hooks.edge_vm import EdgeVMHook
    from edge_training.hooks.edge_vm_checks import ReadinessParams, failure_summary
    from edge_training.hooks.image_identity import image_labels, image_tags, model_labels, repository_name
    from edge_training.hooks.stackhub_blob import DEFAULT_DATA_PATTERN, DEFAULT_MANIFEST_NAME, DEFAULT_MARKER, \
        PartitionSpec, StackHubBlobHook
    from edge_training.operators.gate import gate_decision, model_metrics_from_tags
    from edge_training.partitions import partition_prefix

    key = f"{date}T00:00:00"
    environment = os.environ.get("EDGE_AML_ENVIRONMENT", "edge-training-base:1")
    base_image = os.environ.get("EDGE_BASE_IMAGE", "edge-training-base:bookworm")
    compute = os.environ.get("EDGE_AML_COMPUTE", "edge-vm")
    commit = lineage.git_commit()
    # From the parent's spawn to here: interpreter start-up and the imports above.
    imports_s = rounded(time.time() - float(os.environ.get("OVERHEAD_SPAWNED_AT", time.time())))

    # check_edge_vm
    t = clock()
    blob = StackHubBlobHook(stackhub_conn_id="stackhub_blob")
    host, port = blob.endpoint()  # builds the blob client, as the operator does
    report = EdgeVMHook(ssh_conn_id="edge_vm_ssh").readiness_report(ReadinessParams(
        image=base_image, workdir="", min_disk_gib=2.0, min_memory_gib=1.0, max_clock_skew_s=60.0,
        blob_endpoint=f"{host}:{port}", require_gpu=False, sshd_policy="warn"))
    if report["status"] == "fail":
        raise SystemExit(f"edge VM not ready: {failure_summary(report)}")
    step("check_edge_vm", t)

    # validate_partition
    t = clock()
    blob.get_conn()  # the locality policy, before any request
    partition = blob.validate_partition(PartitionSpec(
        container="training", prefix=partition_prefix("telemetry/date={partition_date}/", key), partition_key=key,
        data_pattern=DEFAULT_DATA_PATTERN, success_marker=DEFAULT_MARKER, expected_columns=tuple(COLUMNS),
        header_sample_size=20, manifest_name=DEFAULT_MANIFEST_NAME, datastore="stackhub_data"))
    fingerprint = partition["fingerprint"]
    step("validate_partition", t)

    # submit_training: find or submit, then wait with the DAG's poll policy, reading the log as it grows
    t = clock()
    aml = AzureMLHook(azureml_conn_id="azureml_default")
    job_name = build_job_name(FLOOR_ID, date, fingerprint)
    if aml.find_job(job_name) is not None:
        raise SystemExit(f"AML job {job_name} exists already: the floor needs a new partition")
    aml.submit_command_job(job_name, CommandJobSpec(
        command="python3 train.py --data ${{inputs.data}} --output ${{outputs.model}} --label failure",
        environment=environment, compute=compute, code=str(REPO / "include" / "training"),
        inputs={"data": {"type": "uri_folder", "path": partition["data_uri"]}},
        outputs={"model": {"type": "uri_folder"}},
        experiment_name="edge-training",
        tags={"dag_id": FLOOR_ID, "task_id": "submit_training", "run_id": FLOOR_ID, "partition": date,
              "data_fingerprint": fingerprint, "git_commit": commit}))
    policy, polls, offset, log_lines = PollPolicy(), 0, 0, 0
    while True:
        poll_started = time.monotonic()
        job = aml.get_job(job_name)
        if job.status in LOGGING_STATUSES or job.is_terminal:
            chunk = aml.read_log(job_name, offset, final=job.is_terminal)
            offset, log_lines = chunk.offset, log_lines + len(chunk.lines)
        if job.is_terminal:
            break
        time.sleep(max(policy.interval(polls, rnd.random()) - (time.monotonic() - poll_started), 0.0))
        polls += 1
    info = aml.get_run_info(job_name)
    if job.status != STATUS_COMPLETED:
        raise SystemExit(f"AML job {job_name} ended {job.status}: {info.error}")
    step("submit_training", t)

    # evaluate_gate: the new metrics against the production-tagged version's
    t = clock()
    workdir = Path(tempfile.mkdtemp(prefix="overhead-floor-"))
    model_dir = aml.download_job_output(job_name, "model", workdir / "download")
    metrics = json.loads(next(model_dir.rglob("metrics.json")).read_text())
    baseline = next((v for v in aml.list_model_versions(MODEL_NAME)
                     if str((v.tags or {}).get("stage")) == "production"), None)
    decision = gate_decision(new_metrics=metrics, baseline_version=str(baseline.version) if baseline else None,
                             baseline_metrics=model_metrics_from_tags(baseline.tags or {}) if baseline else None,
                             metric="roc_auc", tolerance=0.02, new_owner=f"AML job {job_name}")
    step("evaluate_gate", t)
    if not decision.passed:
        raise SystemExit(f"gate closed for {job_name}: {decision.reason}")

    # register_model
    t = clock()
    if aml.find_model_by_tag(MODEL_NAME, "job_name", job_name) is not None:
        raise SystemExit(f"model {MODEL_NAME} already holds job {job_name}: the floor needs a new partition")
    scalar = {k: v for k, v in sorted(metrics.items()) if isinstance(v, (int, float)) and not isinstance(v, bool)}
    model = aml.register_model(
        name=MODEL_NAME, path=job_output_uri(job_name, "model"),
        tags={"partition": date, "data_fingerprint": fingerprint, "job_name": job_name, "dag_id": FLOOR_ID,
              "run_id": FLOOR_ID, "git_commit": commit,
              "metrics": json.dumps(scalar, sort_keys=True, separators=(",", ":")),
              "training_environment": environment},
        description=f"Trained by AML job {job_name} on partition {date}")
    version = str(model.version)
    aml.model_studio_url(MODEL_NAME, version)
    step("register_model", t)

    # build_image: connections checked, the tag looked up, the context built, the image smoke-tested
    t = clock()
    images = ContainerImageHook(docker_conn_id="docker_edge", registry_conn_id="acr_default")
    images.check_connections()
    repository = repository_name(MODEL_NAME)
    repository_ref = f"{images.registry_host}/{repository}"
    tags = image_tags(version, fingerprint)
    created = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    labels = model_labels(model_name=MODEL_NAME, model_version=version, data_fingerprint=fingerprint,
                          job_name=job_name, partition=date, git_commit=commit, created=created)
    if images.find_existing(repository, tags[0], labels) is not None:
        raise SystemExit(f"{repository_ref}:{tags[0]} exists already: the floor needs a new partition")
    context_dir = prepare_context(serving_dir=REPO / "include" / "serving", model_dir=model_dir,
                                  dest=workdir / "context", labels=image_labels(labels, base_image=base_image))
    local = f"{repository_ref}:{tags[0]}"
    built = images.build(context_dir=context_dir, image=local, base_image=base_image)
    for tag in tags[1:]:
        images.tag(built.image_id, repository_ref, tag)
    smoke = images.smoke_test(local)
    step("build_image", t)

    # push_image: every tag, the registry's digest verified, the reference written onto the model version
    t = clock()
    digests = {tag: images.push(repository_ref, tag) for tag in tags}
    digest = digests[tags[0]]
    if len(set(digests.values())) != 1:
        raise SystemExit(f"tags pushed with different digests: {digests}")
    for tag in tags:
        images.verify_digest(repository, tag, digest)
    image = f"{repository_ref}@{digest}"
    aml.update_model_tags(MODEL_NAME, version, {"image": image})
    step("push_image", t)

    # summary
    t = clock()
    print("FLOOR_SUMMARY " + json.dumps({"partition": date, "data_fingerprint": fingerprint, "aml_job": job_name,
                                         "model": f"{MODEL_NAME}:{version}", "image": image, "status": "success"},
                                        sort_keys=True), file=sys.stderr)
    step("summary", t)
    images.close()
    aml.close()
    return {"kind": "floor", "partition": date, "job": job_name, "model_version": version, "image": image,
            "job_polls": polls + 1, "log_lines": log_lines, "smoke_rows": smoke["rows"],
            "imports_s": imports_s, "steps_s": steps}


# --- measuring from the parent -----------------------------------------------------------------------

def run_child(*args: str, importtime: bool = False, timeout: float = 900) -> tuple[dict, float, str]:
    """Run this file as a child; (its JSON result, its wall time from spawn to exit, its stderr)."""
    argv = [sys.executable, *(["-X", "importtime"] if importtime else []), __file__, "--child", *args]
    env = {k: v for k, v in os.environ.items() if k != "AZUREML_CURRENT_CLOUD"}
    env["OVERHEAD_SPAWNED_AT"] = repr(time.time())
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=str(REPO), timeout=timeout)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"child {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                         f"{proc.stderr[-5000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall, proc.stderr


def interpreter_startup(repeats: int) -> dict:
    """Wall of a bare interpreter and of one that imports Airflow's task runner (medians)."""
    def wall(code: str) -> float:
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=str(REPO), capture_output=True)
        return time.monotonic() - started

    bare = [wall("pass") for _ in range(repeats)]
    runner = [wall("import airflow.sdk.execution_time.task_runner") for _ in range(repeats)]
    return {"python -c pass, s (median)": rounded(statistics.median(bare)),
            "import airflow.sdk.execution_time.task_runner, s (median)": rounded(statistics.median(runner))}


def parse_importtime(stderr: str) -> dict:
    """From `python -X importtime`: the modules the DAG file imported while it was parsed, by package
    (top-level imports only, cumulative microseconds, so nothing is counted twice)."""
    lines = stderr.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if MARK in line)
    except StopIteration:
        return {}
    by_package: dict[str, float] = {}
    top: list[tuple[float, str]] = []
    for line in lines[start + 1:]:
        if not line.startswith("import time:"):
            continue
        fields = line[len("import time:"):].split("|")
        if len(fields) != 3 or not fields[1].strip().isdigit():
            continue
        cumulative_us, name = fields[1], fields[2]
        if name[1:].startswith(" "):  # nested: already inside its parent's cumulative time
            continue
        name = name.strip()
        seconds = int(cumulative_us.strip()) / 1e6
        parts = name.split(".")
        package = parts[0] if parts[0] != "airflow" else ".".join(parts[:3])
        by_package[package] = by_package.get(package, 0.0) + seconds
        top.append((seconds, name))
    return {"by package, s": {k: rounded(v, 4) for k, v in sorted(by_package.items(), key=lambda kv: -kv[1])},
            "largest top-level imports, s": {name: rounded(s, 4) for s, name in sorted(top, reverse=True)[:8]}}


def measure_parse(repeats: int) -> tuple[list[dict], dict]:
    """Alternating parses of the two files as the stack's dag-processor does them, ours also without its
    preload; then one profiled parse of ours (Airflow's Param work) and one under -X importtime (plain)."""
    samples = []
    for i in range(repeats):
        order = [(DAG_FILE, "preloaded"), (EMPTY_FILE, "preloaded"), (DAG_FILE, "plain")]
        for path, mode in order if i % 2 == 0 else reversed(order):
            result, wall, _ = run_child("parse", str(path), mode)
            sample = {"kind": "parse", **result, "process_wall_s": rounded(wall)}
            samples.append(sample)
            print(json.dumps(sample), flush=True)
    for _ in range(2):  # the profile's figure is the smaller of two
        for path in (DAG_FILE, EMPTY_FILE):
            result, wall, _ = run_child("parse", str(path), "profile")
            samples.append({"kind": "parse", **result, "process_wall_s": rounded(wall)})
    _, _, stderr = run_child("parse", str(DAG_FILE), "plain", importtime=True)
    return samples, parse_importtime(stderr)


def parse_ratio(samples: list[dict]) -> tuple[float, dict]:
    def parse_times(name: str, mode: str) -> list[float]:
        return [s["parse_s"] for s in samples if s["file"] == name and s["mode"] == mode]

    ours, empty = parse_times(DAG_FILE.name, "preloaded"), parse_times(EMPTY_FILE.name, "preloaded")
    plain = parse_times(DAG_FILE.name, "plain")
    tasks = {s["file"]: s["tasks"] for s in samples}
    if len(set(tasks.values())) != 1:
        raise SystemExit(f"the parse reference must have as many tasks as {DAG_ID}: {tasks}")
    profiled = {name: [s for s in samples if s["file"] == name and s["mode"] == "profile"]
                for name in (DAG_FILE.name, EMPTY_FILE.name)}
    return max(ours) / min(empty), {
        f"{DAG_FILE.name} parse s (min, median, max)": [min(ours), statistics.median(ours), max(ours)],
        f"{EMPTY_FILE.name} parse s (min, median, max)": [min(empty), statistics.median(empty), max(empty)],
        f"{DAG_FILE.name} parse s without the dag-processor's package preload (min, median, max)":
            [min(plain), statistics.median(plain), max(plain)],
        "modules the DAG file imports while parsed, with / without the preload": [
            max(s["modules_imported"] for s in samples if s["file"] == DAG_FILE.name and s["mode"] == "preloaded"),
            max(s["modules_imported"] for s in samples if s["file"] == DAG_FILE.name and s["mode"] == "plain")],
        "SDK packages imported while parsing": sorted({m for s in samples for m in s["sdk_modules_imported"]}),
        "profiled parse (cProfile): wall s, of it Airflow's work on the DAG's Params s, per file (min)": {
            name: [min(s["profiled_wall_s"] for s in rows), min(s["params_cumulative_s"] for s in rows)]
            for name, rows in profiled.items()},
    }


def iso(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def new_dates(count: int) -> list[str]:
    """Dates whose partition was never written (nothing of theirs can be reused), seeded now."""
    from devstack.seed import list_partitions, seed_partition

    taken = set(list_partitions())
    rng = random.Random()
    dates: list[str] = []
    while len(dates) < count:
        day = dt.date(2030, 1, 1) + dt.timedelta(days=rng.randrange(365 * 60))
        if day in taken or day.isoformat() in dates:
            continue
        dates.append(day.isoformat())
    for day in dates:
        seed_partition(day)
    return dates


def run_dag(airflow, dag_id: str, chain: tuple[str, ...], run_id: str, partition_key: str | None) -> dict:
    airflow.trigger(dag_id, partition_key=partition_key, run_id=run_id)
    run = airflow.wait_run(dag_id, run_id, timeout=1200)
    tis = airflow.task_instances(dag_id, run_id)
    if run["state"] != "success" or any(tis[t]["state"] != "success" for t in chain):
        raise SystemExit(f"{dag_id} run {run_id} ended {run['state']}: "
                         f"{ {t: tis[t]['state'] for t in chain} }")
    starts = [iso(tis[t]["start_date"]) for t in chain]
    ends = [iso(tis[t]["end_date"]) for t in chain]
    gaps = [(starts[i + 1] - ends[i]).total_seconds() for i in range(len(chain) - 1)]
    return {
        "run_id": run_id,
        "wall_s": rounded((iso(run["end_date"]) - iso(run["queued_at"])).total_seconds()),
        "queued_to_first_task_s": rounded((starts[0] - iso(run["queued_at"])).total_seconds()),
        "last_task_to_run_end_s": rounded((iso(run["end_date"]) - ends[-1]).total_seconds()),
        "gaps_s": {f"{chain[i]}->{chain[i + 1]}": rounded(g) for i, g in enumerate(gaps)},
        "gaps_sum_s": rounded(sum(gaps)),
        "tasks_s": {t: rounded((e - s).total_seconds()) for t, s, e in zip(chain, starts, ends)},
    }


def start_airflow():
    from devstack import scale
    from devstack.airflow_local import LocalAirflow

    started = scale.up(redis=False)
    bundles = [
        {"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle", "kwargs": {}},
        {"name": "bench-dags", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
         "kwargs": {"path": str(BENCH_DAGS)}},
    ]
    airflow = LocalAirflow(name=AIRFLOW_NAME, port=AIRFLOW_PORT, sql_alchemy_conn=scale.database(DATABASE),
                           extra_env={"AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles)})
    return airflow, started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds of floor, DAG and no-op chain (>= 3)")
    parser.add_argument("--parse-repeats", type=int, default=5, help="fresh-process parses of each DAG file")
    parser.add_argument("--parse-only", action="store_true", help="only the parse-time part; writes nothing")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 3 and not args.parse_only:
        parser.error("--repeats: the floor and the DAG run at least 3 times each")
    if args.child:
        mode, *rest = args.child
        if mode == "parse":
            print(json.dumps(child_parse(rest[0], rest[1])))
            return 0
        load_stack_env()
        print(json.dumps(child_floor(rest[0]) if mode == "floor" else child_client(rest[0])))
        return 0

    parse_samples, parse_imports = measure_parse(args.parse_repeats)
    parse_worst, parse_details = parse_ratio(parse_samples)
    print(f"parse: worst ratio {parse_worst:.2f}", json.dumps(parse_details), json.dumps(parse_imports), flush=True)
    if args.parse_only:
        return 0

    load_stack_env()
    startup = interpreter_startup(3)
    clients = []
    for _ in range(2):
        for service in SERVICES:
            result, wall, _ = run_child("client", service)
            clients.append({"kind": "client", **result, "process_wall_s": rounded(wall)})
            print(json.dumps(clients[-1]), flush=True)

    dates = new_dates(2 * args.repeats)
    airflow, started = start_airflow()
    samples: list[dict] = [*parse_samples, *clients]
    try:
        airflow.reset()
        airflow.start()
        airflow.wait_dag_parsed(DAG_ID)
        airflow.wait_dag_parsed(NOOP_DAG_ID)
        tasks = [t["task_id"] for t in airflow.api("GET", f"/dags/{DAG_ID}/tasks")["tasks"]]
        noop_chain = tuple(f"noop_{i}" for i in range(len(CHAIN)))
        if sorted(tasks) != sorted(CHAIN):
            raise SystemExit(f"{DAG_ID} has tasks {tasks}, this benchmark expects {CHAIN}")
        stamp = int(time.time())
        # One unrecorded no-op run: the scheduler's and executor's first run pays their warm-up.
        run_dag(airflow, NOOP_DAG_ID, noop_chain, f"overhead__warmup__{stamp}", None)
        for i in range(args.repeats):
            floor_date, dag_date = dates[2 * i], dates[2 * i + 1]

            def floor() -> None:
                result, wall, _ = run_child("floor", floor_date, timeout=1200)
                samples.append({**result, "round": i, "wall_s": rounded(wall)})
                print(json.dumps(samples[-1]), flush=True)

            def dag() -> None:
                result = run_dag(airflow, DAG_ID, CHAIN, f"overhead__{dag_date}__{stamp}", f"{dag_date}T00:00:00")
                samples.append({"kind": "dag", "round": i, "partition": dag_date, **result})
                print(json.dumps(samples[-1]), flush=True)

            for fn in ((floor, dag) if i % 2 == 0 else (dag, floor)):
                fn()
            result = run_dag(airflow, NOOP_DAG_ID, noop_chain, f"overhead__noop__{i}__{stamp}", None)
            samples.append({"kind": "noop_chain", "round": i, **result})
            print(json.dumps(samples[-1]), flush=True)
    finally:
        airflow.stop()
        from devstack import scale

        scale.down(only=started)

    def of(kind: str) -> list[dict]:
        return [s for s in samples if s.get("kind") == kind]

    floors, dags, noops = of("floor"), of("dag"), of("noop_chain")
    wall_ratio = max(d["wall_s"] for d in dags) / min(f["wall_s"] for f in floors)
    gaps_ratio = max(d["gaps_sum_s"] for d in dags) / min(n["gaps_sum_s"] for n in noops)

    def median_of(rows: list[dict], field: str, key: str) -> float:
        return rounded(statistics.median(r[field][key] for r in rows))

    per_task = {t: {"DAG task s (median)": median_of(dags, "tasks_s", t),
                    "floor step s (median)": median_of(floors, "steps_s", t),
                    "difference s": rounded(median_of(dags, "tasks_s", t) - median_of(floors, "steps_s", t))}
                for t in CHAIN}
    details = {
        "DAG wall s (each round)": [d["wall_s"] for d in dags],
        "floor wall s (each round)": [f["wall_s"] for f in floors],
        "DAG / floor wall per round": [rounded(d["wall_s"] / f["wall_s"]) for d, f in zip(dags, floors)],
        "task gaps summed s, edge_training (each round)": [d["gaps_sum_s"] for d in dags],
        "task gaps summed s, no-op chain (each round)": [n["gaps_sum_s"] for n in noops],
        "gap per boundary s, edge_training (median)": {k: median_of(dags, "gaps_s", k) for k in dags[0]["gaps_s"]},
        "gap per boundary s, no-op chain (median)": {k: median_of(noops, "gaps_s", k) for k in noops[0]["gaps_s"]},
        "run queued -> first task start s, edge_training (median)":
            rounded(statistics.median(d["queued_to_first_task_s"] for d in dags)),
        "last task end -> run end s, edge_training (median)":
            rounded(statistics.median(d["last_task_to_run_end_s"] for d in dags)),
        "no-op task duration s (median over tasks and rounds)":
            rounded(statistics.median(v for n in noops for v in n["tasks_s"].values())),
        "per task: DAG task vs floor step": per_task,
        "floor: process start -> first step (interpreter and imports) s (median)":
            rounded(statistics.median(f["imports_s"] for f in floors)),
        "interpreter start-up": startup,
        "per service, fresh process: SDK import, client construction, first request s (median)": {
            service: {k: rounded(statistics.median(c[k] for c in clients if c["service"] == service))
                      for k in ("import_s", "construct_s", "first_request_s")}
            for service in SERVICES},
        **parse_details,
        "DAG file parse: imports while parsing (python -X importtime)": parse_imports,
    }
    document = write_result("overhead", [
        Check(f"{DAG_ID} run wall / floor script wall (slowest DAG run, fastest floor run)", wall_ratio,
              DAG_WALL_LIMIT, "x"),
        Check(f"summed gaps between {DAG_ID}'s tasks / those of a {len(CHAIN)}-task no-op chain "
              "(largest against smallest)", gaps_ratio, GAPS_LIMIT, "x"),
        Check(f"parse time of dags/{DAG_FILE.name} / a DAG of {len(CHAIN)} EmptyOperators "
              "(slowest against fastest)", parse_worst, PARSE_LIMIT, "x"),
    ], samples, details=details)
    return 0 if document["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
