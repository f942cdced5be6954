"""Time `python -m devstack up` in its four situations; results go to bench/stack_up.md.

    .venv/bin/python bench/stack_up.py warm               # everything already running
    .venv/bin/python bench/stack_up.py cold               # down, then up (base image in dockerd)
    .venv/bin/python bench/stack_up.py cold-import        # down, base image removed, tarball cached
    .venv/bin/python bench/stack_up.py cold-debootstrap   # down, image and tarball removed

Every scenario ends with the stack up. The cold ones stop the shared stack for their duration.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = str(REPO / ".venv" / "bin" / "python")


def devstack(*args: str) -> tuple[float, str]:
    t0 = time.monotonic()
    proc = subprocess.run([PY, "-m", "devstack", *args], cwd=REPO, capture_output=True, text=True)
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"devstack {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return elapsed, proc.stdout


def remove_base_image() -> None:
    sys.path.insert(0, str(REPO))
    from devstack.services.base_image import IMAGE, IMAGE_REPO, content_version

    for ref in (IMAGE, f"{IMAGE_REPO}:{content_version()}"):
        subprocess.run(["docker", "rmi", ref], capture_output=True)


def main() -> int:
    scenario = sys.argv[1] if len(sys.argv) > 1 else "warm"
    if scenario not in ("warm", "cold", "cold-import", "cold-debootstrap"):
        sys.exit(__doc__)
    if scenario in ("cold-import", "cold-debootstrap"):
        remove_base_image()  # untags only when other images were built on it
    if scenario == "cold-debootstrap":
        for tarball in Path("/var/cache/edge-training").glob("edge-training-base-*.tar"):
            tarball.unlink()
    if scenario != "warm":
        down, _ = devstack("down")
        print(f"down: {down:.1f}s")
    up, out = devstack("up")
    per_service = [line for line in out.splitlines() if "healthy:" in line]
    print(f"{scenario} up: {up:.1f}s")
    for line in per_service:
        print("  " + line.split(";")[0] + "  " + line.rsplit("[", 1)[-1].rstrip("]"))
    status, _ = devstack("status")
    print(f"status: {status:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
