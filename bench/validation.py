"""validation: validate_partition on 2,000 and 20,000 blobs, as the operator runs it, against downloading.

On the devstack's Stack Hub (Azurite): partitions of N tiny data files are uploaded once under
``bench/validation/n=<N>/date=2026-11-10/`` and reused. Each measurement is a fresh Python process (so its
peak RSS is its own) that runs ``StackHubPartitionOperator.execute`` as the DAG does: listing, sampled
header reads, fingerprint, manifest upload. The floor it is compared with downloads every blob of the
partition with the same hook's client (8 threads). Both clocks start after the imports a DAG task
process starts with (its executor preloads them) and include the client's construction. Sizes
alternate, ``--repeats`` times each.

Also measured, to show where validation's time goes: the List Blobs pages of the 20,000 blobs alone, fetched
one after the other as the hook sends them (``stackhub_listing.fetch_page``, the next marker read from each)
and not parsed: the service's share, which validation cannot go below without listing in parallel (a
marker is opaque on Azure, so the hook cannot split a listing). Reported with the download against it.

Targets: peak RSS growth from 2,000 to 20,000 blobs <= 10 % (largest 20,000-blob peak over the smallest
2,000-blob one); validating 20,000 blobs >= 20 x faster than downloading them (slowest validation against
the fastest download). Writes bench/results/validation.json.

    .venv/bin/python bench/validation.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from results import Check, load_stack_env, write_result

SIZES = (2_000, 20_000)
COLUMNS = ["device_id", "timestamp", "temperature_c", "vibration_mm_s", "pressure_kpa", "rpm", "runtime_hours",
           "failure"]
DATE = "2026-11-10"


def prefix_template(count: int) -> str:
    return f"bench/validation/n={count}/date={{partition_date}}/"


def body(i: int) -> bytes:
    return f"{','.join(COLUMNS)}\ndev-{i},{DATE}T00:00:00,20.0,0.1,100.0,1000,{i},0\n".encode()


def ensure_partition(count: int) -> None:
    from edge_training.hooks.stackhub_blob import StackHubBlobHook

    container = StackHubBlobHook().container_client("training")
    prefix = prefix_template(count).format(partition_date=DATE)
    present = sum(1 for _ in container.list_blobs(name_starts_with=prefix + "part-", results_per_page=5000))
    if present == count and container.get_blob_client(prefix + "_SUCCESS").exists():
        return
    print(f"uploading {count} blobs under {prefix} (once)", flush=True)
    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(lambda i: container.upload_blob(f"{prefix}part-{i:05d}.csv", body(i), overwrite=True),
                      range(count)))
    container.upload_blob(prefix + "_SUCCESS", b"", overwrite=True)


def child(mode: str, count: int) -> dict:
    """One measurement in this (fresh) process: ``validate`` or ``download``. The clock starts once the
    modules a task process of the DAG starts with are imported (its executor preloads them:
    edge_training.preloading.TASK_PRELOAD_MODULES); the import time is recorded apart."""
    importing = time.monotonic()
    from edge_training.preloading import TASK_PRELOAD_MODULES, preload
    from edge_training.hooks.stackhub_blob import StackHubBlobHook
    from edge_training.operators.stackhub_blob import StackHubPartitionOperator

    preload(TASK_PRELOAD_MODULES)

    started = time.monotonic()
    if mode == "validate":
        summary = StackHubPartitionOperator(
            task_id="validate_partition", stackhub_conn_id="stackhub_blob", container="training",
            prefix=prefix_template(count), partition_key=DATE, expected_columns=COLUMNS,
        ).execute({})
        assert summary["file_count"] == count, summary
    elif mode == "list":
        from edge_training.hooks.stackhub_listing import MAX_PAGE_SIZE, fetch_page, next_marker

        container = StackHubBlobHook().container_client("training")
        prefix = prefix_template(count).format(partition_date=DATE)
        marker, pages = None, 0
        while True:
            page = fetch_page(container, prefix, MAX_PAGE_SIZE, marker)
            pages += 1
            if not (marker := next_marker(page)):
                break
        assert pages == count // MAX_PAGE_SIZE + 1, pages  # the last page holds _SUCCESS and the manifest
    else:
        container = StackHubBlobHook().container_client("training")
        prefix = prefix_template(count).format(partition_date=DATE)
        names = [b.name for b in container.list_blobs(name_starts_with=prefix + "part-", results_per_page=5000)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            sizes = list(pool.map(lambda n: len(container.download_blob(n).readall()), names))
        assert len(sizes) == count, len(sizes)
    return {"mode": mode, "blobs": count, "wall_s": round(time.monotonic() - started, 3),
            "import_s": round(started - importing, 3), "peak_rss_mib": round(peak_rss_kib() / 1024, 1)}


def peak_rss_kib() -> int:
    """This process's peak resident set (VmHWM). Not getrusage's ru_maxrss: on Linux that keeps the
    peak of the process image before exec, i.e. of the forked parent."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("VmHWM not in /proc/self/status")


def measure(mode: str, count: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, str(count)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} of {count} blobs failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    sample = json.loads(proc.stdout.strip().splitlines()[-1])
    print(sample, flush=True)
    return sample


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "BLOBS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    load_stack_env()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return 0
    for count in SIZES:
        ensure_partition(count)
    samples = []
    for _ in range(args.repeats):
        for count in SIZES:
            samples.append(measure("validate", count))
        samples.append(measure("download", SIZES[-1]))
        samples.append(measure("list", SIZES[-1]))

    def of(mode: str, count: int, key: str) -> list[float]:
        return [s[key] for s in samples if s["mode"] == mode and s["blobs"] == count]

    small, big = SIZES
    growth = (max(of("validate", big, "peak_rss_mib")) / min(of("validate", small, "peak_rss_mib")) - 1) * 100
    speedup = min(of("download", big, "wall_s")) / max(of("validate", big, "wall_s"))
    document = write_result("validation", [
        Check(f"peak RSS growth of validate_partition from {small:,} to {big:,} blobs (worst pair)", growth, 10.0, "%"),
        Check(f"downloading {big:,} blobs / validating them (fastest download, slowest validation)", speedup, 20.0,
              "x", at_most=False),
    ], samples, details={
        f"{mode} {n:,} blobs, wall s (min, max)": [min(of(mode, n, "wall_s")), max(of(mode, n, "wall_s"))]
        for mode, n in (("validate", small), ("validate", big), ("download", big))
    } | {
        f"List Blobs pages alone for {big:,} blobs, wall s (min, max)": [min(of("list", big, "wall_s")),
                                                                          max(of("list", big, "wall_s"))],
        f"validate {big:,} blobs / their List Blobs pages alone (slowest validation, fastest listing)":
            round(max(of("validate", big, "wall_s")) / min(of("list", big, "wall_s")), 2),
        f"downloading {big:,} blobs / their List Blobs pages alone (fastest download, slowest listing)":
            round(min(of("download", big, "wall_s")) / max(of("list", big, "wall_s")), 2),
    } | {"imports before the clock started, s (min, max)": [min(s["import_s"] for s in samples),
                                                            max(s["import_s"] for s in samples)]})
    return 0 if document["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
