"""Facts about the deployed project itself, for lineage tags on jobs, models and images."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit the running code came from.

    ``EDGE_TRAINING_GIT_COMMIT`` wins (set it in images built without .git); otherwise ask git in the
    project checkout. "unknown" when neither is available, so lineage says so instead of guessing.
    """
    pinned = os.environ.get("EDGE_TRAINING_GIT_COMMIT", "").strip()
    if pinned:
        return pinned
    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = out.stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()
    return f"{commit}-dirty" if dirty else commit
