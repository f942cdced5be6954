"""What every benchmark shares: the stack's settings, and one way to write its result file.

A result file (bench/results/<name>.json) holds only what one run measured: the targets it checked, the
measured value of each, whether it was met, the raw samples, the command that ran it, the machine and
the date. bench/report.py turns the files into bench/README.md.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"

for _path in (str(REPO / "plugins"), str(REPO)):
    if _path not in sys.path:
        sys.path.insert(0, _path)
os.environ.setdefault("AIRFLOW_HOME", str(REPO / ".devstack" / "airflow"))


def load_stack_env() -> dict[str, str]:
    """The running stack's variables (also put into os.environ, as the tests do); exits if it is down."""
    from devstack.util import STACK_ENV_FILE, export_stack_env, read_stack_env

    values = read_stack_env()
    if not values:
        raise SystemExit(f"{STACK_ENV_FILE} not found: run `make stack-up` first")
    export_stack_env(values)
    return values


@dataclass
class Check:
    """One target: ``measured`` compared with ``limit`` (``at_most`` or ``at_least``)."""

    target: str
    measured: float
    limit: float
    unit: str
    at_most: bool = True

    @property
    def ok(self) -> bool:
        return self.measured <= self.limit if self.at_most else self.measured >= self.limit


def machine() -> str:
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores, {mem_gib:.0f} GiB, "
            f"Python {platform.python_version()})")


def command() -> str:
    """How this run was started, as a person would retype it from the repository's root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_text = str(script.relative_to(REPO))
    except ValueError:
        script_text = str(script)
    return shlex.join([".venv/bin/python", script_text, *sys.argv[1:]])


def write_result(name: str, checks: list[Check], samples: Any, *, details: dict[str, Any] | None = None) -> dict:
    """Write bench/results/<name>.json and print it; returns the document."""
    document = {
        "name": name,
        "target": "; ".join(c.target for c in checks),
        "measured": {c.target: c.measured for c in checks},
        "unit": {c.target: c.unit for c in checks},
        "ok": all(c.ok for c in checks),
        "checks": [{**asdict(c), "ok": c.ok} for c in checks],
        "command": command(),
        "machine": machine(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "details": details or {},
        "samples": samples,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    for c in checks:
        print(f"{name}: {c.target}: measured {c.measured:.4g} {c.unit} -> {'ok' if c.ok else 'MISSED'}")
    print(f"{name}: wrote {path}")
    return document
