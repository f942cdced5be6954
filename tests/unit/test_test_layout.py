"""The suite is collected as one session (`make test` runs `pytest tests`), and pytest imports test files by
basename (the test folders are not packages): two test files of one name stop collection of the whole suite."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_files_share_a_basename():
    paths = defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        paths[path.name].append(str(path.relative_to(TESTS)))
    assert not {name: found for name, found in paths.items() if len(found) > 1}
