"""bench/README.md holds only what the result files say; a missed target reads as missed."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_checks_compare_in_the_stated_direction():
    results = load("results")
    assert results.Check("t", 5.0, 5.0, "s").ok
    assert not results.Check("t", 5.01, 5.0, "s").ok
    assert results.Check("t", 20.0, 20.0, "x", at_most=False).ok
    assert not results.Check("t", 19.9, 20.0, "x", at_most=False).ok


def test_result_file_and_report_carry_the_measured_values(tmp_path, monkeypatch):
    results, report = load("results"), load("report")
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(sys, "argv", [str(BENCH / "made_up.py"), "--runs", "2"])
    checks = [results.Check("overhead, worst of 2", 1.234, 5.0, "s"),
              results.Check("speed-up", 12.5, 20.0, "x", at_most=False)]
    document = results.write_result("example", checks, [{"run": 1}, {"run": 2}], details={"median": 1.1})
    stored = json.loads((tmp_path / "example.json").read_text())
    assert stored == json.loads(json.dumps(document, default=str))
    assert stored["ok"] is False and [c["ok"] for c in stored["checks"]] == [True, False]
    assert stored["command"] == ".venv/bin/python bench/made_up.py --runs 2"
    assert stored["samples"] == [{"run": 1}, {"run": 2}]

    text = report.render([stored])
    rows = [line for line in text.splitlines() if line.startswith("| example |")]
    assert len(rows) == 2
    assert "1.23 s | yes" in rows[0] and "≤ 5 s" in rows[0]
    assert "12.5 x | **NO**" in rows[1] and "≥ 20 x" in rows[1]
    assert "- median: 1.1" in text


def test_the_project_readme_gets_the_same_table_between_its_markers(tmp_path, monkeypatch):
    report = load("report")
    results_dir, bench_readme, readme = tmp_path / "results", tmp_path / "bench.md", tmp_path / "README.md"
    results_dir.mkdir()
    document = {"name": "x", "ok": True, "command": "python made-up-benchmark", "machine": "m", "date": "d",
                "checks": [{"target": "t", "measured": 1.0, "limit": 2.0, "unit": "s", "at_most": True, "ok": True}]}
    (results_dir / "x.json").write_text(json.dumps(document))
    readme.write_text(f"intro\n{report.BEGIN}\nstale\n{report.END}\nafter\n")
    monkeypatch.setattr(report, "RESULTS_DIR", results_dir)
    monkeypatch.setattr(report, "README", bench_readme)
    monkeypatch.setattr(report, "PROJECT_README", readme)
    assert report.main() == 0
    text = readme.read_text()
    assert "stale" not in text and text.startswith("intro\n") and text.endswith(f"{report.END}\nafter\n")
    assert "| x | t (≤ 2 s) | 1 s | yes | `python made-up-benchmark` | m, d |" in text
    assert text.count("| x |") == bench_readme.read_text().count("| x |") == 1
