"""Fail unless the core (core/, the `smtpbee` package proper) has 100% of its lines
and at least 95% of its branches covered. Reads the .coverage file pytest-cov wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

LINE_GOAL = 100.0
BRANCH_GOAL = 95.0


def main() -> int:
    report = Path(".coverage-core.json")
    subprocess.run(["coverage", "json", "-q", "--include=core/*", "-o", str(report)], check=True)
    files = json.loads(report.read_text())["files"]
    report.unlink()
    statements = sum(f["summary"]["num_statements"] for f in files.values())
    missed = sum(f["summary"]["missing_lines"] for f in files.values())
    branches = sum(f["summary"]["num_branches"] for f in files.values())
    partial = sum(f["summary"]["missing_branches"] for f in files.values())
    lines_pct = 100.0 * (statements - missed) / statements
    branch_pct = 100.0 * (branches - partial) / branches if branches else 100.0
    print(f"core: {len(files)} files, lines {lines_pct:.2f}% ({missed} missed of {statements}),")
    print(f"      branches {branch_pct:.2f}% ({partial} missed of {branches})")
    for name, data in sorted(files.items()):
        if data["missing_lines"] or data["missing_branches"]:
            print(f"  {name}: lines {data['missing_lines']} branches {data['missing_branches']}")
    if lines_pct < LINE_GOAL or branch_pct < BRANCH_GOAL:
        print(f"FAIL: the core needs {LINE_GOAL}% lines and {BRANCH_GOAL}% branches")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
