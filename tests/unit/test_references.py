"""Files the code, docs and comments point a reader to must exist: a reference that leads nowhere
(a renamed test, a file outside the repository) sends the next person on a search."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCANNED = ["README.md", "Makefile", "docker-compose.yaml", "dags", "plugins", "include", "devstack", "bench", "tests"]
SUFFIXES = {".py", ".md", ".sh", ".yaml", ".yml", ".toml"}
# A path to a file in the repository's own folders, as prose and comments write it (a glob such as
# tests/integration/test_aml_double_*.py names a family of files). Blob names in the tests' storage
# (tests/stackhub/...) have no file suffix and are not references.
REFERENCE = re.compile(r"(?<![\w./-])((?:dags|plugins|include|devstack|bench|tests|docs)/[\w./*<>-]*"
                       r"(?:\.(?:py|md|sh|yaml|toml|json|png|txt)|Dockerfile))(?![\w-])")

# Paths that are data, not references: (file, path) -> why.
NOT_REFERENCES = {
    ("tests/unit/test_bench_report.py", "bench/made_up.py"): "the command line of a made-up benchmark",
    ("tests/unit/test_references.py", "bench/made_up.py"): "this table",
}


def project_files() -> list[Path]:
    """The repository's own files, tracked or new, never what .gitignore keeps out (installed
    node_modules, the venv, the stack's state)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *SCANNED],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout.splitlines()
    return [REPO / name for name in listed if (REPO / name).is_file()]


def scanned_files() -> list[Path]:
    return [p for p in project_files() if "__pycache__" not in p.parts
            and (p.suffix in SUFFIXES or p.name == "Dockerfile")]


def dangling_references() -> list[str]:
    found = []
    for path in scanned_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for match in REFERENCE.finditer(text):
            target = match.group(1)
            # A template (bench/results/<name>.json) or glob names a family: one of them must exist.
            pattern = re.sub(r"<[^>]+>", "*", target)
            exists = any(REPO.glob(pattern)) if "*" in pattern else (REPO / target).exists()
            if not exists and (str(path.relative_to(REPO)), target) not in NOT_REFERENCES:
                found.append(f"{path.relative_to(REPO)}: {target}")
    return found


def test_every_repository_path_mentioned_exists():
    assert dangling_references() == []


def test_the_scan_sees_references():
    """The scan finds the references it is meant to check (a regex that matched nothing would pass)."""
    scanned = {str(p.relative_to(REPO)) for p in scanned_files()}
    assert {"README.md", "dags/edge_training.py", "plugins/edge_training/operators/azureml.py"} <= scanned
    assert not any("node_modules" in name for name in scanned)
    readme = (REPO / "README.md").read_text()
    assert "bench/README.md" in [m.group(1) for m in REFERENCE.finditer(readme)]
