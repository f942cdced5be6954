"""The fault battery's results as Markdown, from tests/faults/results.json only.

    python -m tests.faults.report            print the table
    python -m tests.faults.report --readme   rewrite the table between the markers in README.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).with_name("results.json")
README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN, END = "<!-- faults:begin -->", "<!-- faults:end -->"


def results_table(document: dict) -> list[str]:
    """One row a case, then the totals, then what produced them."""
    lines = ["| case | kind | expected | observed | passed |", "| --- | --- | --- | --- | --- |"]
    for c in document["cases"]:
        observed = c["observed"].replace("|", "/").replace("\n", " ")
        lines.append(f"| {c['name']} | {c['kind']} | {c['expected']} | {observed} | "
                     f"{'yes' if c['passed'] else '**NO**'} |")
    lines += ["", "| total (counted at the source) | count |", "| --- | --- |"]
    lines += [f"| {name} | {count} |" for name, count in document["totals"].items()]
    if document.get("counted"):
        c = document["counted"]
        lines += ["", f"Counted over {c['partitions']} partitions the battery trained: {c['jobs']} AML jobs, "
                      f"{c['model_versions']} model versions, {c['images']} images."]
    lines += ["", f"`{document['command']}` on {document['machine']}, {document['date']}."]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme", action="store_true", help="rewrite the block in README.md")
    args = parser.parse_args(argv)
    table = "\n".join(results_table(json.loads(RESULTS.read_text())))
    if not args.readme:
        print(table)
        return 0
    text = README.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    README.write_text(text[:start] + "\n" + table + "\n" + text[end:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
